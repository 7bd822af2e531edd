"""The /twilio/* HTTP contract, exercised through the real app as Twilio would call it."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.config import Settings
from tests.conftest import BASE, HEALTHZ_TOKEN, SUNDAY, TOKEN, call_params, healthz_details, signed

CRIMEA = "+79781234567"


def xml(response: object) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert response.headers["Content-Type"].startswith("text/xml")  # type: ignore[attr-defined]
    body = response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert len(body.encode()) < 64_000
    return ET.fromstring(body)


def said(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter("Say")]


def action_of(root: ET.Element) -> str:
    """The path and query of the first Gather/Record action, as Twilio would call it."""
    for el in root.iter():
        if el.tag in ("Gather", "Record") and el.get("action"):
            parts = urlsplit(el.get("action", ""))
            return f"{parts.path}?{parts.query}"
    raise AssertionError("no action in the TwiML")


# --- signatures ---------------------------------------------------------------------------


def test_a_signed_incoming_call_is_answered_with_the_greeting(client: FlaskClient) -> None:
    root = xml(signed(client, "/twilio/voice", call_params()))
    assert said(root)[0] == "Здравствуйте"
    assert root.find("Gather") is not None


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": ""}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
     {"X-Twilio-Signature": "ünïcödé"}],
)
def test_missing_empty_or_forged_signatures_are_refused(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.post("/twilio/voice", data=call_params(), headers=headers)
    assert response.status_code == 403


def test_a_tampered_parameter_or_query_is_refused(client: FlaskClient) -> None:
    params = call_params(Digits="1")
    good = RequestValidator(TOKEN).compute_signature(f"{BASE}/twilio/step?e=timeout", params)
    tampered = dict(params, Digits="2")
    r = client.post("/twilio/step?e=timeout", data=tampered, headers={"X-Twilio-Signature": good})
    assert r.status_code == 403
    r = client.post("/twilio/step?e=input", data=params, headers={"X-Twilio-Signature": good})
    assert r.status_code == 403
    r = client.post("/twilio/step?e=timeout", data=params, headers={"X-Twilio-Signature": good})
    assert r.status_code == 200


def test_signature_uses_the_public_url_not_the_proxy_facing_one(client: FlaskClient) -> None:
    """Behind TLS termination the app sees http://10.0.0.5:8000; Twilio signed the public URL."""
    params = call_params()
    ok = signed(client, "/twilio/voice", params, base_url="http://10.0.0.5:8000")
    assert ok.status_code == 200
    internal = signed(client, "/twilio/voice", params, base="http://10.0.0.5:8000",
                      base_url="http://10.0.0.5:8000")
    assert internal.status_code == 403


def test_signature_with_an_explicit_port_is_accepted(client: FlaskClient) -> None:
    r = signed(client, "/twilio/voice", call_params(), base="https://hotline.example.org:443")
    assert r.status_code == 200


def test_wrong_auth_token_is_refused(client: FlaskClient) -> None:
    assert signed(client, "/twilio/voice", call_params(), token="other-token").status_code == 403


