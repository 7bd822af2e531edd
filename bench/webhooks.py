"""Webhook throughput: the real app under gunicorn against a static-TwiML baseline.

    .venv/bin/python bench/webhooks.py [--duration 10] [--connections 64] [--workers 2]

One run: walks calls through the Twilio stand-in in-process to record the signed webhooks
Twilio would send (state travels in the signed action URLs, so every request replays on its
own), starts `gunicorn -c python:ivr.serving 'ivr:create_app()'` and the same gunicorn with
bench/static_app.py on free 127.0.0.1 ports, drives both with wrk cycling through the same
requests, and prints req/s, p50, p99, errors and server CPU per request. The last line is
`ratio full/static: X.XX`. `--profile` instead times the same requests in-process through a
raw WSGI call and prints where the full app's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import pstats
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from wsgiref.types import WSGIApplication, WSGIEnvironment

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench.procfs and tests.servers, when run as a script
    sys.path.insert(0, str(ROOT))
PUBLIC_BASE = "https://hotline.bench.example"  # what the server thinks Twilio calls
CALLERS = ["+79161234567", "+380441234567", "+4915112345678", "anonymous", "+79781234567"]
KEYS = ["1", "1", "2", "2", "3", "4", "5", "9", "0", "*", "wait"]  # weighted: menus use low keys
GOAL_RATIO, GOAL_P99_MS = 0.5, 50.0


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str  # path and query, as Twilio requests it under the public base URL
    body: str  # form-encoded parameters
    signature: str


class RandomCaller:
    """A caller pressing seeded-random keys: walks whatever flow is loaded, deterministically."""

    def __init__(self, rng: random.Random, actions: int) -> None:
        self.rng = rng
        self.left = actions

    def _spend(self) -> bool:
        self.left -= 1
        return self.left >= 0

    def hear(self, kind: str, text: str, locale: str) -> None:
        pass

    def keys(self, info: dict[str, str]) -> str:
        if not self._spend():
            return "hangup"
        if "speech" in info.get("input", "") and self.rng.random() < 0.1:
            return "say:" + (info.get("hints", "").split(",")[0].strip() or "english")
        return self.rng.choice(KEYS)

    def record(self, info: dict[str, str]) -> str:
        return self.rng.choice(["#", "#", "#", "wait"])

    def dial(self, numbers: list[str]) -> str:
        return self.rng.choice(["answer", "busy", "no-answer"])


class Recorder:
    """A stand-in transport: passes requests to the app in-process and keeps them."""

    def __init__(self, inner: Any, base: str) -> None:
        self.inner = inner
        self.base = base
        self.requests: list[Request] = []
        self.failed: list[str] = []
        self.waits: Counter[str] = Counter()  # the step each answer waits at

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        if not url.startswith(self.base + "/"):
            raise SystemExit(f"bench: the app sent Twilio to {url}, outside {self.base}")
        reply = self.inner.post(url, params, headers)
        path = url[len(self.base):]
        if reply.status != 200:
            self.failed.append(f"{reply.status} {path}")
        steps = reply.headers.get("X-IVR-Steps", "")
        if steps:
            self.waits[steps.rsplit(",", 1)[-1]] += 1
        self.requests.append(Request(path, urlencode(params), headers["X-Twilio-Signature"]))
        return reply


def server_env(flows_dir: Path, tmp: Path, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}
    env.update(
        IVR_ENV="development",
        IVR_DOTENV=str(tmp / "no.env"),  # a developer's .env must not change what we measure
        TWILIO_ACCOUNT_SID="AC" + "b" * 32,
        TWILIO_AUTH_TOKEN="bench-" + secrets.token_hex(16),
        PUBLIC_BASE_URL=PUBLIC_BASE,
        FLOWS_DIR=str(flows_dir.resolve()),
        INSTANCE_DIR=str(tmp / "instance"),
        DATABASE_URL=f"sqlite:///{tmp / 'ivr.db'}",
        KEYSTORE_URL=f"sqlite:///{tmp / 'keys.db'}",
        HOTLINE_NUMBER="+15005550006",
        ENTRY_FLOW="hotline",
        TRANSFER_NUMBERS="+380441112233",
        LOG_LEVEL=log_level,
    )
    return env


@contextlib.contextmanager
def own_redis(folder: Path) -> Iterator[str]:
    """A redis-server of the benchmark's own on a spare port, stopped at the end."""
    from tests.servers import RedisServer

    server = RedisServer(folder)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def record_workload(
    env: dict[str, str], calls: int, seed: int
) -> tuple[list[Request], Counter[str]]:
    """Walk `calls` calls through the stand-in and keep every webhook Twilio would send."""
    from ivr import create_app
    from ivr.config import load_settings
    from ivr.standin import FlaskTransport, Phone

    settings = load_settings(env)
    app = create_app(settings.replace(log_level="WARNING"))
    recorder = Recorder(FlaskTransport(app), settings.public_base_url)
    phone = Phone(recorder, settings.public_base_url, settings.twilio_auth_token,
                  settings.twilio_account_sid, settings.hotline_number)
    rng = random.Random(seed)
    errors: list[str] = []
    for i in range(calls):
        log = phone.call(CALLERS[i % len(CALLERS)], RandomCaller(rng, rng.randint(2, 8)))
        errors += log.errors
    if recorder.failed or errors:
        problems = sorted(set(recorder.failed + errors))
        raise SystemExit("bench: the app failed while recording the workload:\n  "
                         + "\n  ".join(problems[:10]))
    return recorder.requests, recorder.waits


