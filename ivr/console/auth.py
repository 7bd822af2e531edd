"""Who may use the console: passwords (argon2), a second factor (TOTP), throttling, sessions.

Safe even if a password leaks: nobody gets in without the code from the operator's phone
app, and a code works once, even when two requests race for it. Failed sign-ins are
throttled, never locked (OWASP ASVS 4.0 §2.2.1: no lock-out an outsider can trigger): they
are counted per account *and client*, per client, and per account over every client, in
Redis when it is up (shared by every web process) and in the database when it is not. Past
FREE_TRIES failures for one account from one client, that client waits 2^n seconds (at most
MAX_WAIT) before its next try is even checked; an operator signing in from elsewhere is not
slowed. An account under attack from many clients only lowers the free tries of clients
that themselves failed on it. A wrong name, a wrong password and a disabled account cost one
argon2 verification each and read alike.

Sessions live on the server (`console_sessions`): the cookie carries a random token whose
hash names the row, so signing out ends the session for every copy of the cookie; setting a
password, resetting the second factor and disabling end every session of the operator (the
stage between password and code too). A session ends after CONSOLE_IDLE_MINUTES without a
request and after MAX_SESSION in any case.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import qrcode
import qrcode.image.svg
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case as case_when
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.keys import CryptoError, seal, unseal
from ivr.operators import end_sessions
from ivr.reasons import said
from ivr.storage import AuditEntry, ConsoleSession, Database, Operator, SignInFailures, Vault, utcnow

log = logging.getLogger(__name__)

FREE_TRIES = 5  # failures of one account from one client before each try must wait
FREE_TRIES_UNDER_ATTACK = 2  # the same, while the account fails from everywhere
ATTACK_FAILURES = 50  # failures of one account (all clients) in a window: "under attack"
CLIENT_FREE_TRIES = 30  # failures from one client (all names) before each try must wait
MAX_WAIT = 300  # seconds: the longest wait between two tries
WINDOW_MINUTES = 15  # failures are forgotten this long after the last one
PENDING_MINUTES = 5  # between the password and the code
MAX_SESSION = timedelta(hours=12)
MIN_PASSWORD = 12
ROLES = ("operator", "supervisor", "admin")

_hasher = PasswordHasher()  # argon2id with the library's current defaults
# Checked when the name is unknown (or the account disabled), so that every wrong answer
# costs one verification with the same parameters.
_DUMMY = _hasher.hash("no such operator: this hash is never matched")


class AuthError(Exception):
    """A sign-in that did not work, said the same way whatever was wrong (no user probing)."""


class Throttled(AuthError):
    """Too many failures from this client for this name: the try was not checked."""

    def __init__(self, seconds: int) -> None:
        super().__init__("too many failed attempts: wait and try again")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class User:
    """The operator behind a console session."""

    id: int
    name: str
    role: str
    regions: frozenset[str]
    locale: str
    timezone: str = ""  # theirs (`ivr operators`); empty: the hotline's (HOTLINE_TIMEZONE)

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
    """Set a password, and end every session of that operator (a new epoch, rows ended)."""
    hashed = hash_password(password)
    with db.session() as s:
        op = s.get(Operator, operator_id)
        if op is None:
            raise AuthError(f"no operator #{operator_id}")
        op.password_hash = hashed
        op.session_epoch += 1
        end_sessions(s, operator_id)
        s.add(AuditEntry(actor=actor, action="password-set",
                         **said("operator", operator=operator_id).entry()))


def reset_second_factor(db: Database, operator_id: int, actor: str = "admin") -> None:
    """A lost phone: the operator enrolls a new authenticator at the next sign-in."""
    with db.session() as s:
        op = s.get(Operator, operator_id)
        if op is None:
            raise AuthError(f"no operator #{operator_id}")
        op.totp_secret, op.totp_enrolled_at, op.totp_last_step = None, None, None
        op.session_epoch += 1
        end_sessions(s, operator_id)
        s.add(AuditEntry(actor=actor, action="totp-reset",
                         **said("operator", operator=operator_id).entry()))


# --- throttling ----------------------------------------------------------------------------------


def wait_after(failures: int, free: int) -> int:
    """Seconds a client must leave after its last failure: none for the first `free`, then
    1, 2, 4, … up to MAX_WAIT."""
    if failures < free:
        return 0
    return min(1 << min(failures - free, 16), MAX_WAIT)


class Guard:
    """Counts sign-in failures; Redis first, the database (`console_failures`) when it is down.

    Three counts per failure: (account, client), client, account. Each count is forgotten
    WINDOW_MINUTES after its last failure. Keys are keyed hashes (HMAC with the console's
    secret key): Redis and the database hold no operator name or client address.
    """

    def __init__(self, db: Database, redis_url: str, secret: str | bytes = b"",
                 namespace: str = "ivr") -> None:
        self.db, self.namespace = db, namespace  # REDIS_NAMESPACE: one install's counts
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=0.5)
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._down_until = 0.0

    def _r(self) -> redis.Redis | None:
        return None if time.monotonic() < self._down_until else self.redis

    def _redis_failed(self) -> None:
        self._down_until = time.monotonic() + 5.0

    def _key(self, kind: str, value: str) -> str:
        digest = hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}:{digest[:48]}"

    def _keys(self, name: str, client: str) -> tuple[str, str, str]:
        return (self._key("pair", f"{name}\0{client}"), self._key("client", client),
                self._key("account", name))

    def _read(self, keys: tuple[str, ...], now: datetime) -> list[tuple[int, float]]:
        """(failures, last failure as a timestamp) for each key."""
        r = self._r()
        if r is not None:
            try:
                pipe = r.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(f"{self.namespace}:console:fail:{key}", "n", "t")
                return [(int(n or 0), float(t or 0)) for n, t in pipe.execute()]
            except redis.RedisError:
                self._redis_failed()
        cutoff = now - timedelta(minutes=WINDOW_MINUTES)
        with self.db.session() as s:
            rows = {row.key: row for row in s.scalars(select(SignInFailures).where(
                SignInFailures.key.in_(keys), SignInFailures.last_at > cutoff))}
        return [(rows[k].failures, rows[k].last_at.timestamp()) if k in rows else (0, 0.0) for k in keys]

    def wait(self, name: str, client: str, now: datetime) -> int:
        """Seconds this client must still wait before a try at `name` is checked (0: go)."""
        (pair, pair_at), (by_client, client_at), (account, _at) = self._read(self._keys(name, client), now)
        free = FREE_TRIES_UNDER_ATTACK if account >= ATTACK_FAILURES else FREE_TRIES
        at = now.timestamp()
        left = max(pair_at + wait_after(pair, free) - at if pair else 0.0,
                   client_at + wait_after(by_client, CLIENT_FREE_TRIES) - at if by_client else 0.0)
        return max(0, int(left + 0.999))

    def failed(self, name: str, client: str, now: datetime) -> int:
        """Count one failure; returns the account's failures over every client."""
        keys = self._keys(name, client)
        r = self._r()
        if r is not None:
            try:
                pipe = r.pipeline(transaction=False)
                for key in keys:
                    full = f"{self.namespace}:console:fail:{key}"
                    pipe.hincrby(full, "n", 1)
                    pipe.hset(full, "t", str(now.timestamp()))
                    pipe.expire(full, WINDOW_MINUTES * 60)
                counts = pipe.execute()
                return int(counts[-3])
            except redis.RedisError:
                self._redis_failed()
        cutoff = now - timedelta(minutes=WINDOW_MINUTES)
        account = 0
        for key in keys:
            for _attempt in range(3):
                try:
                    with self.db.session() as s:  # one statement: no count lost to a race
                        counted = s.execute(
                            update(SignInFailures).where(SignInFailures.key == key).values(
                                failures=case_when((SignInFailures.last_at <= cutoff, 1),
                                                   else_=SignInFailures.failures + 1), last_at=now),
                            execution_options={"synchronize_session": False})
                        if counted.rowcount == 0:  # type: ignore[attr-defined]
                            s.add(SignInFailures(key=key, failures=1, last_at=now))
                        s.flush()
                        account = int(s.scalar(select(SignInFailures.failures)
                                               .where(SignInFailures.key == key)) or 1)
                    break
                except IntegrityError:  # another process counted the first failure at once
                    continue
        with self.db.session() as s:  # forgotten counts go
            s.execute(delete(SignInFailures).where(SignInFailures.last_at <= cutoff))
        return account

    def succeeded(self, name: str, client: str) -> None:
        """A full sign-in (password and code): this client's count for this name starts again."""
        pair = self._keys(name, client)[0]
        r = self._r()
        if r is not None:
            try:
                r.delete(f"{self.namespace}:console:fail:{pair}")
            except redis.RedisError:
                self._redis_failed()
        with self.db.session() as s:
            s.execute(delete(SignInFailures).where(SignInFailures.key == pair))


