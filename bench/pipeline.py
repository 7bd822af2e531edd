"""Voicemail pipeline: N voicemails through the webhooks to transcribed cases, one worker.

    .venv/bin/python bench/pipeline.py [--voicemails 30] [--workers 2] [--redis-outage]

One run: a throw-away folder with an SQLite database (or a PostgreSQL database made for the
run with --postgres URL, dropped after), a redis-server of its own, the Twilio REST stand-in
in this process, `gunicorn -c python:ivr.serving 'ivr:create_app()'` and one `ivr worker`
(not burst: rq's SimpleWorker with its scheduler, and the housekeeper thread). N callers then
leave a voicemail each through the stand-in phone over HTTP (English, "leave a message", a
sentence spoken by espeak-ng, #), and the database is polled until every case is transcribed.
It prints how long that took, voicemails per minute, the per-case latency, the webhooks'
latency, the outbox waits, the worker's CPU per voicemail (beside the same work in one warm
process), whether the recordings were deleted at the stand-in, whether the transcripts hold
the spoken words, and the state of the hourly retention in Redis (`ivr:purge-due`, the
`purge-expired-*` jobs). The last line is `lost: K of N`: calls whose voicemail did not
become a transcribed case.

`--redis-outage`: Redis is stopped after a third of the calls and started again after two
thirds, the middle third spread over `--outage-seconds`. Redis comes back empty, as one
without persistence does after a crash or restart (`--redis-keeps-data`: with an append-only
file). It reports the answers callers got meanwhile, the jobs that waited in the database
outbox, and whether the worker exited (it should wait for Redis; it is not restarted, and an
exit is reported as a finding). Voicemails left with no job anywhere (nothing moves for
`--stall-seconds`) are reported as a stall, and the bench waits (`--timeout`, 300 s after
the last call) for the worker's housekeeper to re-enqueue them, reporting when it did.
`--gap S` spaces the calls, so the worker is idle when Redis goes away.

It prints figures; it is not a pass/fail timing test (the exit status is 1 only when
voicemails were lost, calls failed or the worker exited).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.servers, when run as `python bench/pipeline.py`
    sys.path.insert(0, str(ROOT))

from bench.procfs import cpu_busy_seconds, proc_table  # noqa: E402
from tests.servers import RedisServer, free_port  # noqa: E402

if TYPE_CHECKING:
    from ivr.standin import HttpReply, Phone, TwilioApi
    from ivr.storage import Database

PUBLIC_BASE = "https://hotline.bench.example"  # what the server thinks Twilio calls
HOTLINE = "+15005550006"
PRESSES = ["3", "3", "#", "1"]  # flows/hotline.yaml: English, a message ended with #, callback: any
LANGUAGE_KEY = {"ru": "1", "uk": "2", "en": "3"}  # the hotline's first menu
CLIPS = ROOT / "examples" / "speech"  # --language ru|uk: the shared synthetic clips (refs.tsv)
SENTENCES = [
    "I want to surrender. Please call me back tomorrow.",
    "My son was called up last week and we do not know where he is.",
    "Please help me, I need to talk to a lawyer about the army.",
    "I am calling for my brother, he is afraid to leave the house.",
    "Call me back in the evening after seven, it is safe then.",
]
DONE = ("transcribed", "transcription_failed")  # and routed: see read_cases


# --- the callers ---------------------------------------------------------------------------


@dataclass
class Webhook:
    path: str
    status: int
    seconds: float


class TimedTransport:
    """HTTP to the running server, timing every webhook; a refused connection is a 599."""

    def __init__(self, public_base: str, server: str) -> None:
        from ivr.standin import HttpTransport

        self.inner = HttpTransport(public_base, server)
        self.base = public_base
        self.seen: list[Webhook] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        from ivr.standin import HttpReply

        started = time.perf_counter()
        try:
            reply = self.inner.post(url, params, headers)
        except OSError as exc:  # Twilio would count it as a failed webhook and go to the fallback
            reply = HttpReply(599, "text/plain", f"{type(exc).__name__}: {exc}")
        path = url[len(self.base):].split("?", 1)[0] if url.startswith(self.base) else url
        self.seen.append(Webhook(path, reply.status, time.perf_counter() - started))
        return reply


@dataclass
class Placed:
    index: int
    phase: str  # all; or before / outage / after
    sentence: int
    call_sid: str = ""
    started: float = 0.0  # time.time()
    seconds: float = 0.0  # the whole call: every webhook one after another
    webhooks: list[Webhook] = field(default_factory=list)
    apology: bool = False
    goodbye: bool = False
    errors: list[str] = field(default_factory=list)


def place_call(phone: Phone, transport: TimedTransport, index: int, phase: str,
               audio: list[bytes], language: str = "en") -> Placed:
    from ivr.standin import ScriptedCaller
    from ivr.twiml import APOLOGY

    sentence = index % len(audio)
    placed = Placed(index, phase, sentence, started=time.time())
    first = len(transport.seen)
    caller = ScriptedCaller([LANGUAGE_KEY[language], *PRESSES[1:]], recording=audio[sentence])
    number = f"+7916{secrets.randbelow(10**7):07d}"
    t0 = time.perf_counter()
    try:
        log = phone.call(number, caller)
    except Exception as exc:  # the bench's own side failed: count it, go on
        placed.errors.append(f"{type(exc).__name__}: {exc}")
        placed.seconds = time.perf_counter() - t0
        return placed
    placed.seconds = time.perf_counter() - t0
    placed.call_sid = phone.call_sid
    placed.webhooks = transport.seen[first:]
    sorry = {t["sorry"] for t in APOLOGY.values()}
    placed.apology = any(h.text in sorry for h in log.heard)
    placed.goodbye = any(bye in log.text() for bye in ("Goodbye", "До свидания", "До побачення"))
    placed.errors += log.errors
    return placed


# --- processes -------------------------------------------------------------------------------


def tree_seconds(root: int) -> float | None:
    """CPU seconds of a process and all its descendants, live and reaped (None: gone)."""
    table = proc_table(with_reaped_children=True)
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _t, _s) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += table[pid][1]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[bytes], wait: float = 20.0) -> None:
    """SIGTERM (gunicorn and rq stop gracefully), then SIGKILL to the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # a left-over work horse or scheduler
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class Web:
    """gunicorn with the real app, as the Procfile's `web` runs it."""

    def __init__(self, workers: int, env: dict[str, str], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "web.log"
        self.token = env.setdefault("HEALTHZ_TOKEN", secrets.token_urlsafe(32))  # /healthz details
        cmd = [sys.executable, "-m", "gunicorn", "-c", "python:ivr.serving",
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "ivr:create_app()"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: gunicorn exited ({self.proc.returncode}):\n{tail(self.log)}")
            try:
                asked = urllib.request.Request(self.url + "/healthz",
                                               headers={"Authorization": f"Bearer {self.token}"})
                with urllib.request.urlopen(asked, timeout=5) as r:
                    health = json.load(r)
                if health.get("status") != "ok":
                    raise SystemExit(f"bench: the app is not healthy: {health}")
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: gunicorn did not start:\n{tail(self.log)}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class WorkerExit:
    at: float  # seconds since the first call
    code: int
    why: str  # the log line that says why


class WorkerProcess:
    """The one `ivr worker`, watched: the CPU of its process tree, and whether it exits.

    It is not restarted: `ivr worker` waits for Redis by itself, so an exit is a finding."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.log = tmp / "worker.log"
        self.baseline = 0.0  # CPU seconds spent starting up, before the first call
        self.cpu = 0.0  # the latest CPU seconds seen for its tree
        self.exit: WorkerExit | None = None
        self.t0 = self.started = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker"], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, redis_url: str, timeout: float = 60.0) -> None:
        """Until rq has registered the worker in Redis."""
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + timeout
        while not Worker.all(connection=conn):
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: `ivr worker` exited ({self.proc.returncode}):\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: `ivr worker` did not start:\n{tail(self.log)}")
            time.sleep(0.2)

    def watch(self, t0: float) -> None:
        self.t0 = t0
        self.baseline = self.cpu_seconds()
        self._thread.start()

    def _sample(self) -> None:
        seconds = tree_seconds(self.proc.pid) if self.proc.poll() is None else None
        if seconds is not None:
            self.cpu = max(seconds, self.cpu)

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                self._sample()
                code = self.proc.poll()
                if code is None or self.exit is not None:
                    continue
                last = [ln for ln in tail(self.log, 40).splitlines() if ln.strip()]
                why = next((ln for ln in reversed(last) if "quitting" in ln or "Error" in ln),
                           last[-1] if last else "")
                self.exit = WorkerExit(time.time() - self.t0, code, why.strip()[:160])

    def cpu_seconds(self) -> float:
        """CPU seconds of the worker's tree so far (reaped children, like rq's scheduler, too)."""
        with self._lock:
            self._sample()
            return self.cpu

    def children(self) -> int | None:
        """Live processes under the worker (rq's scheduler is one; zombies, dead but not yet
        reaped, do not count); None: the worker is gone."""
        table = proc_table(with_reaped_children=True)
        if self.proc.poll() is not None or self.proc.pid not in table:
            return None
        found, todo = 0, [self.proc.pid]
        while todo:
            parent = todo.pop()
            kids = [pid for pid, (ppid, _t, _s) in table.items() if ppid == parent]
            found += sum(1 for pid in kids if table[pid][2] != "Z")
            todo += kids
        return found

    def requeues(self) -> list[tuple[float | None, int]]:
        """(time.time() or None, count) of each `re-enqueued N voicemail(s)` the housekeeper
        logged (with a time where the line has the app's log format)."""
        found: list[tuple[float | None, int]] = []
        for line in tail(self.log, 100_000).splitlines():
            m = re.match(r"(?:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) \w+ ivr\.jobs: )?"
                         r"re-enqueued (\d+) voicemail", line)
            if m:  # the worker logs local time, as this process reads it
                at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() if m[1] else None
                found.append((at, int(m[2])))
        return found

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            self._sample()
            stop_process(self.proc)

    def log_lines(self, pattern: str) -> Counter[str]:
        """Distinct worker log lines matching the pattern (timestamps, pids and ids cut)."""
        found: Counter[str] = Counter()
        for line in tail(self.log, 100_000).splitlines():
            if re.search(pattern, line):
                text = re.sub(r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d(,\d+)? (Worker \w+: )?", "",
                              line.strip())
                text = re.sub(r"[0-9a-f]{32}|\d+", "#", text)
                found[text[:150]] += 1
        return found


# --- the database ----------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A database made for this run on the server of `admin_url`, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ivr_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise SystemExit(f"bench: cannot create a database on {admin_url}: {exc}") from None
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class CaseRow:
    id: int
    call_sid: str
    status: str
    reason: str | None
    created: datetime
    transcribed: datetime | None
    recording_sid: str


def read_cases(db: Database) -> list[CaseRow]:
    from sqlalchemy import select

    from ivr.storage import Call, Case, Recording

    with db.session() as s:
        rows = s.execute(select(Case, Call.call_sid, Recording.recording_sid)
                         .join(Call, Call.id == Case.call_id)
                         .join(Recording, Recording.id == Case.recording_id)).all()
        # A case is done once routed (to an operator, or escalated); it reads as how its
        # transcription went, which is what this bench measures.
        return [CaseRow(c.id, sid or "", c.status if c.routed_at is None and c.status == "new" else
                        "routing" if c.routed_at is None else
                        "transcribed" if c.transcript_engine else "transcription_failed",
                        c.status_reason, c.created_at, c.transcribed_at, rsid or "")
                for c, sid, rsid in rows]


def read_outbox(db: Database) -> list[tuple[datetime, datetime | None]]:
    from sqlalchemy import select

    from ivr.storage import OutboxJob

    with db.session() as s:
        return [(j.created_at, j.enqueued_at) for j in s.scalars(select(OutboxJob))]


def jobs_anywhere(redis_url: str) -> int | None:
    """Voicemail jobs in Redis: queued, running, waiting for a retry or deferred (None: no Redis).

    The registries are read without rq's cleanup, so looking changes nothing."""
    import redis
    from rq import Queue

    from ivr import jobs, voicemail

    try:
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        queue = Queue(jobs.QUEUE, connection=conn)
        ids = set(queue.get_job_ids())
        for registry in (queue.started_job_registry, queue.scheduled_job_registry,
                         queue.deferred_job_registry):
            ids.update(registry.get_job_ids(cleanup=False))
        return sum(1 for i in ids if i.startswith(f"{jobs.QUEUE}-{voicemail.PROCESS_RECORDING}-"))
    except redis.RedisError:
        return None


def rq_presence(redis_url: str) -> str:
    """rq workers registered in Redis, and connections subscribed to a channel (each rq worker
    listens on its own pubsub channel for commands): one of each is one healthy worker."""
    import redis
    from rq import Worker

    try:
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        registered = len(Worker.all(connection=conn))
        subscribed = sum(1 for c in conn.client_list()
                         if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0)
    except redis.RedisError as exc:
        return f"? (Redis: {type(exc).__name__})"
    return f"{registered} worker(s) registered, {subscribed} pubsub connection(s)"


PURGE_DUE = "ivr:purge-due"  # the housekeeper's key with REDIS_NAMESPACE=ivr (set in env below)


def purge_state(redis_url: str, t0: float) -> tuple[bool | None, str]:
    """Whether the hourly retention is in hand (the housekeeper's `ivr:purge-due` key, set for an
    hour when it enqueues a `purge-expired-<unix time>` job), and what Redis holds about it."""
    import redis
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from ivr import jobs

    prefix = Job.redis_job_namespace_prefix
    try:
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        ttl = int(conn.ttl(PURGE_DUE))
        runs = []
        for key in sorted(conn.scan_iter(match=f"{prefix}{jobs.QUEUE}-purge-expired-*")):
            job_id = key.decode()[len(prefix):]
            with contextlib.suppress(NoSuchJobError, ValueError):
                status = Job.fetch(job_id, connection=conn).get_status()
                enqueued = round(int(job_id.rsplit("-", 1)[1]) - t0)
                runs.append(f"enqueued at {enqueued} s {status.value if status else '?'}")
    except redis.RedisError as exc:
        return None, f"? (Redis: {type(exc).__name__})"
    due = (f"`{PURGE_DUE}` expires in {ttl / 60:.0f} min" if ttl >= 0
           else f"`{PURGE_DUE}` has no expiry" if ttl == -1
           else f"`{PURGE_DUE}` missing")
    return ttl > 0 and bool(runs), f"{due}; purge-expired-* jobs: {', '.join(runs) or 'none'}"


# --- figures ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "-"
    v = [x * scale for x in values]
    return (f"{pct(v, 0.5):.{digits}f} / {pct(v, 0.95):.{digits}f} / {max(v):.{digits}f} {unit}"
            f"  (n={len(v)})")


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())  # letters of any script (ru, uk)


def recall(sentence: str, transcript: str) -> float:
    """The share of the sentence's words of four letters or more found in the transcript."""
    wanted = [w for w in words(sentence) if len(w) >= 4]
    heard = set(words(transcript))
    return sum(w in heard for w in wanted) / len(wanted) if wanted else 1.0


def calibrate(audio: list[bytes], engines: str, threads: int, language: str = "en",
              cache: Path | None = None) -> tuple[float, float]:
    """CPU seconds to load the speech model once, and to transcribe one message (mean), as the
    worker does (language identification among ru, uk and en included)."""
    from ivr import transcribe as asr

    parsed = asr.parse_engines(engines)
    started = time.process_time()
    asr.transcriber_for(parsed, language, threads, cache or asr.DEFAULT_CACHE)
    load = time.process_time() - started
    asr.listen(audio[0], language, parsed, ("ru", "uk", "en"), threads, cache or asr.DEFAULT_CACHE)
    started = time.process_time()
    for wav in audio:
        asr.listen(wav, language, parsed, ("ru", "uk", "en"), threads, cache or asr.DEFAULT_CACHE)
    return load, (time.process_time() - started) / len(audio)


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))

    def print(self) -> None:
        width = max(len(n) for n, _ in self.rows)
        for name, value in self.rows:
            print(f"  {name:<{width}}  {value}")


