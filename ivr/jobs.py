"""Background work on rq: job functions that take ids, never data, and the outbox.

A job's arguments are visible to anyone who can read Redis, so they carry only row ids.
Jobs are enqueued from the database outbox rather than directly: the row is written in
the same transaction as the recording it is about, and `Outbox.flush` moves pending rows to
Redis — at once when Redis is up, later (from a background thread of every web process and
from the worker at start) when it is not. A voicemail reported while Redis is down waits in
the database, not in a web process's memory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from sqlalchemy import func, select, update

from ivr import callbacks, casecode, voicemail
from ivr.config import Settings, load_settings, parse_daytime
from ivr.keys import Keyring, development_keys, parse_master_keys
from ivr.liveness import WORKER_PREFIX, Pulse, rescue_abandoned, worker_tag
from ivr.operators import recount
from ivr.spool import SUFFIX as SPOOL_SUFFIX
from ivr.spool import Spool
from ivr.storage import Database, OutboxJob, Vault, upgrade, utcnow
from ivr.transcribe import Transcript

log = logging.getLogger(__name__)

QUEUE = "ivr"  # the namespace when none is given (REDIS_NAMESPACE in the settings)
# Network steps retry with backoff: Twilio or our network may be down for minutes.
RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])
FAILURE_TTL = 30 * 24 * 3600  # failed jobs stay visible (`rq info`) for a month
REDIS_BACKOFF = 5.0  # seconds a webhook leaves Redis alone after it failed


@dataclass
class Services:
    """Everything a job needs, built once per worker process from the settings."""

    settings: Settings
    db: Database
    vault: Vault
    tools: voicemail.Tools
    telephony: callbacks.Telephony
    policy: callbacks.Policy


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


def vault_for(settings: Settings) -> Vault:
    """The vault: master keys, the key store and its key epochs (KEY_EPOCH_DIR)."""
    return Vault(keyring_for(settings), Database(settings.keystore_url), settings.epoch_dir)


def prepare_stores(settings: Settings) -> None:
    """At every start: migrate both stores, then put the key epochs in order (the first one,
    keys of an older install re-wrapped, leftovers of a crash destroyed)."""
    upgrade(settings.database_url, settings.keystore_url)
    vault = vault_for(settings)
    vault.prepare()
    vault.keys.engine.dispose()


def call_deleter(settings: Settings, what: str = "call") -> Callable[[str], None]:
    """Deletes a call from Twilio's call log (or, with what="recording", a recording); a
    failure is Retryable (the next purge tries again)."""
    from ivr.providers import ProviderError, TwilioProvider

    provider = TwilioProvider.from_settings(settings)
    remove = provider.delete_recording if what == "recording" else provider.delete_call

    def delete(sid: str) -> None:
        try:
            remove(sid)
        except ProviderError as exc:
            raise voicemail.Retryable(str(exc)) from None

    return delete


def policy_for(settings: Settings) -> callbacks.Policy:
    daytime = parse_daytime(settings.callback_daytime)
    assert daytime is not None  # checked by load_settings
    return callbacks.Policy(daytime, settings.callback_retry_minutes,
                            timedelta(minutes=settings.reoffer_minutes),
                            urgent_reoffer_after=timedelta(minutes=settings.urgent_reoffer_minutes))


def telephony_for(settings: Settings) -> callbacks.Telephony:
    """SMS and calls from the hotline's own number, through Twilio's REST API."""
    from ivr.providers import TwilioProvider

    provider = TwilioProvider.from_settings(settings)
    hotline = settings.hotline_number

    def send_sms(to: str, body: str) -> str:
        return provider.send_sms(to, hotline, body)

    def place_call(to: str, url: str, status_callback: str, timeout: int) -> str:
        return provider.create_call(to, hotline, url, status_callback, timeout,
                                    status_callback_event=("answered", "completed"))

    return callbacks.Telephony(send_sms, place_call)


def transcriber_tool(settings: Settings) -> Callable[[str, bytes, str | None], Transcript]:
    """How the worker turns a voicemail into text: the engines of TRANSCRIBE_ENGINES, language
    identification among the caller's flow's languages, the guard. `ivr transcribe` runs
    exactly this. Raises voicemail.NoModel, or ValueError for audio it cannot use."""
    from ivr import transcribe as asr

    engines = asr.parse_engines(settings.transcribe_engines)
    threads, cache = settings.transcribe_threads, settings.model_cache
    flow_languages = _flow_languages(settings)

    def transcribe(language: str, wav: bytes, flow: str | None) -> Transcript:
        try:
            return asr.listen(wav, language, engines, flow_languages(flow), threads, cache)
        except asr.NoModel as exc:
            raise voicemail.NoModel(str(exc)) from None
        except asr.TranscriptionError as exc:  # bad audio, or the engine failed on it
            raise ValueError(str(exc)) from None

    return transcribe


def _flow_languages(settings: Settings) -> Callable[[str | None], tuple[str, ...]]:
    """A flow's languages (read once per worker; a flow that cannot be read offers none, and
    then only the caller's choice is transcribed)."""
    known: dict[str, tuple[str, ...]] = {}

    def languages(flow: str | None) -> tuple[str, ...]:
        if not flow:
            return ()
        if flow not in known:
            from ivr.loader import flow_files, load_set

            try:
                found = load_set(flow_files([settings.flows_dir])).flows
                known.update({f.id: tuple(f.languages) for f in found.values()})
            except Exception:
                log.warning("could not read the flows for their languages", exc_info=True)
            known.setdefault(flow, ())
        return known[flow]

    return languages