def _failed(db: Database, guard: Guard, name: str, client: str, now: datetime) -> None:
    account = guard.failed(name, client, now)
    if account == ATTACK_FAILURES:
        # Once per window: the supervisors read it in the audit log (no name, no address).
        with db.session() as s:
            op_id = s.scalars(select(Operator.id).where(Operator.name == name)).first()
            if op_id is not None:
                s.add(AuditEntry(actor="system", action="sign-in-attack", **said(
                    "sign-in-attack", operator=op_id, failures=ATTACK_FAILURES,
                    minutes=WINDOW_MINUTES).entry()))
        log.warning("console: %s failed sign-ins for one account within %s minutes",
                    ATTACK_FAILURES, WINDOW_MINUTES)


def check_password(db: Database, guard: Guard, name: str, password: str, client: str,
                   now: datetime | None = None) -> int:
    """The operator id for a right name and password of an active account; AuthError
    otherwise, alike in words and time for a wrong name, a wrong password and a disabled
    account (each costs one argon2 verification); Throttled when this client must wait."""
    now = now or utcnow()
    seconds = guard.wait(name, client, now)
    if seconds:
        raise Throttled(seconds)
    found = None
    if len(name) <= 80 and all(ch >= " " for ch in name):  # else no such name (PostgreSQL refuses NUL)
        with db.session() as s:
            found = s.execute(select(Operator.id, Operator.password_hash, Operator.active)
                              .where(Operator.name == name)).first()
    real = found is not None and found.password_hash is not None and found.active
    hashed = found.password_hash if real and found is not None else _DUMMY
    try:
        ok = _hasher.verify(hashed, password) and real
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or found is None:
        _failed(db, guard, name, client, now)
        raise AuthError("wrong name or password")
    return int(found.id)


