"""What an admin runs: the Procfile's web command under gunicorn, settings, the `ivr` command."""

from __future__ import annotations

import json
import os
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


def test_a_missing_production_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, PORT=str(free_port()), IVR_ENV="production")
    result = subprocess.run(["bash", "-c", f"exec {procfile('web')}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [x for x in result.stderr.splitlines() if x.startswith("ivr: cannot start:")]
    assert len(lines) == 1, result.stderr
    assert "TWILIO_AUTH_TOKEN is not set" in lines[0] and "HOTLINE_NUMBER is not set" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IVR_ENV": "staging"}, "IVR_ENV is 'staging'"),
        ({"IVR_ENV": "production"}, "PUBLIC_BASE_URL is not set"),
        ({"IVR_ENV": "production", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t",
          "PUBLIC_BASE_URL": "http://x.org", "DATABASE_URL": "postgresql://db/ivr",
          "HOTLINE_NUMBER": "+380441234567", "IVR_DATA_KEYS": "k:" + "A" * 43},
         "must start with https://"),
        ({"IVR_ENV": "production"}, "IVR_DATA_KEYS is not set"),
        ({"IVR_ENV": "production"}, "KEYSTORE_URL is not set"),
        ({"IVR_ENV": "production", "DATABASE_URL": "postgresql://db/ivr", "KEYSTORE_URL": "postgresql://db/ivr"},
         "KEYSTORE_URL must name a database of its own"),
        ({"DATABASE_URL": "sqlite:///x.db", "KEYSTORE_URL": "sqlite:///x.db"},
         "KEYSTORE_URL must be another SQLite file"),
        ({"IVR_DATA_KEYS": "k1:short"}, "IVR_DATA_KEYS key 'k1' is not 32 bytes"),
        ({"IVR_DATA_KEYS": "nocolon"}, "IVR_DATA_KEYS entry 1 is not `id:base64key`"),
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS must be a number, at least 1"),
        ({"HOTLINE_NUMBER": "0441234567"}, "HOTLINE_NUMBER must be in E.164 form"),
        ({"TRANSFER_NUMBERS": "+380441234567, 12"}, "TRANSFER_NUMBERS must be E.164"),
        ({"PUBLIC_BASE_URL": "hotline.org"}, "is not a URL"),
        ({"FLOWS_DIR": "/nonexistent"}, "FLOWS_DIR '/nonexistent' is not a folder"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL 'LOUD'"),
        ({"IVR_ENV": "production"}, "CONSOLE_SECRET_KEY is not set"),
        ({"CONSOLE_SECRET_KEY": "short"}, "CONSOLE_SECRET_KEY is too short"),
        ({"CALLBACK_DAYTIME": "21:00-09:00"}, "CALLBACK_DAYTIME must be hours like 09:00-21:00"),
        ({"CALLBACK_RETRY_MINUTES": "15,x"}, "CALLBACK_RETRY_MINUTES must be whole minutes"),
        ({"REOFFER_MINUTES": "0"}, "REOFFER_MINUTES must be a whole number from 1"),
        ({"TRANSFER_RING_MAX": "11"}, "TRANSFER_RING_MAX must be a whole number from 1 to 10"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        load_settings({"FLOWS_DIR": str(TEST_FLOWS), **env})


def test_development_needs_no_settings_at_all() -> None:
    s = load_settings({"FLOWS_DIR": str(TEST_FLOWS)})
    assert s.env == "development" and s.database_url.startswith("sqlite:///")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.twilio_api_base == "https://api.twilio.com"


def test_production_with_every_setting_starts() -> None:
    s = load_settings({
        "IVR_ENV": "production", "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
        "TWILIO_AUTH_TOKEN": "real", "PUBLIC_BASE_URL": "https://hotline.example.org/",
        "DATABASE_URL": "postgresql+psycopg://ivr@127.0.0.1/ivr", "HOTLINE_NUMBER": "+380441234567",
        "FLOWS_DIR": str(TEST_FLOWS), "TRANSFER_NUMBERS": "+380441112233,+380441112234",
        "IVR_DATA_KEYS": "k2:" + "A" * 43 + ",k1:" + "B" * 43,
        "KEYSTORE_URL": "postgresql+psycopg://ivr@127.0.0.1/ivr_keys",
        "CONSOLE_SECRET_KEY": "x" * 48,
    })
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
    assert code == 1 and "HOTLINE_NUMBER must be in E.164 form" in out
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
            [ivr, "call", "--url", url, "--press", "3,3,#,#,#,1",
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
