"""Envelope encryption for what must never lie in clear: callers' numbers, voices and words.

Each case's data is sealed with its own data key (AES-256-GCM, from `cryptography`); a data
key is stored only wrapped by a master key from IVR_DATA_KEYS. The first master key wraps,
every listed key unwraps, so master keys rotate without downtime: put a new key first,
run `ivr keys rotate`, then drop the old one. Destroying a case's data key makes its data
unreadable everywhere, database backups included ("crypto-shredding").

Every sealed value is bound to where it belongs (`case:17:transcript`) as associated data,
so a ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ivr.errors import ConfigError, IvrError

log = logging.getLogger(__name__)
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
NONCE = 12


class CryptoError(IvrError):
    """A value cannot be decrypted: its key was destroyed, or its master key is not configured."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: str
    key: bytes

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey({self.id!r})"


def parse_master_keys(spec: str) -> list[MasterKey]:
    """IVR_DATA_KEYS: `id:base64key,id:base64key`, newest (the one that wraps) first."""
    keys: list[MasterKey] = []
    for n, item in enumerate(x.strip() for x in spec.split(",") if x.strip()):
        key_id, sep, b64 = item.partition(":")
        if not sep or not KEY_ID.match(key_id):
            raise ConfigError(f"IVR_DATA_KEYS entry {n + 1} is not `id:base64key` (make one with "
                              "`ivr keys new`)")
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(f"IVR_DATA_KEYS key {key_id!r} is not 32 bytes of base64 "
                              "(make one with `ivr keys new`)")
        if any(k.id == key_id for k in keys):
            raise ConfigError(f"IVR_DATA_KEYS names key {key_id!r} twice")
        keys.append(MasterKey(key_id, raw))
    return keys


def new_master_key() -> str:
    """A fresh master key entry for IVR_DATA_KEYS."""
    key_id = "k" + datetime.now(UTC).strftime("%Y%m%d") + "-" + secrets.token_hex(2)
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"


def instance_secret(instance_dir: Path, name: str, make: Callable[[], str], warning: str) -> str:
    """A development secret kept under instance/, made once, race-free (never for production)."""
    path = instance_dir / name
    if not path.exists():
        instance_dir.mkdir(parents=True, exist_ok=True)
        tmp = instance_dir / f".{name}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
        try:
            os.link(tmp, path)  # atomic and never overwrites: a racing process keeps the first
            made = True
        except FileExistsError:
            made = False
        finally:
            tmp.unlink()
        if made:
            log.warning("made %s in %s: %s", name, path, warning)
    return path.read_text().strip()


def development_keys(instance_dir: Path) -> list[MasterKey]:
    """The development master key under instance/, made on first use (never for production)."""
    return parse_master_keys(instance_secret(
        instance_dir, "data-keys", new_master_key,
        "a development data key; set IVR_DATA_KEYS in production, and keep the key safe "
        "(without it the data cannot be read)"))


class Keyring:
    """Master keys in memory: wraps new data keys with the first, unwraps with any."""

    def __init__(self, masters: list[MasterKey]) -> None:
        if not masters:
            raise ConfigError("IVR_DATA_KEYS is empty: make a key with `ivr keys new`")
        self.masters = masters
        self._by_id = {k.id: k for k in masters}

    @property
    def current(self) -> str:
        return self.masters[0].id

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        master = self.masters[0]
        return seal(master.key, data_key, f"data-key:{master.id}"), master.id

    def unwrap(self, wrapped: bytes, master_id: str) -> bytes:
        master = self._by_id.get(master_id)
        if master is None:
            raise CryptoError(f"master key {master_id!r} is not in IVR_DATA_KEYS")
        return unseal(master.key, wrapped, f"data-key:{master_id}")

    def derived(self, purpose: str) -> list[tuple[str, bytes]]:
        """(master id, key) for a purpose outside the key store (the spool), newest first:
        HKDF-SHA256 of each master key, so it needs no database and rotates with them."""
        return [(m.id, HKDF(SHA256(), 32, None, f"ivr:{purpose}".encode()).derive(m.key))
                for m in self.masters]

    def new_data_key(self) -> tuple[bytes, bytes, str]:
        """(plain key, wrapped key, master id) for a new case."""
        plain = AESGCM.generate_key(bit_length=256)
        wrapped, master_id = self.wrap(plain)
        return plain, wrapped, master_id


def seal(key: bytes, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode())


def unseal(key: bytes, sealed: bytes, context: str) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], context.encode())
    except (InvalidTag, ValueError) as exc:
        raise CryptoError(f"cannot decrypt {context}: wrong key or altered data") from exc


def number_hash(hash_key: bytes, number: str) -> str:
    """Recognises a repeat caller without keeping the number: HMAC-SHA256 under a secret key."""
    return hmac.new(hash_key, number.encode(), hashlib.sha256).hexdigest()