def describe(requests: list[Request]) -> str:
    kinds: Counter[str] = Counter()
    for r in requests:
        parts = urlsplit(r.path)
        event = parse_qs(parts.query).get("e", [""])[0]
        kinds[parts.path.removeprefix("/twilio/") + (f":{event}" if event else "")] += 1
    return ", ".join(f"{k} {n}" for k, n in kinds.most_common())


# --- wrk ---------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    out = []
    for b in text.encode():
        out.append(f"\\{b:03d}" if b < 32 or b > 126 or b in b'"\\' else chr(b))
    return '"' + "".join(out) + '"'


LUA = """
local reqs, counter, threads = {}, 0, {}
bad = 0  -- a global, so done() can read it from each thread
local index = 0

function setup(thread)
  index = index + 1
  thread:set("first", (index - 1) * 7919)
  table.insert(threads, thread)
end

function init(args)
  local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
  for i, r in ipairs(data) do
    headers["X-Twilio-Signature"] = r[3]
    reqs[i] = wrk.format("POST", r[1], headers, r[2])
  end
  counter = (first or 0) % #reqs
end

function request()
  counter = counter % #reqs + 1
  return reqs[counter]
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("bench-non200: %d\\n", total))
end
"""


def write_lua(requests: list[Request], path: Path) -> None:
    rows = ",\n".join(
        f"  {{{lua_string(r.path)}, {lua_string(r.body)}, {lua_string(r.signature)}}}"
        for r in requests
    )
    path.write_text(f"data = {{\n{rows}\n}}\n{LUA}", encoding="ascii")


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non200: int
    socket_errors: int
    server_us: float | None  # server CPU per request
    wrk_us: float  # the load generator's own CPU per request
    worker_spread: str = ""  # each worker's share of the workers' CPU, in %
    other_load: float | None = None  # CPU used by other processes meanwhile, share of all


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(name: str, out: str) -> tuple[float, float, float, int, int, int]:
    """req/s, p50 ms, p99 ms, requests, non-200 responses, socket errors."""
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    except (AttributeError, ValueError) as exc:
        raise SystemExit(f"bench: cannot read wrk's output for {name} ({exc}):\n{out}") from None
    m = re.search(r"bench-non200: (\d+)", out)
    non200 = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non200 = max(non200, int(m.group(1)) if m else 0)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock = sum(int(g) for g in m.groups()) if m else 0
    return rps, p50, p99, total, non200, sock


