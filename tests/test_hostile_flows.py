"""A flow file cannot take the hotline off the air.

Each hostile file (made here, not committed: some are megabytes) is refused by
`ivr flows check` with one `file:line:col` line and no traceback, quickly; the limit on
steps per answer is exactly the engine's; and a real server keeps answering calls within a
second while such files land in its FLOWS_DIR, and starts on the archived last good version
when the entry flow is broken.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Generator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from twilio.request_validator import RequestValidator

from ivr import engine
from ivr.cli import main
from ivr.engine import Caller, Context
from ivr.errors import EngineError
from ivr.flow import Flow, Say, Text
from ivr.limits import MAX_AUTOMATIC_STEPS, MAX_PROBLEMS, MAX_TWIML_BYTES
from ivr.loader import load_set
from ivr.twiml import Renderer
from tests.conftest import HEALTHZ_TOKEN, TEST_FLOWS, call_params
from tests.servers import free_port
from tests.test_deploy import base_env, procfile, wait_until_healthy

HEAD = "id: {id}\nlanguages:\n  en: {{voice: Polly.Joanna}}\nsteps:\n"
TAIL = ("  voicemail:\n    type: record\n    prompt: Speak after the tone\n    next: bye\n"
        "  bye:\n    type: hangup\n")


def chain(flow_id: str, says: int, prompt: str = "Hello", end: str = "voicemail") -> str:
    """`says` say steps in a row, then a record step: says + 1 steps in one answer."""
    lines = [
        f"  s{i}: {{type: say, prompt: '{prompt}', next: {f's{i + 1}' if i < says - 1 else end}}}"
        for i in range(says)
    ]
    return HEAD.format(id=flow_id) + "\n".join(lines) + "\n" + TAIL


def many_steps(n: int) -> str:
    return HEAD.format(id="many") + "".join(f"  s{i}:\n    type: hangup\n" for i in range(n))


def sparse(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)


def write(text: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_text(text, encoding="utf-8")
    return make


# name, how to make it, the line `ivr flows check` prints for it (after "FILE:")
HOSTILE: list[tuple[str, Callable[[Path], None], str]] = [
    ("51 MB", lambda p: sparse(p, 51_000_000),
     "1:1: the file is 51 MB; a flow file may be at most 1 MB (split it into smaller files)"),
    ("100,000 steps", write(many_steps(100_000)),
     "1:1: the file is 2.7 MB; a flow file may be at most 1 MB (split it into smaller files)"),
    ("501 steps", write(many_steps(501)),
     "5:3: the flow has 501 steps; a flow may have at most 500 "
     "(split it into several flows joined by `goto` steps)"),
    ("100,000 nested [", write("id: " + "[" * 100_000),
     "1:24: lists and mappings nest more than 20 levels deep here "
     "(a flow never needs that many: look for brackets that are not closed)"),
    ("400,000 values", write("id: x\nsteps: [" + ",".join(["[1]"] * 200_000) + "]\n"),
     "2:99998: the file holds more than 50,000 values (split it into smaller files)"),
    ("20,000 unknown keys", write("id: x\n" + "".join(f"x{i}: 1\n" for i in range(20_000))),
     "100:1: 19,902 more problems from here on are not shown (fix the ones above first)"),
    ("a 1,000-step chain", write(chain("long", 1_000)),
     "5:3: the flow has 1,002 steps; a flow may have at most 500 "
     "(split it into several flows joined by `goto` steps)"),
    ("a 70-automatic-step chain", write(chain("seventy", 70)),
     "5:3: 71 steps in a row run without waiting for the caller (`s0` -> `s1` -> `s2` -> … "
     "-> `s69` -> `voicemail`); a call stops after 64 (put a menu or record step among them)"),
    ("a 70 kB prompt", write(chain("talk", 1, "Hello. " * 10_000)),
     "5:27: prompt of step `s0` is 69,999 characters long; a prompt may have at most 4,000 in "
     "each language (split it over several `say` steps)"),
    ("20 long prompts in one answer", write(chain("talkative", 20, "Hello & goodbye. " * 230)),
     "5:3: the steps `s0` -> `s1` -> `s2` -> … -> `s19` -> `voicemail` say too much for one "
     "answer to Twilio: about 105,701 bytes of TwiML, over the limit of 64,000 "
     "(shorten the prompts, or put a menu between them)"),
]


@pytest.mark.parametrize(("name", "make", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_ivr_flows_check_refuses_each_hostile_file_in_one_line(
    tmp_path: Path, name: str, make: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "hostile.yaml"
    make(path)
    env = {"FLOWS_DIR": str(tmp_path), "IVR_DOTENV": str(tmp_path / "no.env")}
    started = time.monotonic()
    result = CliRunner().invoke(main, ["flows", "check", str(path)], env=env)
    took = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        "".join(traceback.format_exception(result.exception))
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"{path}:")]
    assert f"{path}:{message}" in lines
    assert len(lines) == (MAX_PROBLEMS + 1 if "more problems" in message else 1)
    assert took < 2, f"{name}: {took:.1f} s"


def test_long_chains_are_checked_without_recursion(tmp_path: Path) -> None:
    """A 400-step chain (within the step limit) is refused even with hardly any stack left."""
    path = tmp_path / "chain.yaml"
    path.write_text(chain("deep", 400), encoding="utf-8")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 60)
    try:
        result = load_set([path])
    finally:
        sys.setrecursionlimit(limit)
    assert any(": 401 steps in a row run without waiting" in str(p) for p in result.problems)


# --- the check refuses exactly what the engine refuses -----------------------------------

CTX = Context(datetime(2026, 11, 22, 12, 0, tzinfo=UTC), lambda: Caller(False, None, "elsewhere"))


def loaded(tmp_path: Path, text: str) -> tuple[Flow | None, list[str]]:
    path = tmp_path / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    result = load_set([path])
    return next(iter(result.flows.values()), None), [str(p) for p in result.problems]


def test_the_longest_chain_the_check_accepts_is_the_longest_the_engine_runs(
    tmp_path: Path,
) -> None:
    flow, problems = loaded(tmp_path, chain("edge", MAX_AUTOMATIC_STEPS - 1))
    assert problems == [] and flow is not None
    turn = engine.start(lambda _id, _v: flow, flow.id, CTX)
    assert len(turn.trace) == MAX_AUTOMATIC_STEPS and turn.trace[-1] == "voicemail"
    # One step more: the engine refuses the call, and the check refuses the flow.
    longer = replace(flow, start="extra", steps={
        "extra": Say("extra", {"en": Text("Hi")}, "s0"), **flow.steps})
    with pytest.raises(EngineError, match=f"ran {MAX_AUTOMATIC_STEPS} steps"):
        engine.start(lambda _id, _v: longer, longer.id, CTX)
    _, problems = loaded(tmp_path, chain("edge", MAX_AUTOMATIC_STEPS))
    assert len(problems) == 1 and f"{MAX_AUTOMATIC_STEPS + 1} steps in a row" in problems[0]


def test_a_transfer_with_nobody_to_ring_counts_as_a_step_that_does_not_wait(
    tmp_path: Path,
) -> None:
    """A transfer nobody can take (no operator on duty, no TRANSFER_NUMBERS) goes on to
    `no_answer` at once: its steps count towards the same answer."""
    text = chain("busy", MAX_AUTOMATIC_STEPS - 2, end="operator") + (
        "  operator:\n    type: transfer\n    next: bye\n    no_answer: voicemail\n")
    flow, problems = loaded(tmp_path, text)
    assert problems == [] and flow is not None
    turn = engine.start(lambda _id, _v: flow, flow.id, CTX)  # nobody to ring
    assert len(turn.trace) == MAX_AUTOMATIC_STEPS and turn.trace[-2:] == ("operator", "voicemail")
    longer = text.replace("  s0:", "  pre: {type: say, prompt: Hi, next: s0}\n  s0:", 1)
    _, problems = loaded(tmp_path, longer)
    assert len(problems) == 1 and f"{MAX_AUTOMATIC_STEPS + 1} steps in a row" in problems[0]


def test_the_largest_answer_the_check_accepts_fits_in_64_kb(tmp_path: Path) -> None:
    """Build the most talkative answer the check lets through (escaping, Cyrillic, a long
    PUBLIC_BASE_URL) and render it with the real adapter."""
    words = "Здравствуйте & <добро> пожаловать \"домой\". "
    prompt = (words * 200)[:3_900].strip().replace("'", "")
    accepted = None
    for says in range(1, 30):
        flow, problems = loaded(tmp_path, chain("talk", says, prompt))
        if problems:
            assert "too much for one answer to Twilio" in problems[0]
            break
        accepted = flow
    assert accepted is not None and says > 2
    renderer = Renderer("https://" + "h" * 180 + ".example.org", "+15005550006")
    turn = engine.start(lambda _id, _v: accepted, accepted.id, CTX)
    size = len(renderer.render(turn).encode())
    assert MAX_TWIML_BYTES / 2 < size < MAX_TWIML_BYTES


# --- a real server while hostile files land in its FLOWS_DIR -------------------------------


class Caller_:
    """Calls the hotline over and over from another thread, timing every answer."""

    def __init__(self, url: str, base: str, token: str) -> None:
        self.url, self.base, self.token = url, base, token
        self.answers: list[tuple[float, int, bool]] = []  # seconds, status, greeted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Caller_:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def call(self) -> tuple[float, int, str]:
        params = call_params()
        signature = RequestValidator(self.token).compute_signature(
            self.base + "/twilio/voice", params)
        request = urllib.request.Request(
            self.url + "/twilio/voice", data=urllib.parse.urlencode(params).encode(),
            headers={"X-Twilio-Signature": signature}, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, ""
        return time.monotonic() - started, status, body

    def _run(self) -> None:
        while not self._stop.is_set():
            took, status, body = self.call()
            self.answers.append((took, status, "Здравствуйте" in body))
            time.sleep(0.02)


def health(url: str) -> Any:
    asked = urllib.request.Request(url + "/healthz", headers={"Authorization": f"Bearer {HEALTHZ_TOKEN}"})
    with urllib.request.urlopen(asked, timeout=5) as r:
        return json.loads(r.read())


def worker_rss_mb(master: int) -> list[float]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    out = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        out.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
    return out


class Web:
    def __init__(self, tmp_path: Path, flows: Path) -> None:
        self.port = free_port()
        self.env = base_env(tmp_path, HEALTHZ_TOKEN=HEALTHZ_TOKEN, PORT=str(self.port), FLOWS_DIR=str(flows),
                            PUBLIC_BASE_URL="https://hotline.example.org",
                            TWILIO_AUTH_TOKEN="hostile-test-token", WEB_CONCURRENCY="2")
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tmp_path / f"web-{self.port}.log"

    @property
    def caller(self) -> Caller_:
        return Caller_(self.url, self.env["PUBLIC_BASE_URL"], self.env["TWILIO_AUTH_TOKEN"])

    def run(self) -> Generator[subprocess.Popen[str]]:
        with self.out.open("w") as log:
            proc = subprocess.Popen(["bash", "-c", f"exec {procfile('web')}"], cwd=TEST_FLOWS.parent.parent,
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                wait_until_healthy(self.url, proc)
                yield proc
            finally:
                proc.terminate()
                proc.wait(timeout=10)


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the server did not notice the edit"
        time.sleep(0.1)


def test_a_server_answers_every_call_within_a_second_while_hostile_files_arrive(
    tmp_path: Path,
) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(TEST_FLOWS, flows)
    web = Web(tmp_path, flows)
    run = web.run()
    proc = next(run)
    try:
        good = health(web.url)["flows"]["hotline"]
        with web.caller as caller:
            for name, make, message in HOSTILE:
                target = flows / f"{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.yaml"
                make(target)
                line = f"flow problem: {target}:{message}"  # each worker logs it on reload
                wait_for(lambda line=line: line in web.out.read_text())  # type: ignore[misc]
            mini = flows / "mini.yaml"
            mini.write_text(mini.read_text().replace("next: lang", "next: lnag"))
            seen: list[bool] = []  # every worker has noticed: many answers in a row say so

            def all_stale() -> bool:
                seen.append(health(web.url)["flows"]["hotline"]["stale"])
                return seen[-8:] == [True] * 8

            wait_for(all_stale)
            rss = worker_rss_mb(proc.pid)
        took = [a[0] for a in caller.answers]
        assert len(took) > 20
        assert all(status == 200 and greeted for _, status, greeted in caller.answers)
        assert max(took) < 1.0, f"slowest answer {max(took):.2f} s"
        assert max(rss) < 300, f"worker memory {rss} MB"
        print(f"\n{len(took)} calls, slowest {max(took) * 1000:.0f} ms, workers {rss} MB")
        state = health(web.url)
        assert state["flows"]["hotline"] == dict(good, stale=True)
        assert state["status"] == "degraded"
    finally:
        run.close()

    # A restart with the entry flow still broken: the archived last good version answers.
    again = Web(tmp_path, flows)
    run = again.run()
    next(run)
    try:
        state = health(again.url)
        assert state["flows"]["hotline"] == dict(good, stale=True, archived=True)
        assert state["entry_flow"] == {"id": "hotline", "ok": True}
        _, status, body = again.caller.call()
        assert status == 200 and "Здравствуйте" in body
    finally:
        run.close()
    log = again.out.read_text()
    assert f"serving the last good version {good['version']} from the archive" in log
    assert "no step named `lnag`" in log


def test_a_process_starts_with_every_flow_broken_and_no_archive(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(TEST_FLOWS, flows)
    (flows / "mini.yaml").write_text("id: [" + "[" * 100_000)
    web = Web(tmp_path, flows)
    run = web.run()
    next(run)
    try:
        state = health(web.url)
        assert state["flows"] == {} and state["entry_flow"] == {"id": "hotline", "ok": False}
        _, status, body = web.caller.call()
        assert status == 200 and "<Record" in body  # the apology, with a voicemail
    finally:
        run.close()
    log = web.out.read_text()
    assert "nest more than 20 levels" in log and "entry flow 'hotline' is not loaded" in log
    assert "Traceback" not in log
