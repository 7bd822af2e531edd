"""The database: tables, sessions, and the vault that seals each case's private data.

SQLite under `instance/` is the embedded default for a first run; PostgreSQL in production
(`DATABASE_URL=postgresql+psycopg://…`). The schema is owned by Alembic migrations
(`ivr/migrations`, applied by `ivr db upgrade`); these models are what the code reads.

What could identify a caller (the number, the voice, the words) is stored only sealed under
the case's own data key (see ivr/keys.py). The data keys live in a key store of their own
(KEYSTORE_URL), so a backup of the data carries no key, wrapped by a key epoch kept in a file
(KEY_EPOCH_DIR) that a purge destroys, so no copy of the key store opens a purged case. A
case keeps its region, language and day in clear, so anonymous counts survive its data.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from ivr.keys import CryptoError, EpochRetired, KeyEpochs, Keyring, new_epoch_id, number_hash, seal, unseal

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and read back time-zone aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """The hotline's data (DATABASE_URL)."""


class KeyBase(DeclarativeBase):
    """The key store (KEYSTORE_URL): data keys only, kept apart from the data they open, so a
    backup of the data does not carry its keys and a destroyed key is gone from it too."""


class DataKey(KeyBase):
    """A data key (a case's, an operator's, the number-hash key), wrapped by the key epoch it
    names (ivr/keys.py). Destroying it empties `wrapped` and retires that epoch (Vault.shred).

    `master_id` is set only on keys of installs from before key epochs, wrapped directly by
    a master key, until the first start re-wraps them (Vault.prepare)."""

    __tablename__ = "data_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    # case | operator | number-hash (indexed: each new case reads the newest number-hash key)
    purpose: Mapped[str] = mapped_column(String(20), default="case", index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    master_id: Mapped[str | None] = mapped_column(String(40))
    epoch_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KeyEpoch(KeyBase):
    """A key epoch that wrapped data keys; its key is in a file (KEY_EPOCH_DIR), never here.

    `current` is True on exactly one row and NULL on the others (unique: two rotators cannot
    both install one). Writers lock the current row FOR SHARE in the transaction that adds a
    data key, a rotator locks it by updating it: a key wrapped under an epoch being retired
    cannot commit."""

    __tablename__ = "key_epochs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    current: Mapped[bool | None] = mapped_column(Boolean, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Call(Base):
    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # None once purged
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    flow: Mapped[str | None] = mapped_column(String(64))
    flow_version: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(8))
    region: Mapped[str | None] = mapped_column(String(64))
    # Set when a recording is reported with an empty or absent result, so it is not lost
    # silently but does not become an empty case either.
    note: Mapped[str | None] = mapped_column(String(200))
    consent: Mapped[str | None] = mapped_column(String(8))  # callback consent given in the flow
    seconds: Mapped[int | None] = mapped_column(Integer)  # its length, once it ended


class Recording(Base):
    __tablename__ = "recordings"
    id: Mapped[int] = mapped_column(primary_key=True)
    recording_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # None once purged
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"))
    # reported -> stored -> done; or failed (with error)
    status: Mapped[str] = mapped_column(String(20), default="reported")
    duration: Mapped[int | None] = mapped_column(Integer)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at_provider: Mapped[datetime | None] = mapped_column(UTCDateTime)
    audio: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed WAV
    audio_bytes: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(300))