def server_env(args: argparse.Namespace, tmp: Path, api: TwilioApi, redis_url: str,
               database_url: str, keys: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}
    env.update(
        IVR_ENV="development",
        IVR_DOTENV="/nonexistent",  # a developer's .env must not change what we measure
        TWILIO_ACCOUNT_SID=api.account_sid,
        TWILIO_AUTH_TOKEN=token,
        TWILIO_API_BASE=api.base_url,
        PUBLIC_BASE_URL=PUBLIC_BASE,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE="ivr",  # the bench reads the queue and the housekeeper's keys by name
        DATABASE_URL=database_url,
        INSTANCE_DIR=str(tmp / "instance"),
        FLOWS_DIR=str(ROOT / "flows"),
        HOTLINE_NUMBER=HOTLINE,
        ENTRY_FLOW="hotline",
        IVR_DATA_KEYS=keys,
        OUTBOX_FLUSH_SECONDS="1",
        LOG_LEVEL=args.log_level,
        HF_HUB_OFFLINE="1",
    )
    return env


@dataclass
class Stall:
    """Voicemails not done with no job for them anywhere (Redis came back empty, say)."""

    at: float  # seconds since the first call
    waiting: set[str]  # their call SIDs
    jobs_back: float | None = None  # when voicemail jobs were seen in Redis again


