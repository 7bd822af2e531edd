"""What an admin runs: the Procfile's web command under gunicorn, settings, the `ivr` command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from ivr.cli import main
from ivr.config import load_settings
from ivr.errors import ConfigError
from ivr.standin import HttpTransport, Phone, ScriptedCaller
from tests.audio import ensure_tools
from tests.conftest import HEALTHZ_TOKEN, ROOT, TEST_FLOWS
from tests.servers import RedisServer, free_port

BIN = str(Path(sys.executable).parent)


def procfile(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return command.strip()
    raise AssertionError(f"no {kind} in Procfile")


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "IVR_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", INSTANCE_DIR=str(tmp_path / "instance"),
               FLOWS_DIR=str(TEST_FLOWS), IVR_DOTENV=str(tmp_path / "no.env"),
               REDIS_URL="redis://127.0.0.1:1/0")  # never the machine's shared Redis
    env.update(extra)
    return env


def wait_until_healthy(url: str, proc: subprocess.Popen[str], seconds: float = 15) -> None:
    """Until /healthz answers; the process's output if it dies first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "") from None
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.1)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = base_env(tmp_path, PORT=str(port), PUBLIC_BASE_URL="https://hotline.example.org",
                   TWILIO_AUTH_TOKEN="gunicorn-test-token", WEB_CONCURRENCY="2",
                   HEALTHZ_TOKEN=HEALTHZ_TOKEN)
    proc = subprocess.Popen(["bash", "-c", f"exec {procfile('web')}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        yield url, env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_procfile_web_command_answers_a_whole_call_over_http(
    web: tuple[str, dict[str, str]],
) -> None:
    url, env = web
    assert set(json.loads(urllib.request.urlopen(url + "/healthz").read())) == {"status", "versions"}
    asked = urllib.request.Request(url + "/healthz", headers={"Authorization": f"Bearer {HEALTHZ_TOKEN}"})
    health = json.loads(urllib.request.urlopen(asked).read())
    assert health["flows"]["hotline"]["stale"] is False
    phone = Phone(HttpTransport(env["PUBLIC_BASE_URL"], url), env["PUBLIC_BASE_URL"],
                  env["TWILIO_AUTH_TOKEN"], "AC" + "0" * 32, "+15005550006")
    log = phone.call("+380441234567", ScriptedCaller(["2", "1", "#"]))
    assert log.errors == []
    assert "Здравствуйте" in log.text() and "Говоріть після сигналу" in log.text()
    assert log.ended == "hangup"
    forged = urllib.request.Request(url + "/twilio/voice", data=b"From=%2B1", method="POST",
                                    headers={"X-Twilio-Signature": "forged"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged)
    assert refused.value.code == 403
    # Under gunicorn too (RAW_URI): a correctly signed request for /twilio/voice sent to an
    # escaped path that decodes to it is refused, and so is a signed JSON body.
    from twilio.request_validator import RequestValidator

    params = {"CallSid": "CA" + "1" * 32, "From": "+380441234567"}
    signer = RequestValidator(env["TWILIO_AUTH_TOKEN"])
    for path, body, kind, signed_params in (
        ("/twilio/%76oice", "CallSid=CA" + "1" * 32 + "&From=%2B380441234567",
         "application/x-www-form-urlencoded", params),
        ("/twilio/voice", json.dumps(params), "application/json", {}),
    ):
        sent = urllib.request.Request(url + path, data=body.encode(), method="POST", headers={
            "Content-Type": kind, "X-Twilio-Signature": signer.compute_signature(
                env["PUBLIC_BASE_URL"] + "/twilio/voice", signed_params)})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(sent)
        assert refused.value.code == 403, path
    plain = urllib.request.Request(url + "/twilio/voice", data=urlencode(params).encode(),
                                   method="POST", headers={"X-Twilio-Signature": signer.compute_signature(
                                       env["PUBLIC_BASE_URL"] + "/twilio/voice", params)})
    assert urllib.request.urlopen(plain).status == 200  # the same signature, the plain path


PRODUCTION = {  # every setting production needs, right
    "IVR_ENV": "production", "TWILIO_ACCOUNT_SID": "AC" + "2" * 32, "TWILIO_AUTH_TOKEN": "real",
    "PUBLIC_BASE_URL": "https://hotline.example.org/", "HOTLINE_NUMBER": "+380441234567",
    "DATABASE_URL": "postgresql+psycopg://ivr@127.0.0.1/ivr",
    "KEYSTORE_URL": "postgresql+psycopg://ivr@127.0.0.1/ivr_keys",
    "IVR_DATA_KEYS": "k2:" + "A" * 43 + ",k1:" + "B" * 43, "CONSOLE_SECRET_KEY": "x" * 48,
}
MISSING_LINES = [
    "TWILIO_ACCOUNT_SID is not set: set it to your Twilio account SID, AC and 32 hex digits, "
    "from the Twilio console",
    "TWILIO_AUTH_TOKEN is not set: set it to your Twilio account's auth token, from the Twilio console",
    "PUBLIC_BASE_URL is not set: set it to the https address Twilio calls, e.g. https://hotline.example.org",
    "DATABASE_URL is not set: set it to the PostgreSQL database, e.g. "
    "postgresql+psycopg://USER:PASSWORD@HOST/ivr",
    "HOTLINE_NUMBER is not set: set it to the hotline's Twilio number in E.164 form, e.g. +380441234567",
    "KEYSTORE_URL is not set: set it to a PostgreSQL database of its own for the data keys, e.g. "
    "postgresql+psycopg://USER:PASSWORD@HOST/ivr_keys",
    "IVR_DATA_KEYS is not set: set it to a master key, `id:base64key` (make one with `ivr keys new`)",
    "CONSOLE_SECRET_KEY is not set: set it to 32 or more random characters, e.g. the output of "
    "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
]


def test_a_bare_production_start_names_each_missing_setting_once() -> None:
    """Nothing set: one line per missing setting, each saying what to set, and nothing else
    about them (a missing PUBLIC_BASE_URL is not also "not https", a missing token not also
    "the development placeholder")."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"IVR_ENV": "production", "FLOWS_DIR": str(TEST_FLOWS)})
    assert list(caught.value.problems) == MISSING_LINES


@pytest.mark.parametrize("name", [k for k in PRODUCTION if k != "IVR_ENV"])
def test_one_missing_setting_gives_exactly_one_line(name: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != name}
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "FLOWS_DIR": str(TEST_FLOWS)})
    [line] = caught.value.problems
    assert line.startswith(f"{name} is not set: set it to ") and line in MISSING_LINES


@pytest.mark.parametrize(
    ("env", "lines"),
    [
        ({"IVR_ENV": "staging"},
         ["IVR_ENV is 'staging': set it to production, or to development (the default)"]),
        ({**PRODUCTION, "PUBLIC_BASE_URL": "http://x.org"},
         ["PUBLIC_BASE_URL 'http://x.org' is not https: set it to the https address Twilio calls, "
          "e.g. https://hotline.example.org"]),
        ({"PUBLIC_BASE_URL": "hotline.org"},
         ["PUBLIC_BASE_URL 'hotline.org' is not a web address: set it to the address Twilio calls, "
          "e.g. https://hotline.example.org"]),
        ({**PRODUCTION, "TWILIO_AUTH_TOKEN": "dev-auth-token-not-secret", "TWILIO_ACCOUNT_SID": "AC1"},
         ["TWILIO_ACCOUNT_SID is not an account SID: set it to AC and 32 hex digits, as the Twilio "
          "console shows it",
          "TWILIO_AUTH_TOKEN is the development placeholder: set it to your account's auth token, "
          "from the Twilio console"]),
        ({"TWILIO_API_BASE": "http://api.example.org"},
         ["TWILIO_API_BASE 'http://api.example.org' is plain http: set it to an https address, e.g. "
          "https://api.twilio.com (http only on 127.0.0.1)"]),
        ({**PRODUCTION, "KEYSTORE_URL": PRODUCTION["DATABASE_URL"]},
         ["KEYSTORE_URL names the same database as DATABASE_URL: set it to a database of its own (a "
          "backup of the data must not hold the keys that open it), e.g. …/ivr_keys"]),
        ({"DATABASE_URL": "sqlite:///x.db", "KEYSTORE_URL": "sqlite:///x.db"},
         ["KEYSTORE_URL names the same SQLite file as DATABASE_URL: set it to another file, e.g. "
          "sqlite:///instance/keys.db"]),
        ({"DATABASE_URL": "ivr:hunter2@db"},  # the password is not repeated
         ["DATABASE_URL is not a database URL: set it like postgresql+psycopg://USER:PASSWORD@HOST/ivr"]),
        ({"IVR_DATA_KEYS": "k1:short"},
         ["IVR_DATA_KEYS key 'k1' is not 32 bytes of base64 (make one with `ivr keys new`)"]),
        ({"IVR_DATA_KEYS": "nocolon"},
         ["IVR_DATA_KEYS entry 1 is not `id:base64key` (make one with `ivr keys new`)"]),
        ({"RETENTION_DAYS": "0", "WEBHOOK_DB_WAIT": "soon"},
         ["RETENTION_DAYS is '0': set it to a number of days, at least 1 (e.g. 30)",
          "WEBHOOK_DB_WAIT is 'soon': set it to a number of seconds, at least 0.1 (e.g. 1.5)"]),
        ({"HOTLINE_NUMBER": "0441234567"},
         ["HOTLINE_NUMBER '0441234567' is not in E.164 form: set it to + and the country code and "
          "number, e.g. +380441234567"]),
        ({"TRANSFER_NUMBERS": "+380441234567, 12, 13"},
         ["TRANSFER_NUMBERS has '12', not in E.164 form: set it to numbers separated by commas, e.g. "
          "+380441112233,+380441112234"]),
        ({"FLOWS_DIR": "/nonexistent"},
         ["FLOWS_DIR '/nonexistent' is not a folder: set it to the folder of the YAML flows, e.g. flows"]),
        ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL is 'LOUD': set it to DEBUG, INFO, WARNING or ERROR"]),
        ({"CONSOLE_SECRET_KEY": "short"},
         ["CONSOLE_SECRET_KEY is too short: set it to 32 or more random characters, e.g. the output of "
          "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"]),
        ({"HEALTHZ_TOKEN": "short"}, ["HEALTHZ_TOKEN is too short: set it to 24 or more random characters"]),
        ({"CALLBACK_DAYTIME": "21:00-09:00"},
         ["CALLBACK_DAYTIME is '21:00-09:00': set it to the hours a daytime callback may ring, start "
          "before end, e.g. 09:00-21:00"]),
        ({"CALLBACK_RETRY_MINUTES": "15,x"},
         ["CALLBACK_RETRY_MINUTES is '15,x': set it to whole minutes separated by commas, e.g. 15,60,240"]),
        ({"REOFFER_MINUTES": "0", "TRANSFER_RING_MAX": "11"},
         ["REOFFER_MINUTES is '0': set it to a whole number from 1 to 10080 (default 30)",
          "TRANSFER_RING_MAX is '11': set it to a whole number from 1 to 10 (default 3)"]),
        ({"REDIS_NAMESPACE": "a b"},
         ["REDIS_NAMESPACE 'a b' has other characters: set it to 1-40 letters, digits, `_`, `.` or `-`, "
          "e.g. ivr-kyiv"]),
    ],
)
def test_bad_settings_give_one_line_each(env: dict[str, str], lines: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"FLOWS_DIR": str(TEST_FLOWS), **env})
    assert list(caught.value.problems) == lines
    assert "hunter2" not in str(caught.value)


def start_up_output(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(tmp_path, PORT=str(free_port()), IVR_ENV="production", HOTLINE_NUMBER="0441234567",
                   TWILIO_AUTH_TOKEN="dev-auth-token-not-secret")
    return subprocess.run(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["web", "worker", "ivr serve", "ivr cases list"])
def test_wrong_settings_stop_every_process_with_the_same_lines(command: str, tmp_path: Path) -> None:
    """The Procfile's web (gunicorn) and worker, `ivr serve` and any `ivr` command: a heading,
    one line per setting, exit 78 (EX_CONFIG), no traceback."""
    result = start_up_output(procfile(command) if command in ("web", "worker") else command, tmp_path)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [x for x in result.stderr.splitlines() if "gunicorn" not in x]
    expected = [line for line in MISSING_LINES if not line.startswith(("HOTLINE", "TWILIO_AUTH"))]
    expected[1:1] = ["TWILIO_AUTH_TOKEN is the development placeholder: set it to your account's auth "
                     "token, from the Twilio console"]
    expected[4:4] = ["HOTLINE_NUMBER '0441234567' is not in E.164 form: set it to + and the country code "
                     "and number, e.g. +380441234567"]
    assert lines == ["ivr: cannot start: 8 settings need fixing (environment or .env):"] + [
        f"  {line}" for line in expected]


def test_development_needs_no_settings_at_all() -> None:
    s = load_settings({"FLOWS_DIR": str(TEST_FLOWS)})
    assert s.env == "development" and s.database_url.startswith("sqlite:///")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.twilio_api_base == "https://api.twilio.com"


def test_production_with_every_setting_starts() -> None:
    s = load_settings({**PRODUCTION, "FLOWS_DIR": str(TEST_FLOWS),
                       "TRANSFER_NUMBERS": "+380441112233,+380441112234"})
    assert s.production and s.public_base_url == "https://hotline.example.org"
    assert s.transfer_numbers == ("+380441112233", "+380441112234")


def test_every_setting_is_in_env_example() -> None:
    from ivr.config import SETTINGS

    example = (ROOT / ".env.example").read_text()
    for name in SETTINGS:
        assert f"\n{name}=" in example, name


# --- the ivr command ----------------------------------------------------------------------


def run(args: list[str], tmp_path: Path, **env: str) -> tuple[int, str]:
    environ = {"FLOWS_DIR": str(TEST_FLOWS), "INSTANCE_DIR": str(tmp_path / "i"),
               "IVR_DOTENV": str(tmp_path / "none"), **env}
    result = CliRunner().invoke(main, args, env=environ)
    return result.exit_code, result.output


def test_ivr_call_prints_what_the_caller_hears(tmp_path: Path) -> None:
    code, out = run(["call", "--press", "3,#", "--steps", "--at", "2026-11-22T12:00+02:00"],
                    tmp_path)
    assert code == 0, out
    assert "[ru-RU] Здравствуйте" in out and "[en-US] Speak after the tone" in out
    assert "(set_en → main → voicemail)" in out and "[en-US] Goodbye" in out
    assert "Call ended: the hotline hung up" in out


def test_ivr_call_from_a_withheld_number_and_interactive_keys(tmp_path: Path) -> None:
    environ = {"FLOWS_DIR": str(TEST_FLOWS), "INSTANCE_DIR": str(tmp_path / "i"),
               "IVR_DOTENV": str(tmp_path / "none")}
    result = CliRunner().invoke(main, ["call", "--from", "anonymous"], env=environ,
                                input="2\n#\n")
    assert result.exit_code == 0, result.output
    assert "press keys" in result.output and "Говоріть після сигналу" in result.output
    assert "До побачення" in result.output


def test_ivr_call_with_a_bad_setting_says_so(tmp_path: Path) -> None:
    code, out = run(["call"], tmp_path, HOTLINE_NUMBER="12")
    assert code == 78 and out == ("ivr: cannot start: HOTLINE_NUMBER '12' is not in E.164 form: set it to + "
                                  "and the country code and number, e.g. +380441234567\n")
    assert "Traceback" not in out


def test_ivr_flows_graph_draws_mermaid_and_dot(tmp_path: Path) -> None:
    code, out = run(["flows", "graph", "hotline"], tmp_path)
    assert code == 0 and out.startswith("flowchart TD")
    assert 's_lang -- "2" --> s_set_uk' in out
    code, out = run(["flows", "graph", "hotline", "--format", "dot"], tmp_path)
    assert code == 0 and '"lang" -> "set_uk" [label="2", style=bold];' in out
    code, out = run(["flows", "graph", "nope"], tmp_path)
    assert code == 1 and "no flow `nope`" in out


def test_a_newcomer_serves_the_hotline_and_sees_a_voicemail_become_a_case(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The README's first command: `ivr serve` runs web, worker and Twilio's REST stand-in;
    `ivr call --url … --voicemail say:…` leaves a message; `ivr cases` shows it transcribed."""
    ensure_tools()  # `say:` speaks with espeak-ng and sox, installed on a fresh machine here
    port = free_port()
    while True:  # the stand-in goes on PORT+1
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port + 1)) != 0:
                break
        port = free_port()
    env = base_env(tmp_path, REDIS_URL=redis_server.url, FLOWS_DIR=str(ROOT / "flows"))
    ivr = str(Path(BIN) / "ivr")
    serve = subprocess.Popen([ivr, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, serve)
        added = subprocess.run([ivr, "operators", "add", "--name", "Olena", "--number", "+380501112233",
                                "--languages", "en", "--regions", "russia"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=30)
        assert added.returncode == 0, added.stdout + added.stderr
        called = subprocess.run(
            [ivr, "call", "--url", url, "--press", "3,3,#,#,#,#,1",
             "--voicemail", "say:I want to surrender. Please call me back."],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert called.returncode == 0, called.stdout + called.stderr
        assert "May we call you back?" in called.stdout  # and 1: at any time
        assert "An operator will call you back from the hotline's number" in called.stdout
        rows: list[dict[str, object]] = []
        for _ in range(120):
            listed = subprocess.run([ivr, "cases", "list", "--json"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=30)
            rows = json.loads(listed.stdout)
            if rows and rows[0]["status"] == "routed":
                break
            time.sleep(0.5)
        assert [(r["status"], r["transcription"], r["region"], r["language"], r["consent"], r["operator_id"])
                for r in rows] == [("routed", "done", "russia", "en", "any", 1)]
        assert rows[0]["recording_deleted_at_provider"]
        shown = subprocess.run([ivr, "cases", "show", str(rows[0]["id"]), "--json"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=30)
        transcript = json.loads(shown.stdout)["transcript"]
        assert "surrender" in transcript.lower(), transcript
        # The callback: the stand-in rings Olena's phone, she presses 1, the caller answers.
        back = subprocess.run([ivr, "cases", "callback", str(rows[0]["id"])], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)
        assert back.returncode == 0, back.stdout + back.stderr
        outcomes: list[object] = []
        for _ in range(60):
            shown = subprocess.run([ivr, "cases", "show", str(rows[0]["id"]), "--json"], cwd=tmp_path,
                                   env=env, capture_output=True, text=True, timeout=30)
            outcomes = [c["outcome"] for c in json.loads(shown.stdout)["callbacks"]]
            if outcomes and outcomes[0]:
                break
            time.sleep(0.5)
        assert outcomes == ["answered"]
    finally:
        serve.terminate()  # Ctrl-C or the admin's SIGTERM stops web, worker and stand-in
        output = serve.communicate(timeout=30)[0]
    assert "Worker running" in output and "Twilio's REST side (a local stand-in)" in output
    assert "the operator's phone: Hotline callback, case 1. The caller speaks English" in output
    assert "+79161234567" not in output.split("the operator's phone:")[1].split("\n")[0]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "gunicorn outlived ivr serve"


# --- what `ivr serve` says while it works ---------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def serve_two_calls(tmp_path: Path, redis_url: str, log_level: str) -> list[str]:
    """`ivr serve` (web, worker, stand-in) as a newcomer runs it: an operator, a caller who
    says nothing at the tone (a second of hiss: a case, dropped once the worker listens),
    then a voicemail that is transcribed, routed and told. Returns what `ivr serve` printed
    after "Call it from another terminal", less the worker's start-up lines."""
    import numpy as np

    from tests.audio import speak, wav

    port = free_port()
    while True:  # the stand-in goes on PORT+1
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port + 1)) != 0:
                break
        port = free_port()
    env = base_env(tmp_path, REDIS_URL=redis_url, FLOWS_DIR=str(ROOT / "flows"), LOG_LEVEL=log_level,
                   TRANSCRIBE_ENGINES="en=whisper-tiny-en", INSTANCE_DIR=str(tmp_path / log_level))
    hiss, words = tmp_path / "hiss.wav", tmp_path / "words.wav"
    hiss.write_bytes(wav(np.random.default_rng(12).normal(0, 12, 8000).astype(np.int16)))
    words.write_bytes(speak("I want to surrender. Please call me back."))
    ivr = str(Path(BIN) / "ivr")

    def run(*args: str) -> str:
        done = subprocess.run([ivr, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def cases() -> list[dict[str, object]]:
        return list(json.loads(run("cases", "list", "--json")))

    serve = subprocess.Popen([ivr, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, serve)
        run("operators", "add", "--name", "Olena", "--number", "+380501112233", "--languages", "en",
            "--regions", "russia")
        run("call", "--url", url, "--press", "3,3,#,#,#", "--voicemail", str(hiss))
        for _ in range(120):
            if not cases():  # filed by the webhook, dropped by the worker
                break
            time.sleep(0.5)
        run("call", "--url", url, "--press", "3,3,#,#,#,#,1", "--voicemail", str(words))
        for _ in range(120):
            rows = cases()
            if rows and rows[0]["notified_at"]:
                break
            time.sleep(0.5)
        assert rows and rows[0]["status"] == "routed" and rows[0]["notified_at"], rows
        time.sleep(1)  # the worker's last lines
    finally:
        serve.terminate()
        output = serve.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    assert "+79161234567" not in output and "+380501112233" not in output  # no number...
    assert "surrender" not in output.lower()  # ...and no transcript, at any level
    lines = output.split("Call it from another terminal", 1)[1].splitlines()[1:]
    return [line for line in lines if not line.startswith("speech models:")]


def test_ivr_serve_says_one_line_per_voicemail_stage_and_debug_says_the_rest(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ensure_tools()
    quiet = serve_two_calls(tmp_path, redis_server.url, "INFO")
    said = [STAMP.sub("", line) for line in quiet if "made console-secret-key" not in line]
    said = [re.sub(r"\(en, .*\)$", "(en, …)", line) for line in said]
    assert said == [
        "voicemail received: case 1 filed",
        "case 1: nothing said, dropped (deleted at Twilio)",
        "voicemail received: case 1 filed",  # (SQLite gives the dropped case's id again)
        "case 1: audio stored, deleted at Twilio",
        "case 1: transcribed (en, …)",
        "case 1: routed to Olena",
        "case 1: operator told by SMS",
    ], "\n".join(quiet)
    loud = serve_two_calls(tmp_path, redis_server.url, "DEBUG")
    assert len(loud) > 3 * len(quiet)
    assert any(" rq.worker: " in line for line in loud)  # rq's own lines, per job
    assert any("Booting worker" in line for line in loud)  # gunicorn's
    assert any("transcribed 5." in line or "s of en audio" in line for line in loud)