def build_services(settings: Settings) -> Services:
    """The real parts: the database, the vault, Twilio's REST API and the transcribers."""
    from ivr import transcribe as asr
    from ivr.providers import ProviderError, TwilioProvider

    provider = TwilioProvider(settings.twilio_account_sid, settings.twilio_auth_token,
                              settings.twilio_api_base)

    def fetch(sid: str) -> bytes:
        try:
            return provider.fetch_recording(sid)
        except ProviderError as exc:
            if exc.retryable or exc.status == 404:  # a new recording may not be there yet
                raise voicemail.Retryable(str(exc), missing=exc.status == 404) from None
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

    db = Database(settings.database_url)
    vault = vault_for(settings)
    telephony = telephony_for(settings)

    def after(case_id: int) -> None:
        """A case's text is in: give it to an operator and tell them (or the supervisors)."""
        callbacks.route(db, case_id)
        callbacks.notify(db, vault, telephony, settings.public_base_url, case_id,
                         titles=region_titles(settings))

    return Services(settings, db, vault,
                    voicemail.Tools(fetch, delete, check_audio, transcriber_tool(settings), after,
                                    asr.has_speech),
                    telephony, policy_for(settings))


# --- jobs (rq imports these by name: keep them small, arguments are ids) -------------------


def process_recording(recording_id: int) -> str:
    s = services()
    return voicemail.process_recording(s.db, s.vault, s.tools, recording_id)


def notify_case(case_id: int) -> int:
    """Tell a case's (new) operator by SMS, or the supervisors when it has none."""
    s = services()
    return callbacks.notify(s.db, s.vault, s.telephony, s.settings.public_base_url, case_id,
                            titles=region_titles(s.settings))


def region_titles(settings: Settings) -> callbacks.Titles:
    """Regions by their names for a reader (regions.yaml `names`), read when a supervisor is
    told; a file that does not load leaves the regions' own names."""
    from ivr.routing import load_regions

    regions, problems = load_regions(settings.flows_dir / "regions.yaml")

    def title(region: str, locale: str) -> str:
        try:
            return regions.region(region).title(locale) if not problems else region
        except KeyError:
            return region

    return title