def run_wrk(url: str, script: Path, seconds: float, connections: int) -> tuple[str, float]:
    """wrk's output, and the CPU seconds wrk itself used."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, cpu


# --- the servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_ticks(master: int) -> dict[int, int] | None:
    """utime+stime (clock ticks) of the gunicorn master and each worker, from /proc."""
    from bench.procfs import proc_table

    found = {pid: ticks for pid, (ppid, ticks, _state) in proc_table().items()
             if pid == master or ppid == master}
    return found or None


class Server:
    def __init__(self, name: str, target: str, workers: int, env: dict[str, str], tmp: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "gunicorn", "-c", "python:ivr.serving",
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), target]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def wait_ready(self, probe: Request, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.name} server exited ({self.proc.returncode}):\n"
                                 + self.tail())
            req = urllib.request.Request(
                self.url + probe.path, data=probe.body.encode(), method="POST",
                headers={"X-Twilio-Signature": probe.signature,
                         "Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
                    return
            except urllib.error.HTTPError as exc:
                raise SystemExit(f"bench: {self.name} answered {exc.code} to a signed webhook:\n"
                                 + self.tail()) from None
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: {self.name} did not start:\n{self.tail()}") from None
                time.sleep(0.1)

    def ticks(self) -> dict[int, int] | None:
        return process_ticks(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def servers(specs: list[tuple[str, str]], workers: int, env: dict[str, str],
            tmp: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for name, target in specs:
            started.append(Server(name, target, workers, env, tmp))
        yield started
    finally:
        for s in started:
            s.stop()


def measure(server: Server, script: Path, args: argparse.Namespace) -> Result:
    from bench.procfs import cpu_busy_ticks

    if args.warmup > 0:
        run_wrk(server.url, script, args.warmup, args.connections)
    clk = os.sysconf("SC_CLK_TCK")
    before, busy_before, t0 = server.ticks(), cpu_busy_ticks(), time.monotonic()
    out, wrk_cpu = run_wrk(server.url, script, args.duration, args.connections)
    after, busy_after, elapsed = server.ticks(), cpu_busy_ticks(), time.monotonic() - t0
    rps, p50, p99, total, non200, sock = parse_wrk(server.name, out)
    server_us, spread, other = None, "", None
    if before is not None and after is not None and total:
        used = {pid: t - before.get(pid, 0) for pid, t in after.items()}
        server_us = sum(used.values()) / clk * 1e6 / total
        if busy_before is not None and busy_after is not None:
            # CPU the rest of the machine used meanwhile, as a share of all CPUs
            rest = (busy_after - busy_before) / clk - sum(used.values()) / clk - wrk_cpu
            other = max(0.0, rest) / (elapsed * (os.cpu_count() or 1))
        workers = sorted((t for pid, t in used.items() if pid != server.proc.pid), reverse=True)
        if sum(workers):
            spread = "/".join(f"{100 * t / sum(workers):.0f}" for t in workers)
    if args.verbose:
        print(f"--- wrk, {server.name} ---\n{out}", file=sys.stderr)
    return Result(server.name, rps, p50, p99, total, non200, sock, server_us,
                  wrk_cpu * 1e6 / max(total, 1), spread, other)


def median_result(runs: list[Result]) -> Result:
    """Medians of each figure over repeated runs; errors are summed."""
    cpu = [r.server_us for r in runs if r.server_us is not None]
    return Result(
        runs[0].name,
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.requests for r in runs),
        sum(r.non200 for r in runs),
        sum(r.socket_errors for r in runs),
        statistics.median(cpu) if cpu else None,
        statistics.median(r.wrk_us for r in runs),
        runs[len(runs) // 2].worker_spread,
        max((r.other_load for r in runs if r.other_load is not None), default=None),
    )


# --- in-process profile ------------------------------------------------------------------


def wsgi_environ(r: Request) -> tuple[WSGIEnvironment, bytes]:
    parts = urlsplit(r.path)
    body = r.body.encode()
    env: WSGIEnvironment = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": parts.path,
        "QUERY_STRING": parts.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_TWILIO_SIGNATURE": r.signature,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    return env, body


def wsgi_loop(app: WSGIApplication, prepared: list[tuple[WSGIEnvironment, bytes]],
              rounds: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda _data: None

    for _ in range(rounds):
        for base, body in prepared:
            env = dict(base)
            env["wsgi.input"] = io.BytesIO(body)
            result = app(env, start_response)
            try:
                for _chunk in result:
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
    statuses.update(s.split(" ", 1)[0] for s in seen)
    return statuses


def profile(env: dict[str, str], requests: list[Request], rounds: int, top: int) -> None:
    from bench.static_app import app as static
    from ivr import create_app
    from ivr.config import load_settings

    full = create_app(load_settings(env))
    quiet = open(os.devnull, "w")  # noqa: SIM115 - logging stays on (its cost is real), unseen
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr,
                                                                             sys.__stderr__):
            handler.setStream(quiet)
    prepared = [wsgi_environ(r) for r in requests]
    for name, app in (("static", static.wsgi_app), ("full", full.wsgi_app)):
        statuses = wsgi_loop(app, prepared, 1)  # warms caches
        best = float("inf")
        for _ in range(rounds):  # the fastest pass: the least disturbed by other processes
            t0 = time.process_time()
            wsgi_loop(app, prepared, 1)
            best = min(best, time.process_time() - t0)
        us = best * 1e6 / len(prepared)
        print(f"{name:7} {us:8.1f} CPU µs/request in-process (raw WSGI, best of {rounds} "
              f"passes)  statuses {dict(statuses)}")
    prof = cProfile.Profile()
    prof.enable()
    wsgi_loop(full.wsgi_app, prepared, rounds)
    prof.disable()
    n = rounds * len(prepared)
    print(f"\ncProfile of the full app over {n} requests (times are totals; divide by {n}):")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


# --- main ----------------------------------------------------------------------------------


def default_flows() -> Path:
    real = ROOT / "flows"
    return real if (real / "hotline.yaml").is_file() else ROOT / "tests" / "flows"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per server")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--flows-dir", type=Path, default=None,
                   help="default: flows/ if it has hotline.yaml, else tests/flows")
    p.add_argument("--calls", type=int, default=60, help="calls walked to build the workload")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1,
                   help="alternate static/full this many times and report the medians")
    p.add_argument("--log-level", default="INFO", help="the servers' LOG_LEVEL (as deployed)")
    p.add_argument("--verbose", action="store_true", help="show wrk's full output")
    p.add_argument("--profile", action="store_true",
                   help="no servers: time the workload in-process and profile the full app")
    p.add_argument("--rounds", type=int, default=20, help="--profile: passes over the workload")
    args = p.parse_args(argv)

    flows_dir: Path = args.flows_dir or default_flows()
    if not args.profile and shutil.which("wrk") is None:
        print("bench: wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.connections < 2:
        p.error("--connections must be at least 2 (wrk runs 2 threads)")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmpdir, own_redis(Path(tmpdir)) as redis_url:
        tmp = Path(tmpdir)
        env = server_env(flows_dir, tmp, args.log_level)
        env["REDIS_URL"] = redis_url  # voicemails are enqueued as deployed, never on a shared Redis
        from ivr.storage import upgrade

        upgrade(env["DATABASE_URL"], env["KEYSTORE_URL"])
        requests, waits = record_workload(env, args.calls, args.seed)
        print(f"workload: {len(requests)} signed webhooks from {args.calls} calls "
              f"(flows {os.path.relpath(flows_dir, ROOT)}): {describe(requests)}")
        print(f"answers end at {len(waits)} steps: "
              + ", ".join(f"{k} {n}" for k, n in waits.most_common()))
        if args.profile:
            profile(env, requests, args.rounds, 30)
            return 0
        script = tmp / "workload.lua"
        write_lua(requests, script)
        runs: dict[str, list[Result]] = {"static": [], "full": []}
        specs = [("static", "bench.static_app:app"), ("full", "ivr:create_app()")]
        with servers(specs, args.workers, env, tmp) as (static, full):
            static.wait_ready(requests[0])
            full.wait_ready(requests[0])
            print(f"load: wrk, 2 threads, {args.connections} connections, {args.duration:g} s "
                  f"per server{f' x {args.repeat}' if args.repeat > 1 else ''}; "
                  f"gunicorn -c python:ivr.serving --workers {args.workers}")
            for _ in range(max(1, args.repeat)):
                for server in (static, full):
                    runs[server.name].append(measure(server, script, args))
            full_log = full.tail()
        results = [median_result(runs["static"]), median_result(runs["full"])]

    if args.repeat > 1:
        for name, rs in runs.items():
            print(f"{name} runs, req/s: " + ", ".join(f"{r.rps:.0f}" for r in rs))
    print(f"{'name':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'server CPU µs/req':>18} {'wrk CPU µs/req':>15}  worker CPU split %")
    for r in results:
        cpu = f"{r.server_us:.0f}" if r.server_us is not None else "n/a"
        print(f"{r.name:8} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
              f"{r.non200 + r.socket_errors:7d} {cpu:>18} {r.wrk_us:15.0f}  {r.worker_spread}")
    static_r, full_r = results
    if full_r.non200:
        print(f"bench: FAILED: the full app answered {full_r.non200} of {full_r.requests} "
              "requests with a status other than 200 (403 = a signature did not match)",
              file=sys.stderr)
        if full_log:
            print(full_log, file=sys.stderr)
        return 1
    busy = max((r.other_load or 0.0 for r in results), default=0.0)
    if busy > 0.05:
        print(f"note: other processes used up to {100 * busy:.0f}% of the CPUs during the "
              "runs: req/s and latency are unreliable; CPU µs/request less so")
    for r in results:
        if r.socket_errors:
            print(f"note: {r.name}: {r.socket_errors} socket errors (see --verbose)")
    ratio = full_r.rps / static_r.rps if static_r.rps else 0.0
    met = ratio >= GOAL_RATIO and full_r.p99_ms < GOAL_P99_MS
    print(f"goal (ratio >= {GOAL_RATIO}, full p99 < {GOAL_P99_MS:g} ms at {args.connections} "
          f"connections): {'met' if met else 'NOT met'}")
    print(f"ratio full/static: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