def check_code(db: Database, vault: Vault, guard: Guard, op_id: int, code: str, client: str,
               now: datetime | None = None, *, enrolling_secret: str | None = None) -> None:
    """A six-digit TOTP code, good once; AuthError otherwise, Throttled when this client must
    wait. The code's time step is taken by one conditional UPDATE: of two requests racing
    with the same code, exactly one gets in."""
    now = now or utcnow()
    with db.session() as s:
        op = s.get(Operator, op_id)
        if op is None or not op.active:
            raise AuthError("wrong code")
        name = op.name
        seconds = guard.wait(name, client, now)
        if seconds:
            raise Throttled(seconds)
        secret = enrolling_secret or vault.open_operator_secret(op)
        data_key_id = op.data_key_id
    totp = pyotp.TOTP(secret or pyotp.random_base32())
    code = code.strip().replace(" ", "")
    step = int(now.timestamp()) // totp.interval
    matched = next((st for st in (step, step - 1, step + 1)  # a phone's clock may be 30 s off
                    if code.isdigit() and len(code) == 6 and totp.at(st * totp.interval) == code), None)
    taken = False
    if secret is not None and matched is not None:
        with db.session() as s:
            values: dict[str, object] = {"totp_last_step": matched}
            query = update(Operator).where(Operator.id == op_id, Operator.active.is_(True), or_(
                Operator.totp_last_step.is_(None), Operator.totp_last_step < matched))
            if enrolling_secret is not None:
                # as Vault.seal_operator_secret seals it
                values.update(totp_secret=seal(vault.key_of(data_key_id), enrolling_secret.encode(),
                                               f"operator:{op_id}:totp"), totp_enrolled_at=now)
                query = query.where(Operator.totp_enrolled_at.is_(None))
            taken = s.execute(query.values(**values), execution_options={
                "synchronize_session": False}).rowcount == 1  # type: ignore[attr-defined]
            if taken and enrolling_secret is not None:
                s.add(AuditEntry(actor=f"operator:{op_id}", action="totp-enrolled"))
    if not taken:
        _failed(db, guard, name, client, now)
        raise AuthError("wrong code")
    guard.succeeded(name, client)


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


