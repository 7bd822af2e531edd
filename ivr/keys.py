"""Envelope encryption for what must never lie in clear: callers' numbers, voices and words.

Three layers, so that erased means erased on disk too:
- Each case's data is sealed with its own data key (AES-256-GCM, from `cryptography`).
- A data key is stored (in the key store, KEYSTORE_URL) only wrapped by the current *key
  epoch*: a key-encryption key that lives in a small file outside any database
  (KEY_EPOCH_DIR), never in a table.
- An epoch file holds its key sealed under a master key from IVR_DATA_KEYS, so the folder
  alone opens nothing. The first master key seals, every listed key opens, so master keys
  rotate without downtime: put a new key first, run `ivr keys rotate`, then drop the old one.

Destroying data keys (a purge) deletes them, then retires the epoch: every live data key is
re-wrapped under a new epoch and the old epoch file is overwritten and unlinked. Whatever a
database still holds of the destroyed keys (a WAL, dead tuples, free pages, statistics, a
backup) was wrapped under an epoch that no longer exists, so not even the master keys open it.

Every sealed value is bound to where it belongs (`case:17:transcript`) as associated data,
so a ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
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


class EpochRetired(CryptoError):
    """A key epoch's file is gone: the epoch was retired (re-read the key; it has a new one)."""


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
        """Seal a key under the first master key (key epochs; data keys of old installs)."""
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


EPOCH_ID = re.compile(r"^e[0-9]{8}-[0-9a-f]{16}\Z")


def new_epoch_id() -> str:
    return "e" + datetime.now(UTC).strftime("%Y%m%d") + "-" + secrets.token_hex(8)


class KeyEpochs:
    """Key epochs: key-encryption keys in files of their own (`DIR/<id>.key`), each sealed
    under a master key, outside any database so that database history cannot hold them.

    Files are written to a temporary name, fsynced, renamed and the folder fsynced, so an
    epoch that a committed data key names is on disk. Retiring one overwrites it with random
    bytes, fsyncs, unlinks it and fsyncs the folder. Opened epochs are kept in memory by id,
    but every use checks that the file is still there: a missing file means retired.
    """

    def __init__(self, folder: Path, keyring: Keyring) -> None:
        self.folder = folder
        self.keyring = keyring
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def path(self, epoch_id: str) -> Path:
        if not EPOCH_ID.match(epoch_id):
            raise CryptoError("not a key epoch id")
        return self.folder / f"{epoch_id}.key"

    def ids(self) -> list[str]:
        """The epochs whose files are present."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.key") if EPOCH_ID.match(p.stem))

    def create(self, epoch_id: str) -> str:
        """A new epoch, durably on disk before any data key is wrapped under it."""
        key = AESGCM.generate_key(bit_length=256)
        self._write(epoch_id, key)
        with self._lock:
            self._keys[epoch_id] = key
        return epoch_id

    def key(self, epoch_id: str) -> bytes:
        path = self.path(epoch_id)
        if not path.exists():
            with self._lock:
                self._keys.pop(epoch_id, None)
            raise EpochRetired(f"key epoch {epoch_id} was retired: its data keys are gone")
        with self._lock:
            found = self._keys.get(epoch_id)
        if found is None:
            try:
                found = self._read(path, epoch_id)[0]
            except (FileNotFoundError, CryptoError):
                if path.exists():
                    raise
                # retired while we read it (its bytes were being overwritten)
                raise EpochRetired(f"key epoch {epoch_id} was retired: its data keys are gone") from None
            with self._lock:
                self._keys[epoch_id] = found
        return found

    def wrap(self, epoch_id: str, data_key: bytes) -> bytes:
        return seal(self.key(epoch_id), data_key, f"data-key:epoch:{epoch_id}")

    def unwrap(self, epoch_id: str, wrapped: bytes) -> bytes:
        return unseal(self.key(epoch_id), wrapped, f"data-key:epoch:{epoch_id}")

    def reseal(self) -> int:
        """Seal every epoch file not sealed under the first master key again under it."""
        count = 0
        for epoch_id in self.ids():
            path = self.path(epoch_id)
            try:
                key, master_id = self._read(path, epoch_id)
            except FileNotFoundError:
                continue  # retired meanwhile
            if master_id != self.keyring.current:
                self._write(epoch_id, key)
                count += 1
        return count

    def retire(self, epoch_id: str) -> None:
        """Destroy an epoch file: random bytes over it, fsync, unlink, fsync the folder."""
        with self._lock:
            self._keys.pop(epoch_id, None)
        path = self.path(epoch_id)
        # Renamed away first, so no process reads it half overwritten: the name is gone at once.
        doomed = self.folder / f".{epoch_id}.{secrets.token_hex(4)}.retired"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        fd = os.open(doomed, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            os.pwrite(fd, os.urandom(max(size, 1)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        doomed.unlink()
        self._sync_folder()

    def sweep(self) -> None:
        """Destroy what a crash left: epoch files being retired, temporary ones being written.
        (Only while no other rotation runs: Vault.shred calls it holding the lock.)"""
        if not self.folder.is_dir():
            return
        for stray in self.folder.glob(".*"):
            if stray.suffix in (".retired", ".tmp") and stray.is_file():
                with open(stray, "r+b") as f:
                    f.write(os.urandom(max(stray.stat().st_size, 1)))
                    f.flush()
                    os.fsync(f.fileno())
                stray.unlink(missing_ok=True)

    def _read(self, path: Path, epoch_id: str) -> tuple[bytes, str]:
        try:
            doc = json.loads(path.read_text(encoding="ascii"))
            master_id, sealed = str(doc["master"]), base64.b64decode(doc["key"])
            if doc["epoch"] != epoch_id:
                raise ValueError
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CryptoError(f"key epoch file {path.name} is damaged") from exc
        master = next((k for k in self.keyring.masters if k.id == master_id), None)
        if master is None:
            raise CryptoError(f"key epoch {epoch_id} is sealed under master key {master_id!r}, "
                              "which is not in IVR_DATA_KEYS")
        return unseal(master.key, sealed, f"key-epoch:{epoch_id}:{master_id}"), master_id

    def _write(self, epoch_id: str, key: bytes) -> None:
        master = self.keyring.masters[0]
        doc = {"epoch": epoch_id, "master": master.id,
               "key": base64.b64encode(seal(master.key, key, f"key-epoch:{epoch_id}:{master.id}")).decode()}
        write_durably(self.path(epoch_id), json.dumps(doc).encode("ascii"))

    def _sync_folder(self) -> None:
        sync_folder(self.folder)


def write_durably(path: Path, data: bytes) -> None:
    """A file that, once it exists, is whole and survives a crash: written to a temporary name
    in the same folder (made 0700), fsync'd, renamed, the folder fsync'd (key epochs, the
    spool)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename or unlink in it is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