def test_refusals_are_logged_without_the_callers_number(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        client.post("/twilio/voice", data=call_params(From=CRIMEA))
        signed(client, "/twilio/voice", call_params(From=CRIMEA))
        signed(client, "/twilio/status", call_params(From=CRIMEA, CallStatus="completed"))
    assert "rejected" in caplog.text
    assert "978" not in caplog.text and "7978" not in caplog.text


# Requests a valid signature must not carry past the door: (what is sent, the log line).
FORGED_SHAPES = [
    # Twilio posts form-encoded bodies only: a JSON body is not parsed into parameters, so
    # a signature over the URL alone would otherwise admit any body.
    ({"content_type": "application/json", "data": '{"Digits": "1"}'},
     "Content-Type application/json is not application/x-www-form-urlencoded"),
    ({"content_type": "multipart/form-data", "data": {"Digits": "1"}},
     "Content-Type multipart/form-data is not application/x-www-form-urlencoded"),
    ({"content_type": "text/plain", "data": "Digits=1"},
     "Content-Type text/plain is not application/x-www-form-urlencoded"),
    # The signed URL is built from the decoded path: an escaped path that decodes to ours.
    ({"path": "/twilio/%76oice"}, "the raw path differs from its decoded form"),
    ({"path": "/twilio/callback%2Fconnect?a=1"}, "the raw path differs from its decoded form"),
]


@pytest.mark.parametrize(("shape", "logged"), FORGED_SHAPES)
def test_signed_requests_of_the_wrong_shape_are_refused(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, shape: dict[str, object], logged: str
) -> None:
    params = call_params(From=CRIMEA)
    path = str(shape.get("path", "/twilio/voice"))
    from urllib.parse import unquote

    signature = RequestValidator(TOKEN).compute_signature(BASE + unquote(path), {}
                                                          if "data" in shape else params)
    with caplog.at_level(logging.INFO):
        r = client.post(path, data=shape.get("data", params),
                        content_type=shape.get("content_type"),
                        headers={"X-Twilio-Signature": signature})
    assert r.status_code == 403
    assert logged in caplog.text
    assert "978" not in caplog.text


SHARED_KEY = "webhooks_sharedkey_01JZ8X4N6Y7Q2R3S4T5V6W7X8Y"
SHARED_SECRET = "shared-key-secret-of-the-hotline"


@pytest.mark.parametrize(("settings_header", "secret", "algorithm", "status", "logged"), [
    # Twilio signs with the SharedKey a Webhook Rule names, and says so in a header.
    (f"key={SHARED_KEY},algorithm=HMAC_SHA256", SHARED_SECRET, "HMAC_SHA256", 200, ""),
    (f"key={SHARED_KEY},algorithm=HMAC_SHA1", SHARED_SECRET, "HMAC_SHA1", 200, ""),
    # Signed with a key we were not given: refused, saying which key and what to set.
    ("key=webhooks_sharedkey_OTHER,algorithm=HMAC_SHA256", "another-secret", "HMAC_SHA256", 403,
     "signed with Twilio SharedKey webhooks_sharedkey_OTHER, which TWILIO_WEBHOOK_SHARED_KEYS "
     "does not hold"),
    # The header claims our key, but the signature was made with something else.
    (f"key={SHARED_KEY},algorithm=HMAC_SHA256", TOKEN, "HMAC_SHA256", 403,
     f"forged or mismatched signature (Twilio SharedKey {SHARED_KEY})"),
    (f"key={SHARED_KEY},algorithm=HMAC_SHA256", SHARED_SECRET, "HMAC_SHA1", 403,
     "forged or mismatched signature"),
    # An algorithm this version does not know: refused with a line, never a silent 403.
    (f"key={SHARED_KEY},algorithm=HMAC_SHA512", SHARED_SECRET, "HMAC_SHA256", 403,
     "and algorithm HMAC_SHA512, which this version cannot check"),
])
def test_twilio_shared_key_signatures(
    settings: Settings, caplog: pytest.LogCaptureFixture, settings_header: str, secret: str,
    algorithm: str, status: int, logged: str
) -> None:
    from tests.conftest import create_schema

    s = settings.replace(webhook_shared_keys=(("webhooks_sharedkey_OLD", "old-secret"),
                                              (SHARED_KEY, SHARED_SECRET)))
    create_schema(s.database_url, s.keystore_url)
    client = create_app(s, clock=lambda: SUNDAY).test_client()
    params = call_params()
    signature = RequestValidator(secret).compute_signature(f"{BASE}/twilio/voice", params, algorithm)
    with caplog.at_level(logging.INFO):
        r = client.post("/twilio/voice", data=params, headers={
            "X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": settings_header})
    assert r.status_code == status
    assert logged in caplog.text


def test_a_shared_key_signature_without_any_shared_key_set_says_so(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: such calls were checked against the auth token and refused in silence."""
    params = call_params()
    signature = RequestValidator(SHARED_SECRET).compute_signature(f"{BASE}/twilio/voice", params,
                                                                  "HMAC_SHA256")
    with caplog.at_level(logging.INFO):
        r = client.post("/twilio/voice", data=params, headers={
            "X-Twilio-Signature": signature,
            "X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_KEY},algorithm=HMAC_SHA256"})
    assert r.status_code == 403
    assert f"SharedKey {SHARED_KEY}, which TWILIO_WEBHOOK_SHARED_KEYS does not hold" in caplog.text


# --- answers ------------------------------------------------------------------------------


def test_status_callbacks_get_an_empty_response(client: FlaskClient) -> None:
    root = xml(signed(client, "/twilio/status", call_params(CallStatus="completed",
                                                              CallDuration="42")))
    assert root.tag == "Response" and len(root) == 0


def test_a_whole_call_reaches_the_voicemail_and_ends_politely(client: FlaskClient) -> None:
    root = xml(signed(client, "/twilio/voice", call_params()))
    root = xml(signed(client, action_of(root), call_params(Digits="2")))  # Ukrainian
    assert said(root) == ["Говоріть після сигналу"]
    record = root.find("Record")
    assert record is not None
    done = call_params(RecordingUrl="https://api.twilio.com/x", RecordingSid="RE" + "1" * 32,
                       RecordingDuration="12", Digits="#")
    root = xml(signed(client, action_of(root), done))
    assert said(root) == ["До побачення"] and root[-1].tag == "Hangup"


def test_a_retried_webhook_gets_the_same_answer(client: FlaskClient) -> None:
    first = xml(signed(client, "/twilio/voice", call_params()))
    path = action_of(first)
    a = signed(client, path, call_params(Digits="7")).get_data(as_text=True)
    b = signed(client, path, call_params(Digits="7")).get_data(as_text=True)
    assert a == b and "Нет такой кнопки" in a


@pytest.mark.parametrize(
    "extra",
    [
        {"From": "anonymous"},
        {"From": ""},
        {"From": "+266696687"},
        {"From": "client:operator-7"},
        {"Digits": ""},
        {"Digits": "1" * 300},
        {"Digits": "١"},
        {"SpeechResult": "Я хочу здатися в полон 🙏", "Confidence": "0.4"},
        {"From": "+7 (978) 123-45-67", "FromCountry": "Крым"},
    ],
)
def test_odd_but_signed_input_never_fails(client: FlaskClient, extra: dict[str, str]) -> None:
    root = xml(signed(client, "/twilio/voice", call_params(**extra)))
    again = xml(signed(client, action_of(root), call_params(**extra)))
    assert said(again), "the caller must hear something"


def test_missing_optional_fields_are_fine(client: FlaskClient) -> None:
    assert xml(signed(client, "/twilio/voice", {"CallSid": "CA1"})).find("Gather") is not None
    assert xml(signed(client, "/twilio/status", {})).tag == "Response"


@pytest.mark.parametrize(
    "query",
    ["/twilio/step", "/twilio/step?e=input", "/twilio/step?s=garbage&e=input",
     "/twilio/step?s=WyJ4Il0&e=input", "/twilio/step?e=nonsense&s=x"],
)
def test_an_unreadable_state_gets_an_apology_not_an_error(
    client: FlaskClient, query: str
) -> None:
    root = xml(signed(client, query, call_params(Digits="1")))
    assert root[0].tag == "Gather" and root.find("Record") is not None
    assert "техническая ошибка" in said(root)[0]


def test_a_flow_that_fails_mid_call_apologises_in_the_callers_language(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = xml(signed(client, "/twilio/voice", call_params()))
    root = xml(signed(client, action_of(root), call_params(Digits="3")))  # English
    path = action_of(root)

    def broken(*_a: object) -> None:
        raise RuntimeError("database is on fire")

    monkeypatch.setattr("ivr.engine.resume", broken)
    root = xml(signed(client, path, call_params(RecordingSid="RE1", Digits="#")))
    assert "technical problem" in said(root)[0]
    retry = root[0].get("action", "")
    assert "e=retry" in retry  # the retry goes back to where the caller was
    monkeypatch.undo()
    parts = urlsplit(retry)
    again = xml(signed(client, f"{parts.path}?{parts.query}", call_params(Digits="1")))
    assert said(again) == ["Speak after the tone"]


def test_a_broken_entry_flow_still_lets_callers_leave_a_message(
    settings: Settings, flows_dir: Path
) -> None:
    (flows_dir / "mini.yaml").write_text("id: hotline\nsteps: [oops\n", encoding="utf-8")
    app = create_app(settings, clock=lambda: SUNDAY)
    with app.test_client() as client:
        root = xml(signed(client, "/twilio/voice", call_params()))
        assert root.find("Record") is not None and "техническая ошибка" in said(root)[0]
        restart = xml(signed(client, action_of(root), call_params(Digits="1")))
        assert restart.find("Record") is not None
        health = healthz_details(client)
        assert health["status"] == "degraded" and health["entry_flow"]["ok"] is False
        assert any("mini.yaml:2:8: YAML syntax error" in p for p in health["flow_problems"])


def test_an_uncaught_bug_in_the_blueprint_still_gives_twiml(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr("ivr.calls.CallHandler.status", boom)
    root = xml(signed(client, "/twilio/status", call_params()))
    assert root.find("Record") is not None


def test_fallback_apologises_in_the_language_of_the_failed_url(client: FlaskClient) -> None:
    root = xml(signed(client, "/twilio/voice", call_params()))
    root = xml(signed(client, action_of(root), call_params(Digits="2")))
    failed = BASE + action_of(root)
    fb = xml(signed(client, "/twilio/fallback",
                    call_params(ErrorCode="11200", ErrorUrl=failed)))
    assert "технічна помилка" in said(fb)[0]
    plain = xml(signed(client, "/twilio/fallback", call_params(ErrorCode="11205")))
    assert "техническая ошибка" in said(plain)[0]


def test_recording_callback_is_acknowledged(client: FlaskClient) -> None:
    root = xml(signed(client, "/twilio/recording?s=abc",
                      call_params(RecordingSid="RE1", RecordingStatus="absent")))
    assert len(root) == 0


# --- health -------------------------------------------------------------------------------


def test_healthz_reports_database_flows_and_redis(client: FlaskClient) -> None:
    body = healthz_details(client)
    assert body["database"] == {"ok": True, "backend": "sqlite"}
    assert body["keystore"] == {"ok": True, "backend": "sqlite"}
    assert body["flows"]["hotline"]["stale"] is False
    assert len(body["flows"]["hotline"]["version"]) == 10
    assert body["entry_flow"] == {"id": "hotline", "ok": True}
    assert isinstance(body["redis"]["ok"], bool)


OPEN_FIELDS = {"status", "versions"}


@pytest.mark.parametrize(("authorization", "details"), [
    (None, False),
    ("Bearer wrong-token-wrong-token-wrong", False),
    (f"Bearer {HEALTHZ_TOKEN[:-1]}", False),  # a prefix of the token is not the token
    (f"Basic {HEALTHZ_TOKEN}", False),
    ("Bearer ", False),
    (f"Bearer {HEALTHZ_TOKEN}", True),
])
def test_healthz_shows_details_only_with_the_token(
    client: FlaskClient, authorization: str | None, details: bool
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = client.get("/healthz", headers=headers)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.get_json()
    text = r.get_data(as_text=True)
    assert set(body["versions"]) == {"ivr", "flows"} and len(body["versions"]["flows"]["hotline"]) == 10
    if details:
        assert body["status"] == "ok" and body["outbox"] == {"waiting": 0}
        assert body["flows"]["hotline"]["file"].endswith(".yaml")  # the flow files' paths
    else:
        assert set(body) == OPEN_FIELDS and body["status"] == "up"
        assert ".yaml" not in text and "outbox" not in text and "problems" not in text


def test_healthz_without_a_token_setting_shows_no_details(settings: Settings) -> None:
    app = create_app(settings.replace(healthz_token=""), clock=lambda: SUNDAY)
    body = app.test_client().get("/healthz", headers={"Authorization": "Bearer "}).get_json()
    assert set(body) == OPEN_FIELDS


def test_an_open_healthz_says_degraded_and_nothing_of_why(settings: Settings) -> None:
    app = create_app(settings.replace(database_url="sqlite:////proc/nope/ivr.db"), clock=lambda: SUNDAY)
    r = app.test_client().get("/healthz")
    assert r.get_json()["status"] == "degraded" and set(r.get_json()) == OPEN_FIELDS
    assert "/proc/nope" not in r.get_data(as_text=True)


def test_calls_go_on_when_redis_is_down(settings: Settings) -> None:
    app = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0"), clock=lambda: SUNDAY)
    with app.test_client() as client:
        body = healthz_details(client)
        assert body["redis"] == {"ok": False} and body["status"] == "ok"
        assert xml(signed(client, "/twilio/voice", call_params())).find("Gather") is not None


def test_healthz_says_when_the_database_is_unreachable(settings: Settings) -> None:
    app = create_app(settings.replace(database_url="sqlite:////proc/nope/ivr.db"), clock=lambda: SUNDAY)
    with app.test_client() as client:
        body = healthz_details(client)
        assert body["database"]["ok"] is False and body["status"] == "degraded"
        assert xml(signed(client, "/twilio/voice", call_params())).find("Gather") is not None


def test_recorded_prompts_are_played_and_served(settings: Settings, flows_dir: Path) -> None:
    audio = flows_dir / "audio"
    audio.mkdir()
    (audio / "hello-ru.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    flow = (flows_dir / "mini.yaml").read_text(encoding="utf-8")
    flow = flow.replace("prompt: {ru: Здравствуйте,",
                        "prompt: {ru: {text: Здравствуйте, audio: hello-ru.wav},")
    (flows_dir / "mini.yaml").write_text(flow, encoding="utf-8")
    app = create_app(settings, clock=lambda: SUNDAY)
    with app.test_client() as client:
        root = xml(signed(client, "/twilio/voice", call_params()))
        play = root.find(".//Play")
        assert play is not None and play.text == f"{BASE}/audio/hello-ru.wav"
        served = client.get("/audio/hello-ru.wav")
        assert served.status_code == 200 and served.data.startswith(b"RIFF")
        assert client.get("/audio/../mini.yaml").status_code == 404
        assert client.get("/audio/missing.wav").status_code == 404


def test_a_missing_audio_file_falls_back_to_the_text(settings: Settings, flows_dir: Path) -> None:
    flow = (flows_dir / "mini.yaml").read_text(encoding="utf-8")
    flow = flow.replace("prompt: {ru: Здравствуйте,",
                        "prompt: {ru: {text: Здравствуйте, audio: nowhere.wav},")
    (flows_dir / "mini.yaml").write_text(flow, encoding="utf-8")
    app = create_app(settings, clock=lambda: SUNDAY)
    with app.test_client() as client:
        root = xml(signed(client, "/twilio/voice", call_params()))
        assert root.find(".//Play") is None and said(root)[0] == "Здравствуйте"
        warnings = healthz_details(client)
        assert warnings["status"] == "ok"
