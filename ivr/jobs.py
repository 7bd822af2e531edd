"""Background work on rq: job functions that take ids, never data, and the outbox.

A job's arguments are visible to anyone who can read Redis, so they carry only row ids.
Jobs are enqueued from the database outbox rather than directly: the row is written in
the same transaction as the recording it is about, and `Outbox.flush` moves pending rows to
Redis — at once when Redis is up, later (from a background thread of every web process and
from the worker at start) when it is not. A voicemail reported while Redis is down waits in
the database, not in a web process's memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from rq import Queue, Retry, get_current_job
from sqlalchemy import select, update

from ivr import voicemail
from ivr.config import Settings, load_settings
from ivr.keys import Keyring, development_keys, parse_master_keys
from ivr.storage import Database, OutboxJob, Vault, utcnow

log = logging.getLogger(__name__)

QUEUE = "ivr"
# Network steps retry with backoff: Twilio or our network may be down for minutes.
RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])


@dataclass
class Services:
    """Everything a job needs, built once per worker process from the settings."""

    settings: Settings
    db: Database
    vault: Vault
    tools: voicemail.Tools


_services: Services | None = None
_build: Callable[[Settings], Services] | None = None


def use(build: Callable[[Settings], Services]) -> None:
    """Set how services are built (the app factory does; tests may hand in their own)."""
    global _build, _services
    _build, _services = build, None


def services() -> Services:
    global _services
    if _services is None:
        settings = load_settings()
        if _build is None:
            use(build_services)
        assert _build is not None
        _services = _build(settings)
    return _services


def keyring_for(settings: Settings) -> Keyring:
    """IVR_DATA_KEYS, or in development a key made once under instance/."""
    if settings.data_keys:
        return Keyring(parse_master_keys(settings.data_keys))
    return Keyring(development_keys(settings.instance_dir))


def build_services(settings: Settings) -> Services:
    """The real parts: the database, the vault, Twilio's REST API and the transcribers."""
    from ivr import transcribe as asr
    from ivr.providers import ProviderError, TwilioProvider

    provider = TwilioProvider(settings.twilio_account_sid, settings.twilio_auth_token,
                              settings.twilio_api_base)
    engines = asr.parse_engines(settings.transcribe_engines)

    def fetch(sid: str) -> bytes:
        try:
            return provider.fetch_recording(sid)
        except ProviderError as exc:
            if exc.retryable:
                raise voicemail.Retryable(str(exc)) from None
            raise ValueError(str(exc)) from None

    def delete(sid: str) -> None:
        try:
            provider.delete_recording(sid)
        except ProviderError as exc:
            raise voicemail.Retryable(str(exc)) from None

    def check_audio(wav: bytes) -> None:
        try:
            asr.inspect(wav)
        except asr.BadAudio as exc:
            raise ValueError(str(exc)) from None

    def transcribe(language: str, wav: bytes) -> tuple[str, str]:
        try:
            engine = asr.transcriber_for(engines, language)
        except asr.NoModel:
            raise voicemail.NoModel(language) from None
        result = engine.transcribe(wav)
        return result.text, result.engine

    db = Database(settings.database_url)
    return Services(settings, db, Vault(keyring_for(settings)),
                    voicemail.Tools(fetch, delete, check_audio, transcribe))


# --- jobs (rq imports these by name: keep them small, arguments are ids) -------------------


def process_recording(recording_id: int) -> str:
    s = services()
    return voicemail.process_recording(s.db, s.vault, s.tools, recording_id)


def purge_expired() -> int:
    """Retention, hourly: runs in the worker and schedules its own next run."""
    s = services()
    count = voicemail.purge(s.db, s.vault, timedelta(days=s.settings.retention_days))
    job = get_current_job()
    if job is not None:
        schedule_purge(Queue(QUEUE, connection=job.connection), PURGE_EVERY)
    return count


PURGE_EVERY = timedelta(hours=1)


def schedule_purge(queue: Queue, delay: timedelta = timedelta(0)) -> None:
    queue.enqueue_in(delay, purge_expired, job_id="purge-expired")


JOBS: dict[str, Callable[[int], object]] = {voicemail.PROCESS_RECORDING: process_recording}


# --- the outbox ----------------------------------------------------------------------------


def redis_client(url: str) -> redis.Redis:
    # Short timeouts: a webhook must never wait on a dead Redis.
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)


class Outbox:
    def __init__(self, db: Database, redis_url: str) -> None:
        self.db = db
        self.redis_url = redis_url

    def flush(self, limit: int = 200) -> int:
        """Enqueue pending jobs; returns how many. Safe from several processes at once."""
        with self.db.session() as s:
            pending = s.scalars(
                select(OutboxJob).where(OutboxJob.enqueued_at.is_(None))
                .order_by(OutboxJob.id).limit(limit)
            ).all()
            todo = [(j.id, j.job, j.target_id) for j in pending]
        if not todo:
            return 0
        try:
            queue = Queue(QUEUE, connection=redis_client(self.redis_url))
            queue.connection.ping()
        except redis.RedisError as exc:
            self._note(todo, f"Redis unreachable: {type(exc).__name__}")
            return 0
        done = 0
        for job_id, job, target in todo:
            with self.db.session() as s:  # claim it, so one process enqueues it
                claimed = s.execute(
                    update(OutboxJob).where(OutboxJob.id == job_id, OutboxJob.enqueued_at.is_(None))
                    .values(enqueued_at=utcnow(), last_error=None)
                ).rowcount  # type: ignore[attr-defined]
            if not claimed:
                continue
            try:
                queue.enqueue(JOBS[job], target, job_id=f"{job}-{target}", retry=RETRY,
                              failure_ttl=30 * 24 * 3600)
                done += 1
            except redis.RedisError as exc:
                with self.db.session() as s:
                    s.execute(update(OutboxJob).where(OutboxJob.id == job_id)
                              .values(enqueued_at=None, last_error=type(exc).__name__))
                break
        return done

    def _note(self, todo: list[tuple[int, str, int]], error: str) -> None:
        with self.db.session() as s:
            s.execute(update(OutboxJob).where(OutboxJob.id.in_([t[0] for t in todo]))
                      .values(last_error=error))

    def pending(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(OutboxJob.id).where(OutboxJob.enqueued_at.is_(None))).all())


class OutboxFlusher(threading.Thread):
    """Keeps flushing the outbox every few seconds in a web process (daemon thread)."""

    def __init__(self, outbox: Outbox, every: float) -> None:
        super().__init__(name="outbox-flusher", daemon=True)
        self.outbox, self.every = outbox, every
        self.wake = threading.Event()

    def run(self) -> None:
        while True:
            self.wake.wait(self.every)
            self.wake.clear()
            try:
                self.outbox.flush()
            except Exception:
                log.exception("outbox flush failed; trying again in %s s", self.every)