def tell_code_burst(miss_id: int) -> int:
    """A burst of wrong case codes: tell the supervisors by SMS (ivr/casecode.py)."""
    s = services()
    return casecode.tell_supervisors(s.db, s.vault, s.telephony.send_sms,
                                     s.settings.public_base_url, miss_id)


def callback_case(case_id: int) -> int | None:
    """A scheduled callback attempt that is due; None when it must not happen now."""
    s = services()
    try:
        return callbacks.start_callback(s.db, s.vault, s.telephony, s.settings.public_base_url,
                                        s.policy, case_id)
    except callbacks.CallbackError as exc:
        log.info("scheduled callback not placed: %s", exc)
        return None


def purge_expired() -> int:
    """Retention: destroy the data of cases closed longer ago than RETENTION_DAYS.

    Enqueued about hourly by the `Housekeeper` of whichever worker holds its lock.
    """
    s = services()
    return voicemail.purge(s.db, s.vault, timedelta(days=s.settings.retention_days),
                           call_deleter(s.settings), call_deleter(s.settings, "recording"))


def reconcile_recordings(settle: timedelta | None = None) -> int:
    """List the recordings at Twilio and file those no webhook reported (ivr.reconcile)."""
    from ivr import reconcile
    from ivr.providers import ProviderError, TwilioProvider
    from ivr.routing import load_regions

    s = services()
    provider = TwilioProvider.from_settings(s.settings)
    regions, problems = load_regions(s.settings.flows_dir / "regions.yaml")
    if problems and any(not p.warning for p in problems):
        log.warning("regions.yaml has errors: recordings found at Twilio get the fallback region")

    def delete(sid: str) -> None:
        with contextlib.suppress(ProviderError):  # an empty one: the next round tries again
            provider.delete_recording(sid)

    try:
        made = reconcile.reconcile(
            s.db, s.vault, list(provider.list_recordings()), provider.call_from, delete, regions,
            spooled_sids(s.settings), settle if settle is not None else reconcile.SETTLE)
    finally:
        provider.close()
    return len(made)


def spool_for(settings: Settings, keyring: Keyring) -> Spool:
    return Spool(settings.instance_dir / "spool", keyring.derived("spool"))


def spooled_sids(settings: Settings) -> Callable[[], set[str]]:
    """The recording sids waiting in this machine's spool (they are in its file names)."""
    def found() -> set[str]:
        folder = settings.instance_dir / "spool"
        if not folder.is_dir():
            return set()
        return {p.name.removesuffix(SPOOL_SUFFIX).rsplit("-", 1)[-1]
                for p in folder.iterdir() if p.name.endswith(SPOOL_SUFFIX)}
    return found


def drain_spool() -> int:
    """Move this machine's spooled recording reports into the database (ivr.spool)."""
    s = services()
    return spool_for(s.settings, s.vault.keyring).drain(
        lambda r: voicemail.note_recording(s.db, s.vault, r))


LOST_AFTER = timedelta(minutes=2)  # no job anywhere in Redis: Redis restarted empty, say
GAVE_UP_AFTER = timedelta(hours=1)  # its job failed for good: Twilio down for long, say


