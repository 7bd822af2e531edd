"""The REST stand-in (`ivr.standin.api.TwilioApi`) as `requests` and the real `twilio` library see it.

Everything here goes over a real socket to 127.0.0.1: the paths, the Basic auth, the JSON
shapes and error codes must be Twilio's, or tests of `TwilioProvider` prove nothing.
"""

from __future__ import annotations

import http.client
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ivr.standin.api import TwilioApi, new_sid, tone_wav

ACCOUNT = "AC" + "1" * 32
OTHER_ACCOUNT = "AC" + "2" * 32
TOKEN = "standin-auth-token"
HOTLINE = "+15005550006"
OPERATOR = "+380441112233"
WAV = tone_wav(0.5)
QUIET = logging.getLogger("tests.standin.twilio_http")
QUIET.setLevel(logging.WARNING)


@pytest.fixture
def api() -> Iterator[TwilioApi]:
    """A stand-in on a free port of 127.0.0.1, stopped after the test."""
    server = TwilioApi(ACCOUNT, TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(api: TwilioApi) -> Iterator[Any]:
    """The real `twilio.rest.Client`, its API domain pointed at the stand-in."""
    http = TwilioHttpClient(timeout=5, logger=QUIET)
    twilio = Client(ACCOUNT, TOKEN, http_client=http)
    twilio.edge = None
    twilio.region = None
    twilio.api.base_url = api.base_url
    yield twilio
    http.session.close()


def account_url(api: TwilioApi, rest: str, account: str = ACCOUNT) -> str:
    return f"{api.base_url}/2010-04-01/Accounts/{account}{rest}"


def media_url(api: TwilioApi, sid: str, ext: str = ".wav") -> str:
    return account_url(api, f"/Recordings/{sid}{ext}")


def twilio_error(r: requests.Response, status: int, code: int) -> dict[str, Any]:
    """Assert Twilio's legacy error shape; return it."""
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["code"] == code and body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    return body


# --- recordings over plain HTTP ---------------------------------------------------------------


def test_right_credentials_fetch_the_exact_wav(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    r = requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "audio/x-wav"
    assert r.headers["Content-Length"] == str(len(WAV))
    assert r.content == WAV
    # the RecordingUrl itself (no extension) serves WAV too
    r = requests.get(api.recording_url(sid), auth=(ACCOUNT, TOKEN), timeout=5)
    assert (r.status_code, r.headers["Content-Type"], r.content) == (200, "audio/x-wav", WAV)
    assert api.requests[-1].authenticated


def test_mp3_and_json_metadata(api: TwilioApi) -> None:
    call_sid = new_sid("CA")
    sid = api.add_recording(new_sid("RE"), WAV, call_sid=call_sid, mp3=b"ID3fake-mp3")
    r = requests.get(media_url(api, sid, ".mp3"), auth=(ACCOUNT, TOKEN), timeout=5)
    assert (r.status_code, r.headers["Content-Type"], r.content) == (200, "audio/mpeg", b"ID3fake-mp3")
    meta = requests.get(media_url(api, sid, ".json"), auth=(ACCOUNT, TOKEN), timeout=5).json()
    assert meta["sid"] == sid and meta["call_sid"] == call_sid and meta["account_sid"] == ACCOUNT
    assert meta["status"] == "completed" and meta["duration"] == "0"  # half a second rounds down
    assert meta["uri"] == f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.json"


def test_api_key_and_secret_are_accepted(api: TwilioApi) -> None:
    key = "SK" + "3" * 32
    api.add_api_key(key, "key-secret")
    sid = api.add_recording(new_sid("RE"), WAV)
    assert requests.get(media_url(api, sid), auth=(key, "key-secret"), timeout=5).content == WAV
    r = requests.get(media_url(api, sid), auth=(key, TOKEN), timeout=5)
    twilio_error(r, 401, 20003)


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param((ACCOUNT, "wrong-token"), id="wrong-token"),
        pytest.param((OTHER_ACCOUNT, TOKEN), id="wrong-account"),
        pytest.param((ACCOUNT, ""), id="empty-token"),
        pytest.param(None, id="no-auth"),
    ],
)
def test_bad_credentials_get_401_20003(api: TwilioApi, auth: tuple[str, str] | None) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    r = requests.get(media_url(api, sid), auth=auth, timeout=5)
    twilio_error(r, 401, 20003)
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert WAV[:44] not in r.content
    assert api.requests[-1].authenticated is False