class Case(Base):
    """A voicemail an operator acts on. Status: new, transcribed, transcription_failed,
    routed, closed; `status_reason` says why where it helps ("no model for uk")."""

    __tablename__ = "cases"
    # Open cases per operator (ivr/operators.py) from the index alone, status first so that
    # closed cases are skipped, not read (bench/routing.py)
    __table_args__ = (Index("ix_cases_status_operator_id", "status", "operator_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"))
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), unique=True)
    data_key_id: Mapped[int] = mapped_column(Integer)  # a DataKey in the key store
    status: Mapped[str] = mapped_column(String(24), default="new", index=True)
    status_reason: Mapped[str | None] = mapped_column(String(200))
    status_reason_data: Mapped[str | None] = mapped_column(Text)  # the same as data (ivr/reasons.py)
    language: Mapped[str | None] = mapped_column(String(8))
    region: Mapped[str | None] = mapped_column(String(64), index=True)
    country: Mapped[str | None] = mapped_column(String(2))
    flow: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(64))
    caller_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    number: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed E.164 number
    transcript: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed text
    transcript_engine: Mapped[str | None] = mapped_column(String(80))
    # The language the words were transcribed in: `language` (the caller's menu choice) unless
    # language identification was sure another was spoken. The mean of the model's per-word
    # confidence (0-1; None when the engine gives none), the words with their confidences
    # (sealed JSON, like the text), and what the guard against the model's failures noticed
    # ("no-speech,repeated": ivr/transcribe.py FLAGS).
    transcript_language: Mapped[str | None] = mapped_column(String(8))
    transcript_confidence: Mapped[float | None] = mapped_column(Float)
    transcript_words: Mapped[bytes | None] = mapped_column(LargeBinary)
    transcript_flags: Mapped[str | None] = mapped_column(String(80))
    # The caller's path through the flow before the message (sealed JSON of CallState.path:
    # the languages chosen, the topic, a try at an operator and how it ended).
    path: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    transcribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    route_reason: Mapped[str | None] = mapped_column(String(300))  # why it went where it did
    route_reason_data: Mapped[str | None] = mapped_column(Text)  # the same as data (ivr/reasons.py)
    # What the caller agreed to in the flow: any (any time), day (daytime in their time zone)
    # or none. No answer (an older flow, a withheld number) is none: nobody is called.
    consent: Mapped[str | None] = mapped_column(String(8))
    caller_tz: Mapped[str | None] = mapped_column(String(64))  # for the consent window
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # SMS for this assignment
    acted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first action by its operator
    offered_to: Mapped[str | None] = mapped_column(String(300))  # "3,7": operators offered it
    reoffers: Mapped[int] = mapped_column(Integer, default=0)
    # none (no consent), waiting (for its operator), calling, scheduled, answered, gave_up
    callback_status: Mapped[str | None] = mapped_column(String(12))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_callback_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    outcome: Mapped[str | None] = mapped_column(String(24))  # set by the operator (console)
    # The caller's keypad answers (the flow's `fields:`), sealed JSON {field: value} like the
    # transcript; `urgent` (in clear, for the queue's order and the re-offer clock) is set when
    # an answer is one of its field's `urgent` values (the shipped hotline: "at the front").
    intake: Mapped[bytes | None] = mapped_column(LargeBinary)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    # The caller's case code and PIN (ivr/casecode.py), never in clear: `code_hash` is an HMAC
    # of the code under the case-code key (it finds the case), `pin_hash` an argon2 hash (it
    # checks the PIN). No PIN chosen: no code_hash either, nobody can reach the case by phone.
    # Wrong PINs in a row lock the case's line until `code_locked_until`.
    code_hash: Mapped[str | None] = mapped_column(String(80), unique=True, index=True)
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    code_locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An operator marked the call a possible intelligence probe (ivr/probes.py): None (none),
    # "probe" (supervisors only decide) or "confirmed" (closed as a probe). The operator's
    # reason is sealed under the case's key (it may quote the caller); `flagged_from` is the
    # operator it had, who gets it back when a supervisor clears the flag.
    flag: Mapped[str | None] = mapped_column(String(12))
    flag_reason: Mapped[bytes | None] = mapped_column(LargeBinary)
    flagged_from: Mapped[int | None] = mapped_column(Integer)


# The console's queue (ivr/console/queries.py, bench/console.py) with 100,000 open cases: its
# order, so the first page is read from the index instead of sorting every visible case; and
# what its figures and filters read, so they are counted from the index alone.
Index("ix_cases_queue", Case.urgent.desc(), Case.operator_id.is_not(None), Case.acted_at.is_not(None),
      Case.created_at.desc(), Case.id.desc())
# The urgent cases (few): the queue's "overdue" figure counts those overdue sooner from it.
Index("ix_cases_urgent", Case.assigned_at, postgresql_where=Case.urgent, sqlite_where=Case.urgent)
Index("ix_cases_console", Case.status, Case.region, Case.language, Case.operator_id, Case.acted_at,
      Case.assigned_at, Case.callback_status, Case.next_callback_at, Case.flag)


