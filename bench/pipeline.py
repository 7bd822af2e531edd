"""Voicemail pipeline: N voicemails through the webhooks to transcribed cases, one worker.

    .venv/bin/python bench/pipeline.py [--voicemails 30] [--workers 2] [--redis-outage]

One run: a throw-away folder with an SQLite database (or a PostgreSQL database made for the
run with --postgres URL, dropped after), a redis-server of its own, the Twilio REST stand-in
in this process, `gunicorn -c python:ivr.serving 'ivr:create_app()'` and one `ivr worker`
(not burst, with rq's scheduler). N callers then leave a voicemail each through the stand-in
phone over HTTP (English, "leave a message", a sentence spoken by espeak-ng, #), and the
database is polled until every case is transcribed. It prints how long that took,
voicemails per minute, the per-case latency, the webhooks' latency, the outbox waits, the
worker's CPU per voicemail (beside the same work in one warm process), whether the
recordings were deleted at the stand-in and whether the transcripts hold the spoken words.
The last line is `lost: K of N`: calls whose voicemail did not become a transcribed case.

`--redis-outage`: Redis is stopped after a third of the calls and started again after two
thirds, the middle third spread over `--outage-seconds`. Redis comes back empty, as one
without persistence does after a crash or restart (`--redis-keeps-data`: with an append-only
file). It reports the answers callers got meanwhile, the jobs that waited in the database
outbox, and what the worker did: a worker that exits is restarted as soon as Redis answers,
as a supervisor would (`--no-restart`: not), and that is reported. Voicemails that are left
with no job anywhere (nothing moves for `--stall-seconds`) are re-enqueued by hand with
`jobs.requeue_unfinished` and reported as such (`--no-recover`: stop there instead).
`--gap S` spaces the calls, so the worker is idle when Redis goes away.
`--simple-worker` is an experiment: the worker as rq's SimpleWorker (no fork per job).

It prints figures; it is not a pass/fail timing test (the exit status is 1 only when
voicemails were lost or calls failed).
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
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.servers, when run as `python bench/pipeline.py`
    sys.path.insert(0, str(ROOT))

from tests.servers import RedisServer, free_port  # noqa: E402

if TYPE_CHECKING:
    from ivr.standin import HttpReply, Phone, TwilioApi
    from ivr.storage import Database

PUBLIC_BASE = "https://hotline.bench.example"  # what the server thinks Twilio calls
HOTLINE = "+15005550006"
PRESSES = ["3", "3", "#"]  # flows/hotline.yaml: English, leave a message, end it with #
SENTENCES = [
    "I want to surrender. Please call me back tomorrow.",
    "My son was called up last week and we do not know where he is.",
    "Please help me, I need to talk to a lawyer about the army.",
    "I am calling for my brother, he is afraid to leave the house.",
    "Call me back in the evening after seven, it is safe then.",
]
DONE = ("transcribed", "transcription_failed")


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
               audio: list[bytes]) -> Placed:
    from ivr.standin import ScriptedCaller
    from ivr.twiml import APOLOGY

    sentence = index % len(audio)
    placed = Placed(index, phase, sentence, started=time.time())
    first = len(transport.seen)
    caller = ScriptedCaller(list(PRESSES), recording=audio[sentence])
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
    placed.goodbye = "Goodbye" in log.text()
    placed.errors += log.errors
    return placed


# --- processes -------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, clock ticks of itself and its reaped children), from /proc."""
    table: dict[int, tuple[int, int]] = {}
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return table
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state ppid ... utime stime cutime cstime (12th-15th)
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree_seconds(root: int) -> float | None:
    """CPU seconds of a process and all its descendants, live and reaped (None: gone)."""
    table = proc_table()
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _t) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += table[pid][1]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far, from /proc/stat (None where unreadable)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # all but idle and iowait, no guest
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


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
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
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
class WorkerEvent:
    at: float  # seconds since the first call
    what: str