@pytest.mark.parametrize(
    "header", ["Bearer " + TOKEN, "Basic not-base64!!", "Basic " + "QUMxMTE=", "Digest x"],
)
def test_malformed_authorization_gets_401(api: TwilioApi, header: str) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    r = requests.get(media_url(api, sid), headers={"Authorization": header}, timeout=5)
    twilio_error(r, 401, 20003)


def test_another_accounts_path_is_refused(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    url = account_url(api, f"/Recordings/{sid}.wav", account=OTHER_ACCOUNT)
    r = requests.get(url, auth=(ACCOUNT, TOKEN), timeout=5)
    twilio_error(r, 401, 20003)
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert r.content != WAV
    r = requests.delete(account_url(api, f"/Recordings/{sid}.json", account=OTHER_ACCOUNT),
                        auth=(ACCOUNT, TOKEN), timeout=5)
    assert r.status_code == 401 and not api.was_deleted(sid) and api.recording(sid) is not None


def test_delete_then_gone(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    r = requests.delete(media_url(api, sid, ".json"), auth=(ACCOUNT, TOKEN), timeout=5)
    assert r.status_code == 204 and r.content == b""
    assert api.was_deleted(sid) and api.deleted == [sid] and api.recording(sid) is None
    for ext in (".wav", ".json", ""):
        body = twilio_error(requests.get(media_url(api, sid, ext), auth=(ACCOUNT, TOKEN), timeout=5),
                            404, 20404)
        assert body["message"].startswith("The requested resource")
    twilio_error(requests.delete(media_url(api, sid, ".json"), auth=(ACCOUNT, TOKEN), timeout=5),
                 404, 20404)
    assert api.deleted == [sid]


def test_unknown_paths_and_methods(api: TwilioApi) -> None:
    auth = (ACCOUNT, TOKEN)
    sid = api.add_recording(new_sid("RE"), WAV)
    for url in (
        f"{api.base_url}/nothing",
        f"{api.base_url}/2010-04-01/Accounts/{ACCOUNT}",
        account_url(api, "/Nothing.json"),
        account_url(api, f"/Recordings/{new_sid('RE')}.wav"),
        account_url(api, "/Recordings/RE123.wav"),
        account_url(api, f"/Recordings/{sid}.ogg"),
        account_url(api, f"/Calls/{new_sid('CA')}.json"),
        account_url(api, f"/Messages/{new_sid('SM')}.json"),
    ):
        twilio_error(requests.get(url, auth=auth, timeout=5), 404, 20404)
    twilio_error(requests.post(media_url(api, sid), auth=auth, timeout=5), 405, 20004)
    twilio_error(requests.delete(media_url(api, sid), auth=auth, timeout=5), 405, 20004)
    twilio_error(requests.get(account_url(api, "/Calls.json"), auth=auth, timeout=5), 405, 20004)
    assert api.recording(sid) is not None


def test_requests_are_recorded_without_query_or_credentials(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    requests.get(media_url(api, sid) + "?secret=1", auth=(ACCOUNT, TOKEN), timeout=5)
    requests.get(media_url(api, sid), timeout=5)
    seen = api.requests
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.wav"
    assert [(s.method, s.path, s.status, s.authenticated) for s in seen] == [
        ("GET", path, 200, True), ("GET", path, 401, False),
    ]
    assert TOKEN not in repr(seen)


# --- the real twilio library ------------------------------------------------------------------


def test_twilio_client_fetches_and_deletes_a_recording(api: TwilioApi, client: Any) -> None:
    call_sid = new_sid("CA")
    sid = api.add_recording(new_sid("RE"), tone_wav(2.0), call_sid=call_sid)
    rec = client.recordings(sid).fetch()
    assert rec.sid == sid and rec.call_sid == call_sid and rec.account_sid == ACCOUNT
    assert rec.duration == "2" and rec.status == "completed"
    assert client.recordings(sid).delete() is True
    assert api.was_deleted(sid)
    with pytest.raises(TwilioRestException) as gone:
        client.recordings(sid).fetch()
    assert (gone.value.status, gone.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as again:
        client.recordings(sid).delete()
    assert (again.value.status, again.value.code) == (404, 20404)


def test_twilio_client_creates_a_call(api: TwilioApi, client: Any) -> None:
    events = ["initiated", "answered", "completed"]
    call = client.calls.create(
        to=OPERATOR, from_=HOTLINE, url="https://hotline.example.org/twilio/operator",
        method="POST", status_callback="https://hotline.example.org/twilio/status",
        status_callback_event=events, timeout=25,
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued" and call.direction == "outbound-api"
    assert (call.to, call._from) == (OPERATOR, HOTLINE)
    [made] = api.calls
    assert made.sid == call.sid
    assert made.params["To"] == OPERATOR and made.params["From"] == HOTLINE
    assert made.params["Url"] == "https://hotline.example.org/twilio/operator"
    assert made.params["StatusCallback"] == "https://hotline.example.org/twilio/status"
    assert made.params["Method"] == "POST" and made.params["Timeout"] == "25"
    assert made.multi["StatusCallbackEvent"] == events
    fetched = client.calls(call.sid).fetch()
    assert fetched.sid == call.sid and fetched.status == "queued"


def test_twilio_client_sends_a_message(api: TwilioApi, client: Any) -> None:
    text = "Новий запис на гарячій лінії"
    message = client.messages.create(to=OPERATOR, from_=HOTLINE, body=text)
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued" and message.body == text and message.num_segments == "1"
    [sent] = api.messages
    assert sent.sid == message.sid
    assert (sent.params["To"], sent.params["From"], sent.params["Body"]) == (OPERATOR, HOTLINE, text)
    assert client.messages(message.sid).fetch().body == text


def test_twilio_client_with_a_wrong_token_gets_20003(api: TwilioApi) -> None:
    http = TwilioHttpClient(timeout=5, logger=QUIET)
    twilio = Client(ACCOUNT, "wrong-token", http_client=http)
    twilio.edge = twilio.region = None
    twilio.api.base_url = api.base_url
    sid = api.add_recording(new_sid("RE"), WAV)
    with pytest.raises(TwilioRestException) as exc:
        twilio.recordings(sid).delete()
    assert (exc.value.status, exc.value.code) == (401, 20003)
    assert not api.was_deleted(sid)
    http.session.close()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param({"to": "", "from_": HOTLINE, "url": "https://h.example.org/t"}, 21201, id="no-to"),
        pytest.param({"to": OPERATOR, "from_": "", "url": "https://h.example.org/t"}, 21213, id="no-from"),
        pytest.param({"to": OPERATOR, "from_": HOTLINE}, 21205, id="no-url"),
        pytest.param({"to": OPERATOR, "from_": HOTLINE, "url": "not a url"}, 21205, id="bad-url"),
        pytest.param({"to": "12345", "from_": HOTLINE, "url": "https://h.example.org/t"}, 21211,
                     id="bad-to"),
    ],
)
def test_call_parameters_are_checked(
    api: TwilioApi, client: Any, kwargs: dict[str, str], code: int,
) -> None:
    with pytest.raises(TwilioRestException) as exc:
        client.calls.create(**kwargs)
    assert (exc.value.status, exc.value.code) == (400, code)
    assert api.calls == []


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param({"to": "", "from_": HOTLINE, "body": "hi"}, 21604, id="no-to"),
        pytest.param({"to": OPERATOR, "from_": "", "body": "hi"}, 21603, id="no-from"),
        pytest.param({"to": OPERATOR, "from_": HOTLINE, "body": ""}, 21602, id="no-body"),
        pytest.param({"to": OPERATOR, "from_": HOTLINE, "body": "x" * 1601}, 21617, id="too-long"),
        pytest.param({"to": "0441112233", "from_": HOTLINE, "body": "hi"}, 21211, id="bad-to"),
    ],
)
def test_message_parameters_are_checked(
    api: TwilioApi, client: Any, kwargs: dict[str, str], code: int,
) -> None:
    with pytest.raises(TwilioRestException) as exc:
        client.messages.create(**kwargs)
    assert (exc.value.status, exc.value.code) == (400, code)
    assert api.messages == []


def test_missing_parameters_over_plain_http(api: TwilioApi) -> None:
    auth = (ACCOUNT, TOKEN)
    r = requests.post(account_url(api, "/Calls.json"), data={"From": HOTLINE, "Url": "https://h.example.org"},
                      auth=auth, timeout=5)
    twilio_error(r, 400, 21201)
    r = requests.post(account_url(api, "/Messages.json"), data={"From": HOTLINE, "Body": "hi"},
                      auth=auth, timeout=5)
    twilio_error(r, 400, 21604)
    r = requests.post(account_url(api, "/Messages.json"), data={"From": HOTLINE, "Body": "hi"}, timeout=5)
    twilio_error(r, 401, 20003)


def test_only_the_accounts_own_numbers_may_call_or_text() -> None:
    with TwilioApi(ACCOUNT, TOKEN, numbers=(HOTLINE,)) as api:
        auth = (ACCOUNT, TOKEN)
        call = {"To": OPERATOR, "From": "+15005550001", "Url": "https://h.example.org/t"}
        twilio_error(requests.post(account_url(api, "/Calls.json"), data=call, auth=auth, timeout=5),
                     400, 21210)
        sms = {"To": OPERATOR, "From": "+15005550001", "Body": "hi"}
        twilio_error(requests.post(account_url(api, "/Messages.json"), data=sms, auth=auth, timeout=5),
                     400, 21606)
        r = requests.post(account_url(api, "/Calls.json"), data={**call, "From": HOTLINE}, auth=auth,
                          timeout=5)
        assert r.status_code == 201 and r.json()["sid"] == api.calls[0].sid


# --- fault injection --------------------------------------------------------------------------


def test_fail_next_answers_the_next_requests_with_an_error(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.fail_next(2, 503)
    auth = (ACCOUNT, TOKEN)
    twilio_error(requests.get(media_url(api, sid), auth=auth, timeout=5), 503, 20503)
    twilio_error(requests.delete(media_url(api, sid, ".json"), auth=auth, timeout=5), 503, 20503)
    assert not api.was_deleted(sid)
    assert requests.get(media_url(api, sid), auth=auth, timeout=5).content == WAV
    api.fail_next(status=429)
    twilio_error(requests.get(media_url(api, sid), auth=auth, timeout=5), 429, 20429)
    api.fail_next(3)
    api.reset_faults()
    assert requests.get(media_url(api, sid), auth=auth, timeout=5).status_code == 200


def test_delay_holds_every_answer(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.delay(0.3)
    started = time.monotonic()
    assert requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=5).content == WAV
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=0.1)
    api.delay(0)
    started = time.monotonic()
    assert requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=5).status_code == 200
    assert time.monotonic() - started < 0.3


