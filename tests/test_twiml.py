"""The TwiML each kind of turn becomes, and the call-state tokens in its URLs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from ivr.engine import AskKeys, AskRecording, CallState, Connect, End, Silence, Speak, Turn
from ivr.errors import StateError
from ivr.flow import VOICES
from ivr.twiml import Renderer, SignatureChecker, decode_state, encode_state

BASE = "https://hotline.example.org"
STATE = CallState("hotline", "abc123", "main_menu", "uk", 1, (("topic", "здатися"),))
HELLO = Speak("Вітаємо", "Google.uk-UA-Standard-A", "uk-UA")
SAFE = re.compile(r"^[A-Za-z0-9_-]*$")


def render(wait: object, say: tuple[Speak | Silence, ...] = (HELLO,)) -> ET.Element:
    xml = Renderer(BASE, "+15005550006").render(Turn(say, wait, STATE))  # type: ignore[arg-type]
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(xml)


def query(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    values = dict(parse_qsl(parts.query))
    assert all(SAFE.match(v) for v in values.values()), values
    return values


def test_menu_is_a_gather_with_the_prompt_inside_and_a_redirect_after() -> None:
    menu = Speak("Меню", "Google.uk-UA-Standard-A", "uk-UA")
    root = render(AskKeys((menu,), 1, 6, "#", "uk-UA", ("так", "ні")))
    gather, redirect = root[0], root[1]
    assert [el.tag for el in root] == ["Gather", "Redirect"]
    assert gather.get("input") == "dtmf speech" and gather.get("language") == "uk-UA"
    assert gather.get("numDigits") == "1" and gather.get("timeout") == "6"
    assert gather.get("hints") == "так, ні"
    # what the turn said before the menu plays inside the Gather too: callers can barge in
    assert [(c.tag, c.text) for c in gather] == [("Say", "Вітаємо"), ("Say", "Меню")]
    assert gather[0].get("voice") == "Google.uk-UA-Standard-A"
    assert decode_state(query(gather.get("action", ""))["s"]) == STATE
    assert query(gather.get("action", ""))["e"] == "input"
    assert query(redirect.text or "")["e"] == "timeout"


def test_hash_as_a_menu_key_turns_off_the_finish_key() -> None:
    gather = render(AskKeys((HELLO,), 1, 5, "", None))[0]
    assert gather.get("finishOnKey") == "" and gather.get("input") == "dtmf"


def test_record_has_limits_a_beep_and_a_status_callback() -> None:
    root = render(AskRecording(180, "#", 5))
    record = root[1]
    assert record.tag == "Record"
    assert record.get("maxLength") == "180" and record.get("finishOnKey") == "#"
    assert record.get("playBeep") == "true" and record.get("timeout") == "5"
    assert query(record.get("action", ""))["e"] == "recorded"
    callback = record.get("recordingStatusCallback", "")
    assert urlsplit(callback).path == "/twilio/recording" and query(callback)["s"]
    assert root[2].tag == "Redirect" and query(root[2].text or "")["e"] == "silence"


def test_transfer_dials_from_the_hotline_number_and_bridges_on_answer() -> None:
    dial = render(Connect(("+380441112233", "+380441112234"), 20))[1]
    assert dial.tag == "Dial"
    assert dial.get("callerId") == "+15005550006"
    assert dial.get("answerOnBridge") == "true" and dial.get("timeout") == "20"
    assert [n.text for n in dial] == ["+380441112233", "+380441112234"]
    assert query(dial.get("action", ""))["e"] == "dialed"


def test_hangup_pause_and_recorded_audio() -> None:
    audio = Speak("fallback text", "Polly.Joanna", "en-US", audio="greeting en.wav")
    root = render(End(), (audio, Silence(2)))
    assert [el.tag for el in root] == ["Play", "Pause", "Hangup"]
    assert root[0].text == f"{BASE}/audio/greeting%20en.wav"
    assert root[1].get("length") == "2"


def test_rendering_is_cached_but_each_call_gets_its_own_state() -> None:
    renderer = Renderer(BASE, "+15005550006")
    wait = AskKeys((HELLO,), 1, 5, "#")
    other = CallState("hotline", "abc123", "main_menu", "uk", 2)
    first = renderer.render(Turn((HELLO,), wait, STATE))
    second = renderer.render(Turn((HELLO,), wait, other))
    assert first != second
    assert encode_state(other) in second and encode_state(STATE) not in second


@pytest.mark.parametrize("language", ["ru", "uk", "en", "de"])
def test_apology_offers_a_retry_and_a_voicemail_in_a_voice_that_speaks_it(language: str) -> None:
    root = ET.fromstring(Renderer(BASE, "+1").apology(language, None))
    tags = [el.tag for el in root]
    assert tags == ["Gather", "Say", "Record", "Say", "Hangup"]
    for say in root.iter("Say"):
        assert VOICES[say.get("voice", "")] == say.get("language")
    expected = {"ru": "ru-RU", "uk": "uk-UA", "en": "en-US", "de": "ru-RU"}[language]
    assert root[1].get("language") == expected
    assert query(root[0].get("action", ""))["e"] == "restart"


@given(
    step=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,30}", fullmatch=True),
    attempts=st.integers(0, 9),
    variables=st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=40), max_size=4),
)
def test_state_token_round_trips_and_stays_url_safe(
    step: str, attempts: int, variables: dict[str, str]
) -> None:
    state = CallState("hotline", "0123456789", step, "ru", attempts,
                      tuple(sorted(variables.items())))
    token = encode_state(state)
    assert SAFE.match(token)
    assert decode_state(token) == state


@pytest.mark.parametrize(
    "token", ["", "!!!", "e30", "W10", "WzEsMiwzXQ", "x" * 5000, encode_state(STATE)[:-3] + "@@@"]
)
def test_garbage_tokens_are_state_errors(token: str) -> None:
    with pytest.raises(StateError):
        decode_state(token)


param_names = st.text(st.characters(codec="utf-8"), min_size=1,
                      max_size=12)
param_values = st.lists(st.text(st.characters(codec="utf-8"),
                                max_size=30), min_size=1, max_size=3)


@given(url=st.sampled_from([BASE + "/twilio/voice", BASE + "/twilio/step?s=abc&e=input"]),
       params=st.dictionaries(param_names, param_values, max_size=25))
def test_fast_signature_is_exactly_twilios(url: str, params: dict[str, list[str]]) -> None:
    """The hot-path HMAC equals RequestValidator.compute_signature for any parameters."""
    checker = SignatureChecker("secret-token")
    theirs = RequestValidator("secret-token").compute_signature(url, MultiDict(
        [(k, v) for k, vs in params.items() for v in vs]))
    assert checker.expected(url, params) == theirs
    assert checker.valid(url, params, theirs)


@given(params=st.dictionaries(param_names, param_values, max_size=25))
def test_form_parsing_matches_the_standard_library(params: dict[str, list[str]]) -> None:
    from urllib.parse import parse_qs, urlencode

    from ivr.voice import parse_form

    body = urlencode([(k, v) for k, vs in params.items() for v in vs])
    assert parse_form(body) == parse_qs(body, keep_blank_values=True)