class CodeEntry(Base):
    """A call between its case code and its PIN, linked server-side by CallSid (the code, the
    case and the PIN never travel in a URL): the case the code found, or the new case whose
    PIN is being chosen, with the first entry's argon2 hash until it is entered again.
    Short-lived: deleted once used, and any older than CODE_ENTRY_MINUTES is ignored."""

    __tablename__ = "code_entries"
    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    purpose: Mapped[str] = mapped_column(String(8))  # choose (a new case's PIN) | check
    first_pin: Mapped[str | None] = mapped_column(String(200))  # argon2 of the first entry
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CodeMiss(Base):
    """A wrong case code, from any call: only its time (no call, no number, no digits). The
    count of the last minutes slows every code entry and alerts the supervisors."""

    __tablename__ = "code_misses"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    alarm: Mapped[bool] = mapped_column(Boolean, default=False)  # the miss that raised an alarm


class Operator(Base):
    """A person who calls callers back. Their phone number is sealed like a caller's."""

    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    data_key_id: Mapped[int] = mapped_column(Integer)  # a DataKey in the key store
    number: Mapped[bytes] = mapped_column(LargeBinary)  # sealed E.164 number
    languages: Mapped[str] = mapped_column(String(40))  # "ru,uk"
    regions: Mapped[str] = mapped_column(String(200))  # "crimea,occupied"
    timezone: Mapped[str] = mapped_column(String(64))
    hours: Mapped[str] = mapped_column(String(200))  # "mon-fri 09:00-18:00; sat 10:00-14:00"
    capacity: Mapped[int] = mapped_column(Integer, default=5)  # open cases at most
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # False: disabled
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Open cases given to this operator, kept by ivr/operators.py wherever a case changes hands
    # or closes (and recounted hourly): the rule reads it instead of counting 100,000 cases.
    open_cases: Mapped[int] = mapped_column(Integer, default=0)
    role: Mapped[str] = mapped_column(String(12), default="operator")  # operator|supervisor|admin
    # The console (ivr/console): an argon2 hash, a TOTP secret sealed under the operator's key,
    # and a session epoch that ends every session (with the rows of `console_sessions`).
    password_hash: Mapped[str | None] = mapped_column(String(200))
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a code is good once
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    locale: Mapped[str] = mapped_column(String(5), default="uk")  # the console's language


class ConsoleSession(Base):
    """A console session, on the server so that it can be ended: the cookie carries only a
    random token whose hash is `id`. `stage` is `pending` between the password and the code
    (with, while enrolling, the new TOTP secret sealed under the operator's key), then `in`."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    stage: Mapped[str] = mapped_column(String(8))  # pending | in
    epoch: Mapped[int] = mapped_column(Integer)  # the operator's session_epoch when it began
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enroll_secret: Mapped[bytes | None] = mapped_column(LargeBinary)


class SignInFailures(Base):
    """Failed sign-ins per key (hashed account, client or both) when Redis is down."""

    __tablename__ = "console_failures"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CallbackAttempt(Base):
    """One try at calling a caller back: the operator's leg first, then the bridge.

    Outcome: answered, busy, no-answer, failed, canceled, callee-not-confirmed, machine (the
    caller's leg), or operator-busy, operator-no-answer, operator-failed, not-confirmed (the
    operator's). `confirmed_at` is set once, by the one request that hands out the bridge."""

    __tablename__ = "callback_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"))
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # the operator's leg
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the operator pressed 1
    # whoever answered the caller's phone pressed the key: only then is the bridge made
    callee_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(24))
    seconds: Mapped[int | None] = mapped_column(Integer)  # of the bridged conversation


