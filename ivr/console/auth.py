"""Who may use the console: passwords (argon2), a second factor (TOTP), lock-out, sessions.

Safe even if a password leaks: nobody gets in without the code from the operator's phone
app, and a code works once. Repeated failures lock the account for LOCK_MINUTES, counted in
Redis when it is up (shared by every web process) and in the database when it is not, and
each client address is rate-limited too. A session ends after CONSOLE_IDLE_MINUTES without
a request, after MAX_SESSION in any case, and at once for every device when the operator's
`session_epoch` moves (password set, sign out everywhere, account disabled).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import qrcode
import qrcode.image.svg
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from ivr.storage import AuditEntry, Database, Operator, Vault, utcnow

log = logging.getLogger(__name__)

MAX_FAILURES = 5  # wrong passwords or codes in a row before the account locks
LOCK_MINUTES = 15
PER_ADDRESS = 30  # sign-in attempts per client address per LOCK_MINUTES
MAX_SESSION = timedelta(hours=12)
MIN_PASSWORD = 12
ROLES = ("operator", "supervisor", "admin")

_hasher = PasswordHasher()  # argon2id with the library's current defaults
# Checked when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY = _hasher.hash("no such operator: this hash is never matched")


class AuthError(Exception):
    """A sign-in that did not work, said the same way whatever was wrong (no user probing)."""


@dataclass(frozen=True, slots=True)
class User:
    """The operator behind a console session."""

    id: int
    name: str
    role: str
    regions: frozenset[str]
    locale: str

    @property
    def supervisor(self) -> bool:
        return self.role in ("supervisor", "admin")

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, region: str | None) -> bool:
        """An operator sees the cases of their regions; supervisors and admins see all."""
        return self.supervisor or (region or "") in self.regions

    @property
    def actor(self) -> str:
        return f"operator:{self.id}"


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def set_password(db: Database, operator_id: int, password: str, actor: str = "admin") -> None:
    """Set a password, and end every session of that operator (a new epoch)."""
    hashed = hash_password(password)
    with db.session() as s:
        op = s.get(Operator, operator_id)
        if op is None:
            raise AuthError(f"no operator #{operator_id}")
        op.password_hash, op.failed_logins, op.locked_until = hashed, 0, None
        op.session_epoch += 1
        s.add(AuditEntry(actor=actor, action="password-set", detail=f"operator {operator_id}"))


def reset_second_factor(db: Database, operator_id: int, actor: str = "admin") -> None:
    """A lost phone: the operator enrolls a new authenticator at the next sign-in."""
    with db.session() as s:
        op = s.get(Operator, operator_id)
        if op is None:
            raise AuthError(f"no operator #{operator_id}")
        op.totp_secret, op.totp_enrolled_at, op.totp_last_step = None, None, None
        op.session_epoch += 1
        s.add(AuditEntry(actor=actor, action="totp-reset", detail=f"operator {operator_id}"))


class Guard:
    """Counts failures per account and per client address; Redis first, the database after."""

    def __init__(self, db: Database, redis_url: str, namespace: str = "ivr") -> None:
        self.db, self.namespace = db, namespace  # REDIS_NAMESPACE: one install's counts
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=0.5)
        self._down_until = 0.0

    def _r(self) -> redis.Redis | None:
        return None if time.monotonic() < self._down_until else self.redis

    def _redis_failed(self) -> None:
        self._down_until = time.monotonic() + 5.0

    def _key(self, kind: str, value: str) -> str:
        # Names and addresses are hashed: Redis holds no operator name or client address.
        return f"{self.namespace}:console:{kind}:" + hashlib.sha256(value.encode()).hexdigest()[:32]

    def address_blocked(self, address: str) -> bool:
        r = self._r()
        if r is None:
            return False  # per-account lock-out in the database still holds
        try:
            key = self._key("addr", address)
            count = int(r.incr(key))
            if count == 1:
                r.expire(key, LOCK_MINUTES * 60)
            return count > PER_ADDRESS
        except redis.RedisError:
            self._redis_failed()
            return False

    def locked(self, op: Operator, now: datetime) -> bool:
        r = self._r()
        if r is not None:
            try:
                if r.exists(self._key("lock", str(op.id))):
                    return True
            except redis.RedisError:
                self._redis_failed()
        return op.locked_until is not None and op.locked_until > now

    def failed(self, op_id: int, now: datetime) -> None:
        """One more failure; the MAX_FAILURES-th locks the account, in Redis and the database."""
        locked = False
        with self.db.session() as s:
            op = s.get(Operator, op_id)
            if op is None:
                return
            op.failed_logins += 1
            if op.failed_logins >= MAX_FAILURES:
                op.locked_until, op.failed_logins, locked = now + timedelta(minutes=LOCK_MINUTES), 0, True
                s.add(AuditEntry(actor=f"operator:{op_id}", action="locked-out",
                                 detail=f"{MAX_FAILURES} failed sign-ins"))
        r = self._r()
        if locked and r is not None:
            try:
                r.set(self._key("lock", str(op_id)), "1", ex=LOCK_MINUTES * 60)
            except redis.RedisError:
                self._redis_failed()
        if locked:
            log.warning("console account %s locked for %s minutes after %s failed sign-ins",
                        op_id, LOCK_MINUTES, MAX_FAILURES)

    def succeeded(self, op_id: int) -> None:
        with self.db.session() as s:
            op = s.get(Operator, op_id)
            if op is not None:
                op.failed_logins = 0


def check_password(db: Database, guard: Guard, name: str, password: str, address: str,
                   now: datetime | None = None) -> int:
    """The operator id for a right name and password; AuthError otherwise (always alike)."""
    now = now or utcnow()
    if guard.address_blocked(address):
        raise AuthError("too many attempts from here: wait a few minutes")
    with db.session() as s:
        op = s.scalars(select(Operator).where(Operator.name == name)).first()
    if op is None or op.password_hash is None or not op.active:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY, password)
        raise AuthError("wrong name or password")
    if guard.locked(op, now):
        raise AuthError(f"this account is locked for {LOCK_MINUTES} minutes after failed attempts")
    try:
        _hasher.verify(op.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        guard.failed(op.id, now)
        raise AuthError("wrong name or password") from None
    return op.id


def check_code(db: Database, vault: Vault, guard: Guard, op_id: int, code: str,
               now: datetime | None = None, *, enrolling_secret: str | None = None) -> None:
    """A six-digit TOTP code, good once (its time step is remembered); AuthError otherwise."""
    now = now or utcnow()
    with db.session() as s:
        op = s.get(Operator, op_id)
        if op is None or not op.active:
            raise AuthError("wrong code")
        if guard.locked(op, now):
            raise AuthError(f"this account is locked for {LOCK_MINUTES} minutes after failed attempts")
        secret = enrolling_secret or vault.open_operator_secret(op)
        last = op.totp_last_step
    totp = pyotp.TOTP(secret or pyotp.random_base32())
    code = code.strip().replace(" ", "")
    step = int(now.timestamp()) // totp.interval
    matched = next((st for st in (step, step - 1, step + 1)  # a phone's clock may be 30 s off
                    if code.isdigit() and totp.at(st * totp.interval) == code), None)
    if secret is None or matched is None or (last is not None and matched <= last):
        guard.failed(op_id, now)
        raise AuthError("wrong code")
    with db.session() as s:
        op = s.get(Operator, op_id)
        assert op is not None
        op.totp_last_step, op.failed_logins = matched, 0
        if enrolling_secret is not None:
            op.totp_secret = vault.seal_operator_secret(op, enrolling_secret)
            op.totp_enrolled_at = now
            s.add(AuditEntry(actor=f"operator:{op_id}", action="totp-enrolled"))


def new_secret() -> str:
    return pyotp.random_base32()


def enrollment_uri(secret: str, name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="Hotline console")


def qr_svg(uri: str) -> str:
    """The enrollment QR code as inline SVG: no image request, no script, nothing cached."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out)
    svg = out.getvalue().decode()
    return svg[svg.index("<svg"):]  # without the XML declaration: it sits inside the page


def load_user(db: Database, op_id: int, epoch: int) -> User | None:
    """The session's operator, if still active, enrolled and on the same session epoch."""
    with db.session() as s:
        op = s.get(Operator, op_id)
        if op is None or not op.active or op.session_epoch != epoch or op.totp_enrolled_at is None:
            return None
        return User(op.id, op.name, op.role, frozenset(op.regions.split(",")), op.locale)