def test_truncate_keeps_the_first_bytes(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.truncate_recording(sid, 100)
    r = requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=5)
    assert r.headers["Content-Length"] == "100" and r.content == WAV[:100]


def test_truncate_announcing_the_full_length_cuts_the_transfer(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.truncate_recording(sid, 1000, announce_full_length=True)
    host, port = api.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.wav"
    token = requests.auth._basic_auth_str(ACCOUNT, TOKEN)
    conn.request("GET", path, headers={"Authorization": token})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == str(len(WAV))
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == WAV[:1000]
    conn.close()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(media_url(api, sid), auth=(ACCOUNT, TOKEN), timeout=5)


def test_bad_content_length_gets_400_and_no_traceback(
    api: TwilioApi, capfd: pytest.CaptureFixture[str],
) -> None:
    host, port = api.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /2010-04-01/Accounts/" + ACCOUNT.encode() + b"/Calls.json HTTP/1.1\r\n"
                     b"Host: x\r\nContent-Length: abc\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400 ")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- silence ----------------------------------------------------------------------------------


def test_the_server_logs_nothing(
    api: TwilioApi, client: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = "call back the survivor"
    sid = api.add_recording(new_sid("RE"), WAV)
    auth = (ACCOUNT, TOKEN)
    requests.get(media_url(api, sid), auth=auth, timeout=5)
    requests.get(media_url(api, sid) + "?To=" + OPERATOR, timeout=5)
    requests.get(f"{api.base_url}/nothing", auth=auth, timeout=5)
    client.messages.create(to=OPERATOR, from_=HOTLINE, body=secret_text)
    client.calls.create(to=OPERATOR, from_=HOTLINE, url="https://hotline.example.org/t")
    with pytest.raises(TwilioRestException):
        client.messages.create(to="12", from_=HOTLINE, body=secret_text)
    api.fail_next(status=500)
    requests.get(media_url(api, sid), auth=auth, timeout=5)
    # a client that gives up: the server's late answer meets a closed socket
    api.delay(0.3)
    with pytest.raises(requests.Timeout):
        requests.get(media_url(api, sid), auth=auth, timeout=0.05)
    deadline = time.monotonic() + 3
    while len(api.requests) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # the late answer is written after it is recorded
    api.delay(0)
    api.truncate_recording(sid, 10, announce_full_length=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(media_url(api, sid), auth=auth, timeout=5)
    assert len(api.requests) == 9
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    server_side = [r for r in caplog.records if not r.name.startswith(("urllib3", "tests."))]
    assert server_side == []
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert OPERATOR not in logged and secret_text not in logged and TOKEN not in logged


def test_the_recordings_list_pages_as_twilio_does_for_the_real_library(
    api: TwilioApi, client: Any
) -> None:
    sids = [api.add_recording(new_sid("RE"), WAV) for _ in range(7)]
    time.sleep(0.01)
    newest = api.add_recording(new_sid("RE"), WAV)
    listed = [r.sid for r in client.recordings.stream(page_size=3)]
    assert listed[0] == newest and sorted(listed) == sorted([*sids, newest])  # newest first
    pages = [s for s in api.requests if s.path.endswith("/Recordings.json")]
    assert [(s.method, s.status) for s in pages] == [("GET", 200)] * 3  # 3 + 3 + 2
    first = requests.get(account_url(api, "/Recordings.json?PageSize=3"), auth=(ACCOUNT, TOKEN),
                         timeout=5).json()
    assert (first["page"], first["page_size"], first["previous_page_uri"]) == (0, 3, None)
    assert first["first_page_uri"].endswith("/Recordings.json?PageSize=3&Page=0")
    assert first["next_page_uri"].endswith(f"Page=1&PageToken=PA{first['recordings'][-1]['sid']}")
    last = requests.get(api.base_url + first["next_page_uri"].replace("Page=1", "Page=2").replace(
        first["recordings"][-1]["sid"], listed[5]), auth=(ACCOUNT, TOKEN), timeout=5).json()
    assert [r["sid"] for r in last["recordings"]] == listed[6:] and last["next_page_uri"] is None
    bad = requests.get(account_url(api, "/Recordings.json?PageSize=0"), auth=(ACCOUNT, TOKEN), timeout=5)
    assert bad.status_code == 400
    other = requests.get(account_url(api, "/Recordings.json", OTHER_ACCOUNT), auth=(ACCOUNT, TOKEN),
                         timeout=5)
    assert other.status_code == 401


def test_an_inbound_call_is_fetched_with_its_from(api: TwilioApi, client: Any) -> None:
    sid = new_sid("CA")
    api.add_call(sid, "+79161234567", HOTLINE)
    call = client.calls(sid).fetch()
    assert (call._from, call.to, call.direction) == ("+79161234567", HOTLINE, "inbound")
    assert api.calls == []  # not a call the API placed