class Note(Base):
    """An operator's note on a case: sealed under the case's key (it may quote the caller)."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed; None once purged


class Reply(Base):
    """An operator's reply for the caller, read to them by <Say> when they call with their
    case's code (ivr/replies.py): sealed under the case's key like a note, and destroyed with
    the case's data. `heard_at` is the first time the caller heard it; `heard_count` how often."""

    __tablename__ = "replies"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))  # None: the CLI
    actor: Mapped[str] = mapped_column(String(80))  # as in the audit log: operator:3, cli:olena
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed; None once purged
    heard_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heard_count: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """Who saw or did what to a case, and when. Never the data itself."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    detail: Mapped[str | None] = mapped_column(Text)
    data: Mapped[str | None] = mapped_column(Text)  # the detail as a code and values (ivr/reasons.py)


class OutboxJob(Base):
    """A job to enqueue: written with the data it is about, so Redis being down loses nothing."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))


# --- the database --------------------------------------------------------------------------


def _sqlite_pragmas(busy_ms: int) -> Callable[[Any, Any], None]:
    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA secure_delete=ON")  # freed cells and pages are zeroed, not left
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")  # web and worker processes share the file
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    return pragmas


class Database:
    """One database's engine and sessions, made lazily and again after a fork.

    `wait`: the most seconds a statement may wait for a lock or a connection (a webhook's
    bound, WEBHOOK_DB_WAIT); None: the patient default (15 s busy timeout on SQLite).
    """

    def __init__(self, url: str, *, wait: float | None = None) -> None:
        self.url = url
        self.wait = wait
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._pid = os.getpid()

    @property
    def engine(self) -> Engine:
        if self._engine is not None and self._pid != os.getpid():
            self._engine.dispose(close=False)  # forked (gunicorn, rq): fresh connections
            self._engine, self._sessions, self._pid = None, None, os.getpid()
        if self._engine is None:
            parsed = make_url(self.url)
            if self.backend == "sqlite" and parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {}
            if self.wait is not None and self.backend == "postgresql":
                ms = max(1, int(self.wait * 1000))
                options["pool_timeout"] = self.wait
                # libpq's connect_timeout is whole seconds, at least 2; the lock and statement
                # bounds hold a locked table or a stuck query to `wait`.
                options["connect_args"] = {
                    "connect_timeout": max(2, math.ceil(self.wait)),
                    "options": f"-c lock_timeout={ms} -c statement_timeout={ms}"}
            self._engine = create_engine(self.url, pool_pre_ping=True, **options)
            if self.backend == "sqlite":
                busy = 15000 if self.wait is None else max(1, int(self.wait * 1000))
                event.listen(self._engine, "connect", _sqlite_pragmas(busy))
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed at the end, rolled back on error."""
        if self._sessions is None or self._pid != os.getpid():
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> str | None:
        """None when the database answers, else a short reason without credentials."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return type(getattr(exc, "orig", None) or exc).__name__
        except OSError as exc:
            return type(exc).__name__
        return None

    @property
    def backend(self) -> str:
        return make_url(self.url).get_backend_name()

    def compact(self, vacuum: bool = False) -> bool:
        """SQLite: copy the WAL into the file and truncate it (and with `vacuum`, rebuild
        the file first), so deleted bytes do not linger in the WAL. True when the WAL is
        empty now (False: a reader held it, or not SQLite). Best effort: never raises."""
        if self.backend != "sqlite":
            return False
        try:
            with self.engine.connect() as conn:
                driver = conn.connection.dbapi_connection
                assert driver is not None
                if vacuum:
                    driver.execute("VACUUM")
                busy, _log, _done = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except SQLAlchemyError as exc:
            log.warning("could not checkpoint %s (%s)", make_url(self.url).database,
                        type(getattr(exc, "orig", None) or exc).__name__)
            return False
        return bool(busy == 0)


# --- the vault: data keys and sealed fields -----------------------------------------------


class _StaleEpoch(Exception):
    """The epoch a new data key was wrapped under stopped being current before it committed."""


# One rotator at a time on PostgreSQL, even before the first epoch row exists to lock.
ROTATION_LOCK = 0x1E7_0C45