def requeue_unfinished(db: Database, queue: Queue, lost_after: timedelta = LOST_AFTER,
                       gave_up_after: timedelta = GAVE_UP_AFTER) -> int:
    """Run again the voicemails that are not done and whose job is gone or gave up."""
    count, now = 0, utcnow()
    for recording_id, reported_at in voicemail.unfinished(db, lost_after):
        job_id = job_id_for(queue.name, voicemail.PROCESS_RECORDING, recording_id)
        status = None
        with contextlib.suppress(NoSuchJobError):
            status = Job.fetch(job_id, connection=queue.connection).get_status()
        if status in (JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            continue  # running, or waiting for its retry (rq retries abandoned STARTED jobs)
        if status == JobStatus.QUEUED and queue.get_job_position(job_id) is not None:
            continue
        if status is not None and status != JobStatus.QUEUED and now - reported_at < gave_up_after:
            continue  # failed lately: give Twilio (or whatever it was) time
        # Otherwise Redis lost it, or rq gave up on it. (rq 3.0 also drops a job whose worker
        # was killed between taking it and marking it started: QUEUED, but in no queue.)
        queue.enqueue(process_recording, recording_id, job_id=job_id, retry=RETRY,
                      failure_ttl=FAILURE_TTL)
        count += 1
    if count:
        log.warning("re-enqueued %d voicemail(s) whose processing had stopped", count)
    return count


class Housekeeper(threading.Thread):
    """Runs in every worker process; each minute it drains this machine's spool, and one of
    them (a Redis lock decides) moves the outbox, re-enqueues voicemails whose jobs Redis lost
    and jobs whose worker died, lists the recordings at Twilio every `reconcile_every`
    seconds, and enqueues the hourly retention.

    It lives in a process, not in Redis, so a Redis that restarts empty loses nothing for long.
    """

    def __init__(self, db: Database, redis_url: str, every: float = 60.0,
                 lost_after: timedelta = LOST_AFTER,
                 policy: callbacks.Policy | None = None, namespace: str = QUEUE,
                 drain: Callable[[], object] | None = None,
                 reconcile: Callable[[], object] | None = None,
                 reconcile_every: float = 300.0) -> None:
        super().__init__(name="housekeeper", daemon=True)
        self.db, self.redis_url, self.every, self.lost_after = db, redis_url, every, lost_after
        self.policy = policy or callbacks.Policy()
        self.namespace = namespace
        # One lock per install: another install's housekeeper on the same Redis is not ours.
        self.LOCK, self.PURGE_DUE = f"{namespace}:housekeeper", f"{namespace}:purge-due"
        self.RECONCILE_DUE = f"{namespace}:reconcile-due"
        self.outbox = Outbox(db, redis_url, namespace)
        self.drain, self.reconcile, self.reconcile_every = drain, reconcile, reconcile_every
        self.stopping = threading.Event()

    def tick(self) -> bool:
        """One round; False when another worker's housekeeper (of this install) has it."""
        if self.drain is not None:  # this machine's spool: every worker, Redis or not
            try:
                self.drain()
            except Exception as exc:
                log.warning("housekeeping: the spool waits for the database (%s)", type(exc).__name__)
        conn = redis_client(self.redis_url)
        if not conn.set(self.LOCK, "1", nx=True, ex=max(1, int(self.every * 0.9))):
            return False
        qname = self.namespace  # this install's queue
        queue = Queue(qname, connection=conn)
        # Cases nobody acted on, operators never told, callbacks due: jobs via the outbox. Each
        # on its own: a failure in one must not stop the voicemail backstops below.
        chores: list[tuple[str, Callable[[], object]]] = [
            ("re-offers", lambda: callbacks.reoffer_due(self.db, self.policy)),
            ("notifications", lambda: callbacks.unnotified(self.db)),
            ("callbacks", lambda: callbacks.due_callbacks(self.db, self.policy)),
        ]
        for name, chore in chores:
            try:
                chore()
            except Exception:
                log.exception("housekeeping: %s failed; the rest goes on", name)
        self.outbox.flush()
        if not conn.exists(RQScheduler.get_locking_key(qname)):
            # No live rq scheduler (it dies with a Redis outage and comes back only at rq's
            # 10-minute maintenance): move the retries that are due ourselves.
            scheduler = RQScheduler([qname], connection=conn)
            scheduler.prepare_registries([qname])
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        requeue_unfinished(self.db, queue, self.lost_after)
        rescue_abandoned(queue)
        if self.reconcile is not None and conn.set(self.RECONCILE_DUE, "1", nx=True,
                                                   ex=max(1, int(self.reconcile_every))):
            try:
                self.reconcile()
            except Exception:
                log.exception("housekeeping: listing the recordings at Twilio failed; "
                              "trying again next round")
                conn.delete(self.RECONCILE_DUE)
            self.outbox.flush()
        if conn.set(self.PURGE_DUE, "1", nx=True, ex=int(PURGE_EVERY.total_seconds())):
            queue.enqueue(purge_expired, job_id=job_id_for(qname, "purge-expired", int(time.time())),
                          result_ttl=86400, failure_ttl=FAILURE_TTL)
            fixed = recount(self.db)  # hourly too: the open-case counts the rule reads
            if fixed:
                log.warning("recounted the open cases of %d operator(s): they had drifted", fixed)
        return True

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        failing: str | None = None
        while True:
            try:
                self.tick()
                failing = None
            except Exception as exc:
                if failing != type(exc).__name__:
                    log.warning("housekeeping failed (%s); trying again every %s s",
                                type(exc).__name__, self.every)
                failing = type(exc).__name__
            if self.stopping.wait(self.every):
                return


PURGE_EVERY = timedelta(hours=1)


def work(redis_url: str, namespace: str = QUEUE) -> None:
    """A worker's main loop, until SIGTERM/SIGINT: survives Redis going away and coming back.

    `SimpleWorker` runs jobs in this process, so a speech model is loaded once per worker,
    not once per voicemail (rq's forking `Worker` would: measured 1.15 vs 0.61 CPU s per
    voicemail, bench/pipeline.py); a crash ends the process, and rq retries its job.
    """
    wait, warned = 1.0, False
    tag, started = worker_tag(), 0
    Pulse(redis_url, tag).start()
    while True:
        conn = redis.Redis.from_url(redis_url)
        try:
            conn.ping()
        except redis.RedisError as exc:
            if not warned:
                log.warning("waiting for Redis at REDIS_URL (%s)", type(exc).__name__)
                warned = True
            time.sleep(wait)
            wait = min(wait * 2, 5.0)  # a ping is cheap: notice Redis back within seconds
            continue
        if warned:
            log.warning("Redis is back; working again")
        wait, warned = 1.0, False
        started += 1  # a fresh name each time: rq refuses one a stale worker key still holds
        worker = SimpleWorker([Queue(namespace, connection=conn)], connection=conn,
                              name=f"{WORKER_PREFIX}{started}-{tag}")
        try:
            worker.work(with_scheduler=True)  # the scheduler runs retries that wait (rq Retry)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("lost Redis (%s); jobs wait in the database until it is back",
                        type(exc).__name__)
            warned = True
        finally:
            with contextlib.suppress(Exception):  # rq's pubsub thread would outlive this worker
                worker.unsubscribe()  # type: ignore[no-untyped-call]
        if worker._shutdown_requested_date is not None:  # rq saw SIGTERM or Ctrl-C
            return
        # rq also returns after giving up on a silent Redis: that is not a reason to stop.


