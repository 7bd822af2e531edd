"""Signed webhooks with whatever Twilio (or a caller's keypad) could send: never a 5xx."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.engine import CallState
from ivr.twiml import encode_state
from tests.conftest import signed

PARAM_NAMES = ["CallSid", "From", "To", "Digits", "SpeechResult", "Confidence", "CallStatus",
               "RecordingUrl", "RecordingSid", "RecordingStatus", "DialCallStatus", "ErrorUrl",
               "ErrorCode", "FromCountry", "CallerName", "Direction", "SequenceNumber"]
PATHS = ["/twilio/voice", "/twilio/step", "/twilio/status", "/twilio/fallback",
         "/twilio/recording"]
EVENTS = ["input", "timeout", "recorded", "silence", "dialed", "retry", "restart", "rescued",
          "", "x"]
STEPS = ["hello", "lang", "set_uk", "main", "operator", "voicemail", "bye", "nowhere", ""]

values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["anonymous", "", "+79781234567", "+380652123456", "#", "*", "hangup",
                     "completed", "busy"]),
    st.from_regex(r"[0-9*#]{0,300}", fullmatch=True),
)
states = st.builds(
    lambda step, lang, attempts, version: encode_state(
        CallState("hotline", version, step, lang, attempts)
    ),
    st.sampled_from(STEPS),
    st.sampled_from(["ru", "uk", "en", "de", ""]),
    st.integers(-5, 50),
    st.sampled_from(["5ab394585e", "0000000000", ""]),
)
queries = st.one_of(
    st.just(""),
    st.builds(lambda s, e, lang: f"?s={s}&e={e}&l={lang}", states, st.sampled_from(EVENTS),
              st.sampled_from(["ru", "uk", "en", "xx"])),
    st.from_regex(r"\?[A-Za-z0-9_=&-]{1,60}", fullmatch=True),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    query=queries,
    params=st.dictionaries(st.sampled_from(PARAM_NAMES), values, max_size=10),
)
def test_signed_webhooks_always_get_twiml(
    app: Flask, path: str, query: str, params: dict[str, str]
) -> None:
    with app.test_client() as client:
        response = signed(client, path + query, params)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(response.get_data(as_text=True))
    assert root.tag == "Response"
    if path in ("/twilio/voice", "/twilio/step", "/twilio/fallback"):
        assert root.find(".//Say") is not None or root.find(".//Play") is not None