class Vault:
    """Seals and opens case data with per-case data keys held in the key store.

    Knows nothing of HTTP or jobs. Key store writes commit on their own, before the data
    they protect: a crash in between leaves an unused key, never data without its key.
    Data keys are wrapped by the current key epoch (files in `epoch_dir`, ivr/keys.py);
    `shred` destroys keys and retires that epoch, so no copy of the old wrapped keys opens;
    `discard` destroys keys and leaves the retirement to the next purge.
    """

    def __init__(self, keyring: Keyring, keys: Database, epoch_dir: Path) -> None:
        self.keyring = keyring
        self.keys = keys
        self.epochs = KeyEpochs(epoch_dir, keyring)
        self._hash_key: tuple[int, bytes] | None = None
        self._current: str | None = None

    # --- epochs ------------------------------------------------------------------------------

    def current_epoch(self) -> str:
        """The epoch new keys are wrapped under (made on first use)."""
        for _ in range(3):
            if self._current is not None and self.epochs.path(self._current).exists():
                return self._current
            with self.keys.session() as k:
                found = k.scalars(select(KeyEpoch.id).where(KeyEpoch.current.is_(True))).first()
            if found is None:
                self.shred()  # an install's first key: its first epoch
                continue
            if self.epochs.path(found).exists():
                self._current = found
                return found
            self._current = None  # retired between our read and now: read again
        raise CryptoError(f"the current key epoch has no file in {self.epochs.folder}: "
                          "KEY_EPOCH_DIR must be the folder every process of the hotline shares")

    def _unwrap(self, wrapped: bytes, epoch_id: str | None, master_id: str | None) -> bytes:
        if epoch_id is not None:
            return self.epochs.unwrap(epoch_id, wrapped)
        if master_id is not None:  # an install from before key epochs, until Vault.prepare
            return self.keyring.unwrap(wrapped, master_id)
        raise CryptoError("a data key names neither a key epoch nor a master key")

    @contextmanager
    def _rotation(self) -> Iterator[None]:
        """One rotation at a time, across processes: PostgreSQL's advisory lock on a
        connection of its own (also taken by `ivr backup`), or a lock file beside the epochs
        (SQLite: the web and the worker share one machine)."""
        if self.keys.backend == "postgresql":
            with self.keys.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:n)"), {"n": ROTATION_LOCK})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": ROTATION_LOCK})
                    conn.commit()
            return
        import fcntl

        self.epochs.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.epochs.folder / ".rotation.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def shred(self, key_ids: Iterable[int] = ()) -> int:
        """Destroy these data keys and retire the epoch that wrapped them; return how many
        live keys were re-wrapped under the new epoch.

        1. The new epoch's row is committed (not current), then its file written, so that
           whatever a crash leaves of it is known to be ours; epoch files the key store does
           not know are never touched (another install's, say).
        2. One short transaction destroys the keys and makes the new epoch current. It
           updates the current epoch's row, so it waits for a writer holding it FOR SHARE
           (that writer's key then gets re-wrapped below), and a writer that wrapped under
           the old epoch and commits later finds it no longer current and tries again.
        3. Every live key not under the new epoch is re-wrapped, in batches of short
           transactions (new voicemails do not wait for 100,000 keys), each row only if
           unchanged (a key destroyed meanwhile stays destroyed).
        4. Then, and only then, the old epoch files are overwritten and unlinked.
        A failure leaves both epochs readable; the next rotation finishes the work.
        """
        ids = sorted(set(key_ids))
        with self._rotation():
            new = new_epoch_id()
            with self.keys.session() as k:
                k.add(KeyEpoch(id=new, current=None))
            self.epochs.sweep()
            try:
                self.epochs.create(new)
                with self.keys.session() as k:
                    now = utcnow()
                    k.execute(update(KeyEpoch).where(KeyEpoch.current.is_(True))
                              .values(current=None, retired_at=now),
                              execution_options={"synchronize_session": False})
                    for chunk in range(0, len(ids), 500):
                        k.execute(update(DataKey).where(DataKey.id.in_(ids[chunk:chunk + 500]),
                                                        DataKey.wrapped.is_not(None))
                                  .values(wrapped=None, destroyed_at=now),
                                  execution_options={"synchronize_session": False})
                    k.execute(update(KeyEpoch).where(KeyEpoch.id == new).values(current=True, created_at=now),
                              execution_options={"synchronize_session": False})
            except BaseException:
                self.epochs.retire(new)
                raise
            self._current = new
            count = self._rewrap_all(new)
            with self.keys.session() as k:
                left = k.scalar(select(func.count(DataKey.id)).where(
                    DataKey.wrapped.is_not(None), or_(DataKey.epoch_id.is_(None), DataKey.epoch_id != new)))
                if left:
                    raise CryptoError(f"{left} data key(s) were not re-wrapped: no epoch retired")
                ours = set(k.scalars(select(KeyEpoch.id).where(KeyEpoch.id != new)))
            for epoch_id in set(self.epochs.ids()) & ours:
                self.epochs.retire(epoch_id)
        self.keys.compact()
        if ids:
            log.info("destroyed %d data key(s); key epoch retired, %d live key(s) re-wrapped",
                     len(ids), count)
        return count

    def _rewrap_all(self, new: str, batch: int = 2000) -> int:
        count, seen = 0, set[int]()
        table = KeyBase.metadata.tables["data_keys"]
        while True:
            with self.keys.session() as k:
                live = k.execute(
                    select(DataKey.id, DataKey.wrapped, DataKey.epoch_id, DataKey.master_id)
                    .where(DataKey.wrapped.is_not(None),
                           or_(DataKey.epoch_id.is_(None), DataKey.epoch_id != new))
                    .order_by(DataKey.id).limit(batch)).all()
            if not live:
                return count
            if seen.intersection(r.id for r in live):
                raise CryptoError("a data key changed while it was re-wrapped: try again")
            seen.update(r.id for r in live)
            rows = [{"b_id": r.id, "b_old": r.wrapped, "b_new":
                     self.epochs.wrap(new, self._unwrap(r.wrapped, r.epoch_id, r.master_id))}
                    for r in live]
            with self.keys.session() as k:
                k.connection().execute(
                    update(table)
                    .where(table.c.id == bindparam("b_id"), table.c.wrapped == bindparam("b_old"))
                    .values(wrapped=bindparam("b_new"), epoch_id=new, master_id=None), rows)
            count += len(rows)

    def prepare(self) -> int:
        """At start-up: make the first epoch, re-wrap the master-wrapped keys of an install
        from before key epochs, and destroy epoch files a crash left. Returns keys re-wrapped."""
        with self.keys.session() as k:
            current = k.scalars(select(KeyEpoch.id).where(KeyEpoch.current.is_(True))).first()
            legacy = k.scalars(select(DataKey.id).where(DataKey.wrapped.is_not(None),
                                                        DataKey.epoch_id.is_(None)).limit(1)).first()
        if current is not None and legacy is None and self.epochs.ids() == [current]:
            return 0
        count = self.shred()
        if legacy is not None:
            # Their master-wrapped bytes must not stay in SQLite's free pages or WAL.
            self.keys.compact(vacuum=True)
            log.warning("re-wrapped %d data key(s) under a key epoch (KEY_EPOCH_DIR); rotate the "
                        "master key (`ivr keys new`, `ivr keys rotate`) so that copies of the old "
                        "key store cannot be opened with it", count)
        return count

    # --- data keys ----------------------------------------------------------------------------

    def new_key(self, purpose: str = "case") -> int:
        plain = AESGCM.generate_key(bit_length=256)
        for _attempt in range(5):
            epoch = self.current_epoch()
            try:
                wrapped = self.epochs.wrap(epoch, plain)
                with self.keys.session() as k:
                    key = DataKey(purpose=purpose, wrapped=wrapped, epoch_id=epoch)
                    k.add(key)
                    k.flush()
                    # After the insert, in its transaction: the epoch must still be current
                    # (a rotator that committed meanwhile did not re-wrap this key).
                    current = k.scalars(select(KeyEpoch.id).where(KeyEpoch.current.is_(True))
                                        .with_for_update(read=True)).first()
                    if current != epoch:
                        raise _StaleEpoch
                    return key.id
            except (_StaleEpoch, EpochRetired):
                self._current = None
        raise CryptoError("the key epoch kept changing while a data key was added")

    def key_of(self, key_id: int) -> bytes:
        for _attempt in range(3):
            with self.keys.session() as k:
                key = k.get(DataKey, key_id)
                if key is None or key.wrapped is None:
                    raise CryptoError("the data key was destroyed: this data is gone")
                wrapped, epoch_id, master_id = key.wrapped, key.epoch_id, key.master_id
            try:
                return self._unwrap(wrapped, epoch_id, master_id)
            except EpochRetired:
                continue  # retired since we read the key: it has been re-wrapped, read it again
        raise CryptoError(f"the key epoch of data key {key_id} is missing from {self.epochs.folder}")

    def seal(self, case: Case, field: str, value: bytes) -> bytes:
        return seal(self.key_of(case.data_key_id), value, f"case:{case.id}:{field}")

    def open_many(self, field: str, sealed: Iterable[tuple[int, int, bytes]]) -> dict[int, bytes]:
        """One sealed field of many cases, given as (case id, data key id, sealed value): the
        key store is read once, not once per case (the console's queue shows a page of them).
        Cases whose key was destroyed are left out."""
        items = list(sealed)
        with self.keys.session() as k:
            keys = {key.id: key for key in k.scalars(
                select(DataKey).where(DataKey.id.in_(sorted({key_id for _c, key_id, _v in items}))))}
        out: dict[int, bytes] = {}
        for case_id, key_id, value in items:
            key = keys.get(key_id)
            if key is None or key.wrapped is None:
                continue
            try:
                plain = self._unwrap(key.wrapped, key.epoch_id, key.master_id)
            except EpochRetired:
                plain = self.key_of(key_id)  # re-wrapped meanwhile: read afresh
            out[case_id] = unseal(plain, value, f"case:{case_id}:{field}")
        return out

    def open(self, case: Case, field: str) -> bytes | None:
        sealed: bytes | None = getattr(case, field)
        if sealed is None:
            return None
        return unseal(self.key_of(case.data_key_id), sealed, f"case:{case.id}:{field}")

    def seal_note(self, case: Case, note: Note, text: str) -> bytes:
        return seal(self.key_of(case.data_key_id), text.encode(), f"case:{case.id}:note:{note.id}")

    def open_note(self, case: Case, note: Note) -> str | None:
        if note.text is None:
            return None
        return unseal(self.key_of(case.data_key_id), note.text, f"case:{case.id}:note:{note.id}").decode()

    def seal_reply(self, case: Case, reply: Reply, text: str) -> bytes:
        return seal(self.key_of(case.data_key_id), text.encode(), f"case:{case.id}:reply:{reply.id}")

    def open_reply(self, case: Case, reply: Reply) -> str | None:
        if reply.text is None:
            return None
        return unseal(self.key_of(case.data_key_id), reply.text, f"case:{case.id}:reply:{reply.id}").decode()

    def seal_operator_secret(self, operator: Operator, secret: str) -> bytes:
        return seal(self.key_of(operator.data_key_id), secret.encode(), f"operator:{operator.id}:totp")

    def open_operator_secret(self, operator: Operator) -> str | None:
        if operator.totp_secret is None:
            return None
        return unseal(self.key_of(operator.data_key_id), operator.totp_secret,
                      f"operator:{operator.id}:totp").decode()

    def seal_operator_number(self, operator: Operator, number: str) -> bytes:
        return seal(self.key_of(operator.data_key_id), number.encode(), f"operator:{operator.id}:number")

    def open_operator_number(self, operator: Operator) -> str:
        return unseal(self.key_of(operator.data_key_id), operator.number,
                      f"operator:{operator.id}:number").decode()

    def seal_audio(self, case: Case, wav: bytes) -> bytes:
        return seal(self.key_of(case.data_key_id), wav, f"case:{case.id}:audio")

    def open_audio(self, case: Case, recording: Recording) -> bytes | None:
        if recording.audio is None:
            return None
        return unseal(self.key_of(case.data_key_id), recording.audio, f"case:{case.id}:audio")

    def hash_key(self) -> tuple[int, bytes]:
        """The current number-hash key: the newest live one (made on first use). Read at each
        use, so that every process moves to a new one as soon as a purge makes it."""
        with self.keys.session() as k:
            row = k.scalars(select(DataKey.id).where(DataKey.purpose == "number-hash",
                                                     DataKey.wrapped.is_not(None))
                            .order_by(DataKey.id.desc())).first()
        if row is None:
            row = self.new_key("number-hash")
        if self._hash_key is None or self._hash_key[0] != row:
            self._hash_key = (row, self.key_of(row))
        return self._hash_key

    def number_hash(self, number: str, key: tuple[int, bytes] | None = None) -> str:
        """The keyed hash that recognises a repeat caller, `<key id>:<HMAC>`: it says which
        number-hash key made it, so a purge can re-hash the live cases under a new key and
        destroy the old one (ivr/voicemail.py)."""
        key_id, hash_key = key or self.hash_key()
        return f"{key_id}:{number_hash(hash_key, number)[:48]}"

    def keys_of(self, key_ids: Iterable[int]) -> dict[int, bytes]:
        """Many data keys at once (those destroyed are left out)."""
        ids = sorted(set(key_ids))
        found: dict[int, bytes] = {}
        with self.keys.session() as k:
            rows = k.execute(select(DataKey.id, DataKey.wrapped, DataKey.epoch_id, DataKey.master_id)
                             .where(DataKey.id.in_(ids), DataKey.wrapped.is_not(None))).all()
        for r in rows:
            try:
                found[r.id] = self._unwrap(r.wrapped, r.epoch_id, r.master_id)
            except EpochRetired:
                found[r.id] = self.key_of(r.id)
        return found

    def discard(self, key_ids: Iterable[int]) -> int:
        """Destroy these data keys now, and leave retiring their key epoch to the next purge.

        For a dropped empty message (ivr/voicemail.py): its key row is emptied at once, so
        nothing reading the key store opens its data again; copies of the wrapped key (the
        WAL, a backup or copy of the key store, PostgreSQL's dead tuples) open it under the
        current epoch until the hourly purge retires it, once for every key discarded since
        (`discarded`). Retiring it per call would let silent callers force a rotation, which
        re-wraps every live key, with each call. Returns the keys destroyed.
        """
        ids = sorted(set(key_ids))
        if not ids:
            return 0
        with self.keys.session() as k:
            done = k.execute(update(DataKey).where(DataKey.id.in_(ids), DataKey.wrapped.is_not(None))
                             .values(wrapped=None, destroyed_at=utcnow()),
                             execution_options={"synchronize_session": False})
        self.keys.compact()  # SQLite: the emptied row's old bytes leave the WAL and the file
        return int(getattr(done, "rowcount", 0) or 0)

    def discarded(self) -> int:
        """Keys destroyed under the current epoch: a copy of them still opens until it is
        retired (`shred`, which the purge runs when this is not 0)."""
        with self.keys.session() as k:
            current = k.scalars(select(KeyEpoch.id).where(KeyEpoch.current.is_(True))).first()
            if current is None:
                return 0
            return int(k.scalar(select(func.count(DataKey.id)).where(
                DataKey.destroyed_at.is_not(None), DataKey.epoch_id == current)) or 0)

    def destroy(self, key_id: int) -> None:
        """Destroy one data key (and retire its epoch): prefer `shred` for many at once."""
        self.shred([key_id])

    def rotate(self) -> int:
        """After a new master key went first: a new epoch sealed under it, every data key
        re-wrapped, the old epoch destroyed, any other epoch file re-sealed; returns the keys."""
        count = self.shred()
        self.epochs.reseal()
        return count


# --- migrations ----------------------------------------------------------------------------


def alembic_config(url: str, store: str = "data") -> Any:
    """Alembic for the data (`ivr/migrations`) or the key store (`ivr/migrations/keystore`)."""
    from alembic.config import Config

    cfg = Config()
    folder = Path(__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(folder / "keystore" if store == "keys" else folder))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, keystore_url: str | None = None) -> None:
    """Bring the database (and the key store) to the newest schema; safe at every start.

    The key store may share a database with the data (tests do): its tables and its Alembic
    version table are its own.
    """
    from alembic import command

    for target, store in ((url, "data"), (keystore_url, "keys")):
        if target is None:
            continue
        parsed = make_url(target)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(alembic_config(target, store), "head")
