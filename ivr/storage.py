"""The database: tables, sessions, and the vault that seals each case's private data.

SQLite under `instance/` is the embedded default for a first run; PostgreSQL in production
(`DATABASE_URL=postgresql+psycopg://…`). The schema is owned by Alembic migrations
(`ivr/migrations`, applied by `ivr db upgrade`); these models are what the code reads.

What could identify a caller (the number, the voice, the words) is stored only sealed under
the case's own data key (see ivr/keys.py). The data keys live in a key store of their own
(KEYSTORE_URL), so a backup of the data carries no key. A case keeps its region, language
and dates in clear, so anonymous counts survive when its data is destroyed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from ivr.keys import CryptoError, Keyring, number_hash, seal, unseal


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
    """A case's data key, wrapped by a master key. Deleting `wrapped` shreds the case's data."""

    __tablename__ = "data_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(20), default="case")  # case | number-hash
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    master_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Call(Base):
    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
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
    recording_sid: Mapped[str] = mapped_column(String(64), unique=True)
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    transcribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    route_reason: Mapped[str | None] = mapped_column(String(300))  # why it went where it did
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


# The console's queue (ivr/console/queries.py, bench/console.py) with 100,000 open cases: its
# order, so the first page is read from the index instead of sorting every visible case; and
# what its figures and filters read, so they are counted from the index alone.
Index("ix_cases_queue", Case.operator_id.is_not(None), Case.acted_at.is_not(None), Case.created_at.desc(),
      Case.id.desc())
Index("ix_cases_console", Case.status, Case.region, Case.language, Case.operator_id, Case.acted_at,
      Case.assigned_at, Case.callback_status, Case.next_callback_at)


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
    # lock-out counters for when Redis is down, and a session epoch that ends every session.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a code is good once
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    locale: Mapped[str] = mapped_column(String(5), default="uk")  # the console's language


class CallbackAttempt(Base):
    """One try at calling a caller back: the operator's leg first, then the bridge.

    Outcome: answered, busy, no-answer, failed, canceled (the caller's leg), or
    operator-busy, operator-no-answer, operator-failed, not-confirmed (the operator's)."""

    __tablename__ = "callback_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"))
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # the operator's leg
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the operator pressed 1
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


class AuditEntry(Base):
    """Who saw or did what to a case, and when. Never the data itself."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")  # web and worker processes share the file
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
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
            self._engine = create_engine(self.url, pool_pre_ping=True)
            if self.backend == "sqlite":
                event.listen(self._engine, "connect", _sqlite_pragmas)
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


# --- the vault: data keys and sealed fields -----------------------------------------------


class Vault:
    """Seals and opens case data with per-case data keys held in the key store.

    Knows nothing of HTTP or jobs. Key store writes commit on their own, before the data
    they protect: a crash in between leaves an unused key, never data without its key.
    """

    def __init__(self, keyring: Keyring, keys: Database) -> None:
        self.keyring = keyring
        self.keys = keys
        self._hash_key: bytes | None = None

    def new_key(self, purpose: str = "case") -> int:
        _plain, wrapped, master_id = self.keyring.new_data_key()
        with self.keys.session() as k:
            key = DataKey(purpose=purpose, wrapped=wrapped, master_id=master_id)
            k.add(key)
            k.flush()
            return key.id

    def key_of(self, key_id: int) -> bytes:
        with self.keys.session() as k:
            key = k.get(DataKey, key_id)
            if key is None or key.wrapped is None:
                raise CryptoError("the data key was destroyed: this data is gone")
            return self.keyring.unwrap(key.wrapped, key.master_id)

    def seal(self, case: Case, field: str, value: bytes) -> bytes:
        return seal(self.key_of(case.data_key_id), value, f"case:{case.id}:{field}")

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

    def number_hash(self, number: str) -> str:
        """The keyed hash that recognises a repeat caller; its key lives sealed in the store."""
        if self._hash_key is None:
            with self.keys.session() as k:
                row = k.scalars(select(DataKey.id).where(DataKey.purpose == "number-hash")
                                .order_by(DataKey.id)).first()
            self._hash_key = self.key_of(row if row is not None else self.new_key("number-hash"))
        return number_hash(self._hash_key, number)

    def destroy(self, key_id: int) -> None:
        with self.keys.session() as k:
            key = k.get(DataKey, key_id)
            if key is not None and key.wrapped is not None:
                key.wrapped = None
                key.destroyed_at = utcnow()

    def rotate(self) -> int:
        """Re-wrap every data key not wrapped by the first master key; returns how many."""
        count = 0
        current = self.keyring.current
        with self.keys.session() as k:
            for key in k.scalars(select(DataKey).where(DataKey.wrapped.is_not(None),
                                                       DataKey.master_id != current)):
                assert key.wrapped is not None
                plain = self.keyring.unwrap(key.wrapped, key.master_id)
                key.wrapped, key.master_id = self.keyring.wrap(plain)
                count += 1
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