class Workers:
    """One `ivr worker` at a time, watched: its CPU, and (like a supervisor) a restart when
    it exits, as soon as Redis answers again (`ivr worker` refuses to start without it)."""

    def __init__(self, env: dict[str, str], tmp: Path, redis_url: str, restart: bool,
                 simple: bool = False) -> None:
        self.env, self.tmp, self.redis_url, self.restart = env, tmp, redis_url, restart
        self.simple = simple
        self.baseline = 0.0  # CPU seconds spent starting up, before the first call
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.cpu: dict[int, float] = {}  # pid -> the latest CPU seconds seen for its tree
        self.events: list[WorkerEvent] = []
        self.t0 = time.time()
        self._reported: set[int] = set()  # pids whose exit is in `events`
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def start(self) -> None:
        log = self.tmp / f"worker-{len(self.procs) + 1}.log"
        cmd = [sys.executable, "-m", "ivr.cli", "worker"]
        if self.simple:  # the experiment: rq's SimpleWorker runs jobs in-process, no fork
            cmd = [sys.executable, "-c", "import rq; rq.Worker = rq.SimpleWorker; "
                   "from ivr.cli import main; main(['worker'])"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until rq has registered the worker in Redis."""
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + timeout
        while not Worker.all(connection=conn):
            if self.current.poll() is not None:
                raise SystemExit(f"bench: `ivr worker` exited ({self.current.returncode}):\n"
                                 f"{tail(self.logs[-1])}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: `ivr worker` did not start:\n{tail(self.logs[-1])}")
            time.sleep(0.2)

    def watch(self, t0: float) -> None:
        self.t0 = t0
        self.baseline = self.cpu_seconds()
        self._thread.start()

    def _sample(self) -> None:
        for proc in self.procs:
            seconds = tree_seconds(proc.pid) if proc.poll() is None else None
            if seconds is not None:
                self.cpu[proc.pid] = max(seconds, self.cpu.get(proc.pid, 0.0))

    def _redis_up(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.3,
                                             socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                self._sample()
                proc = self.current
                code = proc.poll()
                if code is None:
                    continue
                if proc.pid not in self._reported:
                    self._reported.add(proc.pid)
                    last = [ln for ln in tail(self.logs[-1], 40).splitlines() if ln.strip()]
                    why = next((ln for ln in reversed(last) if "quitting" in ln or "Error" in ln),
                               last[-1] if last else "")
                    self.events.append(WorkerEvent(time.time() - self.t0,
                                                   f"worker {len(self.procs)} exited ({code}): "
                                                   f"{why.strip()[:160]}"))
                if self.restart and self._redis_up():
                    self.start()
                    self.events.append(WorkerEvent(time.time() - self.t0,
                                                   f"worker {len(self.procs)} started by the bench"))

    def cpu_seconds(self) -> float:
        """CPU seconds of every worker so far (a restarted one's start-up included)."""
        with self._lock:
            self._sample()
            return sum(self.cpu.values())

    def exits(self) -> int:
        return sum(1 for e in self.events if "exited" in e.what)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            self._sample()
            for proc in self.procs:
                stop_process(proc)

    def log_lines(self, pattern: str) -> Counter[str]:
        """Distinct worker log lines matching the pattern (timestamps, pids and ids cut)."""
        found: Counter[str] = Counter()
        for log in self.logs:
            for line in tail(log, 100_000).splitlines():
                if re.search(pattern, line):
                    text = re.sub(r"^\d\d:\d\d:\d\d (Worker \w+: )?", "", line.strip())
                    text = re.sub(r"[0-9a-f]{32}|\d+", "#", text)
                    found[text[:150]] += 1
        return found


class KeptRedis(RedisServer):
    """A redis-server that writes an append-only file, so a restart keeps the queue."""

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is needed (apt-get install redis-server)")
        import redis

        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:  # also "loading the dataset in memory"
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)


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
        return [CaseRow(c.id, sid, c.status, c.status_reason, c.created_at, c.transcribed_at, rsid)
                for c, sid, rsid in rows]


def read_outbox(db: Database) -> list[tuple[datetime, datetime | None]]:
    from sqlalchemy import select

    from ivr.storage import OutboxJob

    with db.session() as s:
        return [(j.created_at, j.enqueued_at) for j in s.scalars(select(OutboxJob))]


def jobs_anywhere(redis_url: str) -> int | None:
    """rq jobs of the `ivr` queue that exist: queued, running or waiting for a retry."""
    import redis
    from rq import Queue

    from ivr import jobs

    try:
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        queue = Queue(jobs.QUEUE, connection=conn)
        scheduled = queue.scheduled_job_registry.get_job_ids()
        return int(queue.count + queue.started_job_registry.count
                   + len([j for j in scheduled if j != "purge-expired"]))
    except redis.RedisError:
        return None


def purge_scheduled(redis_url: str) -> bool | None:
    """Whether the worker's hourly purge job (retention, stalled voicemails) exists in Redis."""
    import redis
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from ivr import jobs

    try:
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        Job.fetch("purge-expired", connection=conn)
        return "purge-expired" in Queue(jobs.QUEUE, connection=conn).scheduled_job_registry.get_job_ids()
    except NoSuchJobError:
        return False
    except redis.RedisError:
        return None


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
    return re.findall(r"[a-z]+", text.lower())


def recall(sentence: str, transcript: str) -> float:
    """The share of the sentence's words of four letters or more found in the transcript."""
    wanted = [w for w in words(sentence) if len(w) >= 4]
    heard = set(words(transcript))
    return sum(w in heard for w in wanted) / len(wanted) if wanted else 1.0


def calibrate(audio: list[bytes], engines: str, threads: int) -> tuple[float, float]:
    """CPU seconds to load the speech model once, and to transcribe one message (mean)."""
    from ivr import transcribe as asr

    started = time.process_time()
    engine = asr.transcriber_for(asr.parse_engines(engines), "en", threads)
    load = time.process_time() - started
    started = time.process_time()
    for wav in audio:
        engine.transcribe(wav)
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


def run(args: argparse.Namespace, tmp: Path, database_url: str, stack: contextlib.ExitStack) -> int:
    import redis
    from rq import Queue

    from ivr import jobs
    from ivr.casebook import show_case
    from ivr.config import load_settings
    from ivr.keys import new_master_key
    from ivr.standin import Phone, TwilioApi, synthesize
    from ivr.storage import Database, Vault

    logging.getLogger("ivr").setLevel(logging.ERROR)  # the bench prints what it does itself
    n, outage = args.voicemails, args.redis_outage
    audio = [synthesize(s) for s in SENTENCES]
    token = "bench-" + secrets.token_hex(16)
    api = TwilioApi("AC" + secrets.token_hex(16), token)
    api.start()
    stack.callback(api.stop)
    (tmp / "redis").mkdir()
    rs: RedisServer = (KeptRedis if args.redis_keeps_data else RedisServer)(tmp / "redis")
    rs.start()
    stack.callback(rs.stop)
    env = server_env(args, tmp, api, rs.url, database_url, new_master_key(), token)
    settings = load_settings(env)
    load_cpu, asr_cpu = calibrate(audio, settings.transcribe_engines, settings.transcribe_threads)

    done = subprocess.run([sys.executable, "-m", "ivr.cli", "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"bench: `ivr db upgrade` failed:\n{done.stdout}{done.stderr}")
    web = Web(args.workers, env, tmp)
    stack.callback(web.stop)
    workers = Workers(env, tmp, rs.url, restart=not args.no_restart, simple=args.simple_worker)
    stack.callback(workers.stop)
    workers.start()
    web.wait_ready()
    workers.wait_ready()

    db = Database(database_url)
    stack.callback(db.engine.dispose)
    transport = TimedTransport(PUBLIC_BASE, web.url)
    phone = Phone(transport, PUBLIC_BASE, token, api.account_sid, HOTLINE, api=api)
    where = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"pipeline: {n} voicemails, {where}, gunicorn --workers {args.workers}, one `ivr worker`, "
          f"engines {settings.transcribe_engines} ({settings.transcribe_threads} thread(s))"
          + (" (as rq's SimpleWorker: an experiment)" if args.simple_worker else "")
          + (f"; Redis stopped from call {n // 3 + 1} to call {2 * n // 3} "
             f"(>= {args.outage_seconds:g} s, restarted "
             f"{'with its data' if args.redis_keeps_data else 'empty'})" if outage else ""),
          flush=True)

    # --- the calls
    placed: list[Placed] = []
    web_before = tree_seconds(web.proc.pid)
    busy_before, bench_before = cpu_busy_seconds(), time.process_time()
    t0 = time.time()
    workers.watch(t0)
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
        placed.append(place_call(phone, transport, i, phase, audio))
    calls_end = time.time()
    print(f"  {calls_end - t0:6.1f} s  {n} calls placed; waiting for the transcripts", flush=True)

    # --- waiting for the cases
    sids = {p.call_sid: p for p in placed if p.call_sid}
    deadline = time.monotonic() + args.timeout
    still_since, last_done = time.monotonic(), -1
    stalled, recovered_at, recovered_at_s, purge_at_stall = False, None, 0.0, False
    missing_before_recovery: int | None = None  # would be lost without the hand re-enqueue
    while True:
        cases = [c for c in read_cases(db) if c.call_sid in sids]
        finished = sum(c.status in DONE for c in cases)
        if finished >= len(sids) and len(cases) >= len(sids):
            break
        if finished != last_done:
            still_since, last_done = time.monotonic(), finished
        if args.no_restart and workers.current.poll() is not None:
            time.sleep(1.0)  # let the watcher note the exit
            print(f"  {time.time() - t0:6.1f} s  the worker exited and --no-restart: "
                  f"{finished} of {len(sids)} done", flush=True)
            break
        if time.monotonic() > deadline:
            print(f"  {time.time() - t0:6.1f} s  timeout: {finished} of {len(sids)} done", flush=True)
            break
        # Nothing moves and no job exists anywhere: the voicemails wait for a re-run that
        # `ivr worker` schedules only hourly, for recordings older than an hour.
        if (time.monotonic() - still_since > args.stall_seconds and jobs_anywhere(rs.url) == 0
                and jobs.Outbox(db, rs.url).pending() == 0):
            if stalled or not args.recover:
                print(f"  {time.time() - t0:6.1f} s  stalled: {len(sids) - finished} voicemail(s) "
                      "have no job anywhere", flush=True)
                stalled = True
                break
            stalled, missing_before_recovery = True, len(sids) - finished
            conn = redis.Redis.from_url(rs.url)
            queue = Queue(jobs.QUEUE, connection=conn)
            purge_at_stall = "purge-expired" in queue.scheduled_job_registry.get_job_ids()
            recovered = jobs.requeue_unfinished(db, queue, timedelta(0))
            recovered_at = time.time()
            recovered_at_s = recovered_at - t0
            print(f"  {recovered_at - t0:6.1f} s  stalled: {len(sids) - finished} voicemail(s) "
                  f"had no job anywhere; re-enqueued {recovered} by hand (jobs.requeue_unfinished)",
                  flush=True)
            still_since = time.monotonic()
        time.sleep(0.5)
    end = time.time()
    worker_cpu = workers.cpu_seconds() - workers.baseline
    web_after = tree_seconds(web.proc.pid)
    web_cpu = web_after - web_before if web_after is not None and web_before is not None else None
    busy_after, bench_cpu = cpu_busy_seconds(), time.process_time() - bench_before
    other = None  # CPU the rest of the machine used meanwhile, as a share of all CPUs
    if busy_before is not None and busy_after is not None:
        ours = worker_cpu + (web_cpu or 0.0) + bench_cpu
        other = max(0.0, busy_after - busy_before - ours) / ((end - t0) * (os.cpu_count() or 1))
    waits = [(e - c).total_seconds() for c, e in read_outbox(db) if e is not None]
    unsent = sum(1 for _c, e in read_outbox(db) if e is None)

    # --- the figures
    cases = [c for c in read_cases(db) if c.call_sid in sids]
    transcribed = [c for c in cases if c.status == "transcribed"]
    failed = [c for c in cases if c.status == "transcription_failed"]
    vault = Vault(jobs.keyring_for(settings))
    scores: list[float] = []
    for c in transcribed:
        shown = show_case(db, vault, c.id, actor="bench")
        text = (shown or {}).get("transcript") or ""
        scores.append(recall(SENTENCES[sids[c.call_sid].sentence], text))
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
    r.add("worker CPU per voicemail", f"{per:.2f} s ({worker_cpu:.1f} s in all, "
          f"{len(workers.procs)} worker process(es))")
    r.add("  same work in one warm process", f"{asr_cpu:.2f} s transcription + model load "
          f"{load_cpu:.2f} s once")
    r.add("web CPU per call", f"{web_cpu / n * 1000:.0f} ms" if web_cpu is not None else "n/a")
    r.add("transcripts hold the words", f"{statistics.mean(scores) * 100:.0f}% of the spoken words "
          f"(min {min(scores) * 100:.0f}%, {sum(s >= 0.5 for s in scores)} of {len(scores)} "
          "at >= 50%)" if scores else "-")
    if other is not None:
        r.add("other processes' CPU meanwhile", f"{other * 100:.0f}% of {os.cpu_count()} CPUs")
        if other > 0.1:
            r.notes.append("other processes were busy during the run: the times are longer than "
                           "on a quiet machine; CPU per voicemail is the steadier figure")
    purge = purge_scheduled(rs.url)
    r.add("hourly purge job in Redis at the end", {True: "yes", False: "NO", None: "?"}[purge])
    r.add("worker exits / restarts", f"{workers.exits()} / {max(0, len(workers.procs) - 1)}")
    print()
    r.print()

    if outage and down_at is not None and up_at is not None:
        print(f"\nRedis down {down_at - t0:.1f} s -> {up_at - t0:.1f} s ({up_at - down_at:.1f} s)")
        resumed = sorted(c.transcribed.timestamp() for c in cases
                         if c.transcribed is not None and c.transcribed.timestamp() > up_at)
        if resumed:
            print(f"first transcript after Redis was back: {resumed[0] - up_at:.1f} s later")
    for e in workers.events:
        print(f"  {e.at:6.1f} s  {e.what}")
    lines = workers.log_lines(r"^(\d\d:\d\d:\d\d .*(Redis|quitting|exception|Scheduler)"
                              r"|redis\.exceptions\.|Process Scheduler)")
    if any(re.search(r"could not|quitting|exception|Error", text) for text in lines):
        print("worker log: lines about Redis, the scheduler and exits (count, numbers as #):")
        for text, count in lines.most_common(8):
            print(f"  {count:4d}  {text}")
    if per > asr_cpu + load_cpu / 2 and len(transcribed) > 3:
        r.notes.append(f"the worker spends {per:.2f} CPU s per voicemail where one warm process "
                       f"needs {asr_cpu:.2f} s: rq's Worker forks a work horse per job, so the "
                       "speech model the horse loads is thrown away with it")
    lost = n - len(transcribed)
    if missing_before_recovery is not None:
        r.notes.append(
            f"{missing_before_recovery} voicemail(s) were in the database with no job left in Redis "
            "(the queue went with Redis' contents; the outbox had marked them enqueued). `ivr "
            "worker` re-runs such voicemails only from its hourly purge job, and only once they "
            "are an hour old; that job lives in Redis too, and was "
            + ("scheduled again by the restarted worker" if purge_at_stall
               else "not there any more (only a worker start schedules it)")
            + f". The bench re-enqueued them by hand at {recovered_at_s:.0f} s")
    elif stalled:
        r.notes.append(f"{lost} voicemail(s) have no job anywhere (see --no-recover)")
    for p in failed_calls[:5]:
        r.notes.append(f"call {p.index + 1} ({p.phase}): "
                       + ("; ".join(p.errors[:3]) or "no goodbye heard"))
    for note in r.notes:
        print(f"note: {note}")
    if failed_calls:
        print(f"web log (last lines):\n{tail(web.log)}")
    if missing_before_recovery is not None:
        print(f"lost: {lost} of {n} ({missing_before_recovery} of them only after the bench "
              "re-enqueued them by hand: without that, at least an hour late)")
    else:
        print(f"lost: {lost} of {n}")
    return 1 if lost or failed_calls else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--voicemails", type=int, default=30, help="calls, each leaving one voicemail")
    p.add_argument("--workers", type=int, default=2, help="gunicorn web workers")
    p.add_argument("--gap", type=float, default=0.0, help="seconds between the starts of calls")
    p.add_argument("--redis-outage", action="store_true",
                   help="stop Redis after a third of the calls, start it after two thirds")
    p.add_argument("--outage-seconds", type=float, default=20.0,
                   help="how long Redis stays down at least (the middle third spreads over it)")
    p.add_argument("--redis-keeps-data", action="store_true",
                   help="Redis writes an append-only file, so a restart keeps the queue")
    p.add_argument("--no-restart", action="store_true",
                   help="do not restart `ivr worker` when it exits")
    p.add_argument("--no-recover", dest="recover", action="store_false",
                   help="when voicemails have no job left anywhere, stop instead of "
                        "re-enqueueing them by hand")
    p.add_argument("--stall-seconds", type=float, default=20.0,
                   help="no progress and no job anywhere for this long: stalled")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for transcripts")
    p.add_argument("--postgres", metavar="URL", default=None,
                   help="a PostgreSQL server to make a throw-away database on, e.g. "
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--simple-worker", action="store_true",
                   help="an experiment: the worker as rq's SimpleWorker (no fork per job), "
                        "not what `ivr worker` runs")
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