def run(args: argparse.Namespace, tmp: Path, database_url: str, stack: contextlib.ExitStack) -> int:
    from ivr import jobs
    from ivr.casebook import show_case
    from ivr.config import load_settings
    from ivr.keys import new_master_key
    from ivr.standin import Phone, TwilioApi, synthesize
    from ivr.storage import Database

    logging.getLogger("ivr").setLevel(logging.ERROR)  # the bench prints what it does itself
    n, outage = args.voicemails, args.redis_outage
    language = args.language
    if language == "en":
        texts, audio = SENTENCES, [synthesize(s) for s in SENTENCES]
    else:
        rows = [line.split("\t") for line in (CLIPS / "refs.tsv").read_text(encoding="utf-8").splitlines()]
        texts = [row[3] for row in rows if row[1] == language]
        audio = [(CLIPS / f"{row[0]}.wav").read_bytes() for row in rows if row[1] == language]
    token = "bench-" + secrets.token_hex(16)
    api = TwilioApi("AC" + secrets.token_hex(16), token)
    api.start()
    stack.callback(api.stop)
    (tmp / "redis").mkdir()
    rs = RedisServer(tmp / "redis", persist=args.redis_keeps_data)
    rs.start()
    stack.callback(rs.stop)
    env = server_env(args, tmp, api, rs.url, database_url, new_master_key(), token)
    settings = load_settings(env)
    load_cpu, asr_cpu = calibrate(audio, settings.transcribe_engines, settings.transcribe_threads, language,
                                  settings.model_cache)

    done = subprocess.run([sys.executable, "-m", "ivr.cli", "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"bench: `ivr db upgrade` failed:\n{done.stdout}{done.stderr}")
    web = Web(args.workers, env, tmp)
    stack.callback(web.stop)
    worker = WorkerProcess(env, tmp)
    stack.callback(worker.stop)
    web.wait_ready()
    worker.wait_ready(rs.url)

    db = Database(database_url)
    stack.callback(db.engine.dispose)
    outbox = jobs.Outbox(db, rs.url)
    transport = TimedTransport(PUBLIC_BASE, web.url)
    phone = Phone(transport, PUBLIC_BASE, token, api.account_sid, HOTLINE, api=api)
    where = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"pipeline: {n} voicemails, {where}, gunicorn --workers {args.workers}, one `ivr worker`, "
          f"engines {settings.transcribe_engines} ({settings.transcribe_threads} thread(s))"
          + (f"; Redis stopped from call {n // 3 + 1} to call {2 * n // 3} "
             f"(>= {args.outage_seconds:g} s, restarted "
             f"{'with its data' if args.redis_keeps_data else 'empty'})" if outage else ""),
          flush=True)

    # --- the calls
    placed: list[Placed] = []
    web_before = tree_seconds(web.proc.pid)
    busy_before, bench_before = cpu_busy_seconds(), time.process_time()
    t0 = time.time()
    worker.watch(t0)
    print(f"  {worker.started - t0:6.1f} s  `ivr worker` started (its housekeeper ticks every "
          f"60 s from then)", flush=True)
    down_at = up_at = None
    first_cut, second_cut = (n // 3, 2 * n // 3) if outage else (n, n)
    for i in range(n):
        phase = "all" if not outage else (
            "before" if i < first_cut else "outage" if i < second_cut else "after")
        if args.gap and placed and (phase != "outage" or i == first_cut):
            time.sleep(max(0.0, placed[-1].started + args.gap - time.time()))
        if i == first_cut and outage:
            rs.stop()
            down_at = time.time()
            print(f"  {down_at - t0:6.1f} s  Redis stopped after {i} calls", flush=True)
        if i == second_cut and outage and down_at is not None:
            time.sleep(max(0.0, down_at + args.outage_seconds - time.time()))
            rs.start()
            up_at = time.time()
            print(f"  {up_at - t0:6.1f} s  Redis started again after {i} calls", flush=True)
        if phase == "outage" and down_at is not None:
            gap = args.outage_seconds / max(1, second_cut - first_cut)
            time.sleep(max(0.0, down_at + (i - first_cut) * gap - time.time()))
        placed.append(place_call(phone, transport, i, phase, audio, args.language))
    calls_end = time.time()
    print(f"  {calls_end - t0:6.1f} s  {n} calls placed; waiting for the transcripts", flush=True)

    # --- waiting for the cases; stalled voicemails are left to the worker's housekeeper
    sids = {p.call_sid: p for p in placed if p.call_sid}
    deadline = time.monotonic() + args.timeout
    still_since, last_done = time.monotonic(), -1
    stall: Stall | None = None
    timed_out = False
    while True:
        cases = [c for c in read_cases(db) if c.call_sid in sids]
        finished = sum(c.status in DONE for c in cases)
        if finished >= len(sids) and len(cases) >= len(sids):
            break
        if finished != last_done:
            still_since, last_done = time.monotonic(), finished
        if worker.exit is not None:
            print(f"  {worker.exit.at:6.1f} s  `ivr worker` EXITED ({worker.exit.code}); nothing "
                  f"transcribes now: {finished} of {len(sids)} done", flush=True)
            break
        if time.monotonic() > deadline:
            print(f"  {time.time() - t0:6.1f} s  timeout: {finished} of {len(sids)} done", flush=True)
            timed_out = True
            break
        anywhere = jobs_anywhere(rs.url)
        if (stall is None and time.monotonic() - still_since > args.stall_seconds and anywhere == 0
                and outbox.pending() == 0):
            done_sids = {c.call_sid for c in cases if c.status in DONE}
            stall = Stall(time.time() - t0, set(sids) - done_sids)
            print(f"  {stall.at:6.1f} s  stalled: {len(stall.waiting)} voicemail(s) not done and no "
                  "job for them anywhere; waiting for the worker's housekeeper", flush=True)
        elif stall is not None and stall.jobs_back is None and anywhere:
            stall.jobs_back = time.time() - t0
            print(f"  {stall.jobs_back:6.1f} s  {anywhere} voicemail job(s) in Redis again", flush=True)
        time.sleep(0.5)
    end = time.time()
    worker_cpu = worker.cpu_seconds() - worker.baseline
    web_after = tree_seconds(web.proc.pid)
    web_cpu = web_after - web_before if web_after is not None and web_before is not None else None
    busy_after, bench_cpu = cpu_busy_seconds(), time.process_time() - bench_before
    other = None  # CPU the rest of the machine used meanwhile, as a share of all CPUs
    if busy_before is not None and busy_after is not None:
        ours = worker_cpu + (web_cpu or 0.0) + bench_cpu
        other = max(0.0, busy_after - busy_before - ours) / ((end - t0) * (os.cpu_count() or 1))
    waits = [(e - c).total_seconds() for c, e in read_outbox(db) if e is not None]
    unsent = sum(1 for _c, e in read_outbox(db) if e is None)
    children = worker.children()
    requeues = worker.requeues()
    presence = rq_presence(rs.url)

    # --- the figures
    cases = [c for c in read_cases(db) if c.call_sid in sids]
    transcribed = [c for c in cases if c.status == "transcribed"]
    failed = [c for c in cases if c.status == "transcription_failed"]
    vault = jobs.vault_for(settings)
    scores: list[float] = []
    for c in transcribed:
        shown = show_case(db, vault, c.id, actor="bench")
        text = (shown or {}).get("transcript") or ""
        scores.append(recall(texts[sids[c.call_sid].sentence], text))
    finished_at = [c.transcribed for c in cases if c.transcribed is not None]
    last = max(finished_at).timestamp() if finished_at else end
    wall = last - t0
    latency = {c.call_sid: (c.transcribed - c.created).total_seconds()
               for c in cases if c.transcribed is not None}
    deleted = set(api.deleted)
    rec_sids = {c.recording_sid for c in cases}
    hooks = [w for p in placed for w in p.webhooks]
    non200 = [w for w in hooks if w.status != 200]
    failed_calls = [p for p in placed if p.errors or not p.goodbye]

    def since_up(at: float) -> str:
        return f" ({at - up_at:.0f} s after Redis was back)" if up_at is not None else ""

    r = Report()
    r.add("calls placed", f"{n} in {calls_end - t0:.1f} s ({len(hooks)} webhooks)")
    r.add("webhook latency p50/p95/max", spread([w.seconds for w in hooks], "ms", 1000, 0))
    r.add("whole call p50/p95/max", spread([p.seconds for p in placed], "ms", 1000, 0))
    r.add("webhooks not answered 200", f"{len(non200)}"
          + (f" ({', '.join(f'{k} {v}' for k, v in Counter(f'{w.status} {w.path}' for w in non200).items())})"
             if non200 else ""))
    r.add("calls that heard the apology", f"{sum(p.apology for p in placed)}")
    r.add("calls that ended with goodbye", f"{sum(p.goodbye for p in placed)} of {n}")
    r.add("cases created", f"{len(cases)} of {n} calls")
    r.add("cases transcribed", f"{len(transcribed)} (failed: {len(failed)}"
          + (f": {Counter(c.reason for c in failed).most_common(2)}" if failed else "") + ")")
    r.add("first call -> last transcript", f"{wall:.1f} s")
    r.add("voicemails per minute", f"{len(transcribed) / wall * 60:.1f}" if wall > 0 else "-")
    r.add("case latency p50/p95/max", spread(list(latency.values())) + "  (created -> transcribed)")
    if outage:
        for phase in ("before", "outage", "after"):
            r.add(f"  calls {phase} the outage" if phase != "outage" else "  calls during the outage",
                  spread([latency[p.call_sid] for p in placed if p.phase == phase
                          and p.call_sid in latency]))
        during = [p for p in placed if p.phase == "outage"]
        r.add("webhooks p50/max during the outage",
              spread([w.seconds for p in during for w in p.webhooks], "ms", 1000, 0))
    late = [w for w in waits if w > 0.5]
    r.add("outbox: jobs that waited > 0.5 s", f"{len(late)} of {len(waits)} enqueued"
          + (f", {unsent} never enqueued" if unsent else ""))
    r.add("outbox: longest wait", f"{max(waits):.1f} s" if waits else "-")
    r.add("recordings deleted at the stand-in", f"{len(deleted & rec_sids)} of {n}"
          + (f" ({len(rec_sids - deleted)} still there)" if rec_sids - deleted else ""))
    per = worker_cpu / max(1, len(transcribed))
    r.add("worker CPU per voicemail", f"{per:.2f} s ({worker_cpu:.1f} s in all)")
    r.add("  same work in one warm process", f"{asr_cpu:.2f} s transcription + model load "
          f"{load_cpu:.2f} s once")
    if latency:
        p50 = statistics.median(latency.values())
        r.add("goal: case latency p50 <= transcription + 2 s",
              f"{'met' if p50 <= asr_cpu + 2 else 'NOT met'} ({p50:.1f} s against {asr_cpu:.2f} + 2 s)")
    r.add("web CPU per call", f"{web_cpu / n * 1000:.0f} ms" if web_cpu is not None else "n/a")
    r.add("transcripts hold the words", f"{statistics.mean(scores) * 100:.0f}% of the spoken words "
          f"(min {min(scores) * 100:.0f}%, {sum(s >= 0.5 for s in scores)} of {len(scores)} "
          "at >= 50%)" if scores else "-")
    if other is not None:
        r.add("other processes' CPU meanwhile", f"{other * 100:.0f}% of {os.cpu_count()} CPUs")
        if other > 0.1:
            r.notes.append("other processes were busy during the run: the times are longer than "
                           "on a quiet machine; CPU per voicemail is the steadier figure")
    if stall is not None:
        r.add("stalled: no job left anywhere", f"{len(stall.waiting)} voicemail(s), seen at {stall.at:.0f} s")
    else:
        r.add("stalled: no job left anywhere", "none")
    r.add("housekeeper re-enqueued", ", ".join(
        f"{k}" + (f" at {at - t0:.0f} s{since_up(at)}" if at is not None else "")
        for at, k in requeues) + (" (worker log)" if requeues else "none")
        + (f"; voicemail jobs back in Redis at {stall.jobs_back:.0f} s{since_up(t0 + stall.jobs_back)}"
           if stall is not None and stall.jobs_back is not None else ""))
    recovered_done: list[float] = []
    if stall is not None:
        recovered_done = [c.transcribed.timestamp() for c in cases
                          if c.call_sid in stall.waiting and c.transcribed is not None]
        r.add("  stalled voicemails transcribed",
              f"{len(recovered_done)} of {len(stall.waiting)}"
              + (f", the last at {max(recovered_done) - t0:.0f} s{since_up(max(recovered_done))}"
                 if recovered_done else ""))
    purge_ok, purge_text = purge_state(rs.url, t0)
    if not purge_ok and up_at is not None and not args.redis_keeps_data:
        ticks = worker.started + 60 * (int((time.time() - worker.started) // 60) + 1)
        purge_text += (f" (Redis came back empty at {up_at - t0:.0f} s; the housekeeper's next "
                       f"tick, due at about {ticks - t0:.0f} s, sets it again)")
    r.add("hourly retention in Redis at the end",
          {True: "yes", False: "NO", None: "?"}[purge_ok] + f": {purge_text}")
    r.add("worker exits", "0" if worker.exit is None else
          f"1 — `ivr worker` EXITED ({worker.exit.code}) at {worker.exit.at:.1f} s")
    r.add("worker's child processes at the end", "-" if children is None
          else f"{children} (rq's scheduler is one)")
    r.add("rq in Redis at the end", presence)
    print()
    r.print()

    if outage and down_at is not None and up_at is not None:
        print(f"\nRedis down {down_at - t0:.1f} s -> {up_at - t0:.1f} s ({up_at - down_at:.1f} s)")
        resumed = sorted(c.transcribed.timestamp() for c in cases
                         if c.transcribed is not None and c.transcribed.timestamp() > up_at)
        if resumed:
            print(f"first transcript after Redis was back: {resumed[0] - up_at:.1f} s later")
    lines = worker.log_lines(r"^(\d\d:\d\d:\d\d .*(Redis|quitting|exception|Scheduler)"
                             r"|redis\.exceptions\.|Process Scheduler|.* (WARNING|ERROR|CRITICAL) "
                             r"|(.* ivr\.jobs: )?(waiting for|lost|Redis is back|re-enqueued|housekeeping))")
    if lines:
        print("worker log: warnings, and lines about Redis, the scheduler and exits "
              "(count, numbers as #):")
        for text, count in lines.most_common(10):
            print(f"  {count:4d}  {text}")
    if per > asr_cpu + load_cpu / 2 and len(transcribed) > 3:
        r.notes.append(f"the worker spends {per:.2f} CPU s per voicemail where one warm process "
                       f"needs {asr_cpu:.2f} s: is the speech model loaded more than once per "
                       "worker? (`ivr worker` runs rq's SimpleWorker to keep it loaded)")
    lost = n - len(transcribed)
    if worker.exit is not None:
        r.notes.append(f"FINDING: `ivr worker` exited ({worker.exit.code}) at {worker.exit.at:.1f} s; it "
                       "should run until stopped and wait for Redis through an outage. Last telling "
                       f"log line: {worker.exit.why}")
    if stall is not None and recovered_done and len(recovered_done) == len(stall.waiting):
        r.notes.append(
            f"{len(stall.waiting)} voicemail(s) had no job left in Redis (the queue went with Redis' "
            "contents; the outbox had marked them enqueued). The worker's housekeeper re-enqueued "
            f"them by itself; the last was transcribed {max(recovered_done) - t0:.0f} s after the "
            "first call" + since_up(max(recovered_done)) + ". Expect up to LOST_AFTER (2 min) "
            "after the call plus one 60 s tick")
    elif stall is not None:
        r.notes.append(f"{len(stall.waiting) - len(recovered_done)} stalled voicemail(s) were not "
                       "recovered by the worker's housekeeper"
                       + (f" within --timeout {args.timeout:g} s" if timed_out else ""))
    for p in failed_calls[:5]:
        r.notes.append(f"call {p.index + 1} ({p.phase}): "
                       + ("; ".join(p.errors[:3]) or "no goodbye heard"))
    for note in r.notes:
        print(f"note: {note}")
    if failed_calls:
        print(f"web log (last lines):\n{tail(web.log)}")
    if worker.exit is not None:
        print(f"worker log (last lines):\n{tail(worker.log)}")
    print(f"lost: {lost} of {n}" + (f" ({len(recovered_done)} recovered by the worker's housekeeper)"
                                    if recovered_done else ""))
    return 1 if lost or failed_calls or worker.exit is not None else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--voicemails", type=int, default=30, help="calls, each leaving one voicemail")
    p.add_argument("--language", choices=("en", "ru", "uk"), default="en",
                   help="the callers' language: en speaks espeak-ng sentences, ru and uk play the "
                        "clips of examples/speech")
    p.add_argument("--workers", type=int, default=2, help="gunicorn web workers")
    p.add_argument("--gap", type=float, default=0.0, help="seconds between the starts of calls")
    p.add_argument("--redis-outage", action="store_true",
                   help="stop Redis after a third of the calls, start it after two thirds")
    p.add_argument("--outage-seconds", type=float, default=20.0,
                   help="how long Redis stays down at least (the middle third spreads over it)")
    p.add_argument("--redis-keeps-data", action="store_true",
                   help="Redis writes an append-only file, so a restart keeps the queue")
    p.add_argument("--stall-seconds", type=float, default=20.0,
                   help="no progress and no voicemail job anywhere for this long: report a stall "
                        "(then wait for the worker's housekeeper)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for transcripts after the last call (the housekeeper "
                        "needs up to about 3 min for voicemails an emptied Redis lost)")
    p.add_argument("--postgres", metavar="URL", default=None,
                   help="a PostgreSQL server to make a throw-away database on, e.g. "
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of web and worker")
    p.add_argument("--keep", action="store_true", help="keep the throw-away folder (logs)")
    args = p.parse_args(argv)
    if args.voicemails < (3 if args.redis_outage else 1):
        p.error("--voicemails must be at least 3 with --redis-outage, else at least 1")
    for tool in ("redis-server", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (apt-get install -y redis-server espeak-ng sox)",
                  file=sys.stderr)
            return 2

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="ivr-pipeline-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(postgres_database(args.postgres))
            else:
                url = f"sqlite:///{tmp / 'ivr.db'}"
            return run(args, tmp, url, stack)
    finally:
        if args.keep:
            print(f"bench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