JOBS: dict[str, Callable[[int], object]] = {voicemail.PROCESS_RECORDING: process_recording,
                                            callbacks.NOTIFY: notify_case,
                                            callbacks.CALLBACK: callback_case,
                                            casecode.CODE_BURST: tell_code_burst}


# --- the outbox ----------------------------------------------------------------------------


def redis_client(url: str) -> redis.Redis:
    # Short timeouts: a webhook must never wait on a dead Redis.
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)


def job_id_for(namespace: str, job: str, target: int) -> str:
    """An rq job id (its Redis key, `rq:job:ID`, is global): the install's namespace first."""
    return f"{namespace}-{job}-{target}"


class Outbox:
    def __init__(self, db: Database, redis_url: str, namespace: str = QUEUE) -> None:
        self.db = db
        self.redis_url = redis_url
        self.namespace = namespace  # this install's queue (REDIS_NAMESPACE)
        self.failed_at = -REDIS_BACKOFF  # monotonic time of the last failure to reach Redis
        self._queue: Queue | None = None  # one connection pool per process (redis-py is fork-aware)

    def flush_soon(self) -> int:
        """From a webhook: flush now unless Redis just failed (then the flusher thread will),
        so a dead Redis does not cost every voicemail a connection timeout."""
        if time.monotonic() - self.failed_at < REDIS_BACKOFF:
            return 0
        return self.flush()

    def flush(self, limit: int = 200) -> int:
        """Enqueue pending jobs; returns how many. Safe from several processes at once."""
        todo = self._pending(limit)
        if not todo:
            return 0
        if self._queue is None:
            self._queue = Queue(self.namespace, connection=redis_client(self.redis_url))
        queue = self._queue
        try:
            queue.connection.ping()
        except redis.RedisError as exc:
            self.failed_at = time.monotonic()
            self._note(todo, f"Redis unreachable: {type(exc).__name__}")
            return 0
        done = 0
        for job_id, job, target in todo:
            if not self._claim(job_id):  # another process got it first
                continue
            try:
                queue.enqueue(JOBS[job], target, job_id=job_id_for(self.namespace, job, target),
                              retry=RETRY,
                              failure_ttl=FAILURE_TTL)
                done += 1
            except redis.RedisError as exc:
                self.failed_at = time.monotonic()
                with self.db.session() as s:
                    s.execute(update(OutboxJob).where(OutboxJob.id == job_id)
                              .values(enqueued_at=None, last_error=type(exc).__name__))
                break
        return done

    def _pending(self, limit: int) -> list[tuple[int, str, int]]:
        with self.db.session() as s:
            rows = s.scalars(select(OutboxJob).where(OutboxJob.enqueued_at.is_(None))
                             .order_by(OutboxJob.id).limit(limit)).all()
            return [(j.id, j.job, j.target_id) for j in rows]

    def _claim(self, job_id: int) -> bool:
        with self.db.session() as s:
            claimed: int = s.execute(
                update(OutboxJob).where(OutboxJob.id == job_id, OutboxJob.enqueued_at.is_(None))
                .values(enqueued_at=utcnow(), last_error=None)
            ).rowcount  # type: ignore[attr-defined]
        return claimed == 1

    def run_here(self) -> int:
        """Claim pending jobs and run them in this process, as a worker would (`ivr call`)."""
        done = 0
        for job_id, job, target in self._pending(limit=1000):
            if self._claim(job_id):
                JOBS[job](target)
                done += 1
        return done

    def _note(self, todo: list[tuple[int, str, int]], error: str) -> None:
        with self.db.session() as s:
            s.execute(update(OutboxJob).where(OutboxJob.id.in_([t[0] for t in todo]))
                      .values(last_error=error))

    def pending(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count(OutboxJob.id)).where(OutboxJob.enqueued_at.is_(None)))
                       or 0)


class OutboxFlusher(threading.Thread):
    """Keeps flushing the outbox every few seconds in a web process (daemon thread), after
    `before` (draining the spool) and before `also` (the call counts)."""

    def __init__(self, outbox: Outbox, every: float,
                 also: tuple[Callable[[], object], ...] = (),
                 before: tuple[Callable[[], object], ...] = ()) -> None:
        super().__init__(name="outbox-flusher", daemon=True)
        self.outbox, self.every, self.also, self.before = outbox, every, also, before
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        failing: dict[int, str] = {}  # chore number -> the kind of trouble it last had
        chores = (*self.before, self.outbox.flush, *self.also)
        while not self.stopping.wait(self.every):
            for n, chore in enumerate(chores):  # each on its own: one failing stops no other
                try:
                    chore()
                except Exception as exc:
                    if failing.get(n) != type(exc).__name__:  # once per kind, not every tick
                        log.exception("outbox flusher: a chore failed; trying again every %s s",
                                      self.every)
                    failing[n] = type(exc).__name__
                else:
                    if failing.pop(n, None) is not None:
                        log.info("outbox flusher: the chore works again")