# --- sessions on the server ------------------------------------------------------------------------


def _row_id(token: str) -> str:
    """The row of a cookie's token: its hash, so a copy of the table opens no session."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Database, op_id: int, stage: str, now: datetime) -> str:
    """A new session row (`pending` after the password, `in` after the code); its token."""
    token = secrets.token_urlsafe(32)
    with db.session() as s:
        op = s.get(Operator, op_id)
        if op is None:
            raise AuthError("wrong name or password")
        s.add(ConsoleSession(id=_row_id(token), operator_id=op_id, stage=stage, epoch=op.session_epoch,
                             created_at=now, seen_at=now))
        # Sessions past their longest life are of no use any more: they go (the audit log keeps
        # who signed in and out).
        s.execute(delete(ConsoleSession).where(ConsoleSession.operator_id == op_id,
                                               ConsoleSession.created_at < now - MAX_SESSION))
        if stage == "in":
            s.add(AuditEntry(actor=f"operator:{op_id}", action="signed-in"))
    return token


def end_session(db: Database, token: object, now: datetime) -> None:
    if isinstance(token, str):
        with db.session() as s:
            s.execute(update(ConsoleSession).where(ConsoleSession.id == _row_id(token),
                                                   ConsoleSession.ended_at.is_(None))
                      .values(ended_at=now), execution_options={"synchronize_session": False})


def _live(s: Session, token: object, stage: str, now: datetime, idle: timedelta
          ) -> tuple[ConsoleSession, Operator] | None:
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    found = s.execute(select(ConsoleSession, Operator)
                      .join(Operator, Operator.id == ConsoleSession.operator_id)
                      .where(ConsoleSession.id == _row_id(token))).first()
    if found is None:
        return None
    row, op = found
    if (row.ended_at is not None or row.stage != stage or not op.active or row.epoch != op.session_epoch
            or now - row.seen_at > idle or now - row.created_at > MAX_SESSION):
        return None
    return row, op


def pending(db: Database, token: object, now: datetime) -> int | None:
    """The operator half-way through signing in (password given, code not yet), if any."""
    with db.session() as s:
        found = _live(s, token, "pending", now, timedelta(minutes=PENDING_MINUTES))
        return found[1].id if found else None


def enrolling_secret(db: Database, vault: Vault, token: str, now: datetime) -> str | None:
    """The new TOTP secret of a pending session, made on first asking and kept sealed under
    the operator's key in the session's row: it never travels in the cookie."""
    with db.session() as s:
        found = _live(s, token, "pending", now, timedelta(minutes=PENDING_MINUTES))
        if found is None:
            return None
        row, op = found
        context = f"operator:{op.id}:totp-enrolling:{row.id}"
        key = vault.key_of(op.data_key_id)
        if row.enroll_secret is not None:
            try:
                return unseal(key, row.enroll_secret, context).decode()
            except CryptoError:
                pass
        secret = new_secret()
        row.enroll_secret = seal(key, secret.encode(), context)
        return secret


def load_user(db: Database, token: object, now: datetime, idle: timedelta) -> User | None:
    """The session's operator, if the session is live (not ended, not idle, not too old, same
    epoch) and the operator active and enrolled; the session is marked seen."""
    with db.session() as s:
        found = _live(s, token, "in", now, idle)
        if found is None or found[1].totp_enrolled_at is None:
            return None
        row, op = found
        if now - row.seen_at > timedelta(seconds=10):  # not a write for every request
            row.seen_at = now
        return User(op.id, op.name, op.role, frozenset(op.regions.split(",")), op.locale, op.timezone)
