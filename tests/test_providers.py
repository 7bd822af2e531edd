"""`TwilioProvider`, our only door to Twilio's REST API, against the stand-in on 127.0.0.1.

What matters for a confidential hotline: the bytes come back exact, deletes really delete,
credentials never leave Twilio's origin, nothing is fetched from a URL we did not build, the
errors say whether a retry can help, and no error carries a phone number, the token, a URL or
Twilio's own text.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ivr.errors import ConfigError
from ivr.providers import MAX_REDIRECTS, ProviderError, TwilioProvider
from ivr.standin.api import TwilioApi, new_sid, tone_wav

ACCOUNT = "AC" + "1" * 32
TOKEN = "provider-test-token-0123456789"
HOTLINE = "+15005550006"
OPERATOR = "+380441112233"
OPERATOR_2 = "+380671234567"
STRANGER = "+15005550001"  # a number the account does not own
WAV = tone_wav(0.5)
SECRETS = (TOKEN, HOTLINE, OPERATOR, OPERATOR_2, STRANGER, "380441112233", "5005550006")


@pytest.fixture
def api() -> Iterator[TwilioApi]:
    """The stand-in on a free port of 127.0.0.1; the account owns only HOTLINE."""
    server = TwilioApi(ACCOUNT, TOKEN, numbers=(HOTLINE,))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider(api: TwilioApi) -> Iterator[TwilioProvider]:
    p = TwilioProvider(ACCOUNT, TOKEN, api.base_url, timeout=2, download_timeout=2)
    yield p
    p.close()


def assert_clean(exc: ProviderError, *extra: str) -> None:
    """No secret in the message, and no library exception chained or kept as context."""
    text = str(exc)
    for secret in (*SECRETS, *extra):
        assert secret not in text, (secret, text)
    assert "://" not in text and "?" not in text and "127.0.0.1" not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None, repr(exc.__context__)
    formatted = "".join(traceback.format_exception(exc))
    for secret in (*SECRETS, *extra):
        assert secret not in formatted


def raises(fn: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        fn()
    return info.value


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- a tiny server that records headers, for redirects ---------------------------------------


@dataclass(frozen=True)
class Hit:
    path: str
    authorization: str | None


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Recorder:
    """An HTTP(S) server on 127.0.0.1: `routes` maps a path to (status, headers, body)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[Hit] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                recorder.hits.append(Hit(path, self.headers.get("Authorization")))
                status, headers, body = recorder.routes.get(path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def redirector() -> Iterator[Recorder]:
    """Plays Twilio's API origin (plain http on loopback) and answers media with redirects."""
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def cdn(tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Another origin, on https (trusted through REQUESTS_CA_BUNDLE): where media may be redirected."""
    cert_path, key_path = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
    server = Recorder(context)
    yield server
    server.stop()


def media_path(sid: str) -> str:
    return f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.wav"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- constructor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    ["https://api.twilio.com", "https://api.twilio.com/", "http://127.0.0.1:8080", "http://localhost:1",
     "http://[::1]:8080"],
)
def test_constructor_accepts_https_and_loopback_http(base: str) -> None:
    p = TwilioProvider(ACCOUNT, TOKEN, base)
    assert p.api_base == base.rstrip("/")
    assert p.client.api.base_url == p.api_base
    p.close()


@pytest.mark.parametrize(
    "base",
    [
        "http://api.twilio.com", "http://10.0.0.5:8080", "http://127.0.0.1.nip.io",
        "http://0.0.0.0:8080", "https://api.twilio.com?x=1", "https://api.twilio.com/#frag",
        "https://user:pw@api.twilio.com", "ftp://api.twilio.com", "api.twilio.com", "",
    ],
)
def test_constructor_refuses_unsafe_api_bases(base: str) -> None:
    with pytest.raises(ConfigError):
        TwilioProvider(ACCOUNT, TOKEN, base)


@pytest.mark.parametrize(
    "account",
    ["", "AC123", "AC" + "G" * 32, "SK" + "1" * 32, "AC" + "A" * 32, ACCOUNT + "\n", " " + ACCOUNT],
)
def test_constructor_refuses_a_bad_account_sid(account: str) -> None:
    with pytest.raises(ConfigError) as exc:
        TwilioProvider(account, TOKEN)
    assert TOKEN not in str(exc.value)


def test_constructor_refuses_an_empty_token() -> None:
    with pytest.raises(ConfigError):
        TwilioProvider(ACCOUNT, "")


# --- recordings -------------------------------------------------------------------------------


def test_fetch_recording_returns_the_exact_bytes(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    assert provider.fetch_recording(sid) == WAV
    assert provider.media_url(sid) == f"{api.base_url}{media_path(sid)}"
    [seen] = api.requests
    assert (seen.method, seen.path, seen.status, seen.authenticated) == ("GET", media_path(sid), 200, True)


def test_delete_recording_deletes_and_a_second_delete_succeeds(
    api: TwilioApi, provider: TwilioProvider,
) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    provider.delete_recording(sid)
    assert api.was_deleted(sid) and api.recording(sid) is None
    provider.delete_recording(sid)  # already gone (404): counts as deleted
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.json"
    assert [(s.method, s.path, s.status) for s in api.requests] == [("DELETE", path, 204),
                                                                    ("DELETE", path, 404)]
    error = raises(lambda: provider.fetch_recording(sid))
    assert (error.status, error.code, error.retryable) == (404, 20404, False)
    assert_clean(error)


BAD_SIDS = [
    "../../etc/passwd", "../../etc", "RE123", "re" + "a" * 32, "RE" + "A" * 32, "RE" + "a" * 33,
    "RE" + "a" * 32 + "\n", "RE" + "a" * 32 + "/../../Calls", "https://evil.example.org/x.wav?x=1",
    "RE" + "a" * 32 + ".wav", "", "RE" + "a" * 31 + "%",
]


@pytest.mark.parametrize("bad", BAD_SIDS)
def test_a_bad_recording_sid_is_refused_before_any_request(
    api: TwilioApi, provider: TwilioProvider, bad: str,
) -> None:
    for op in ("fetch_recording", "delete_recording"):
        error = raises(lambda op=op: getattr(provider, op)(bad))  # type: ignore[misc]
        assert error.operation == op and error.retryable is False and error.status is None
        assert "not a recording sid" in str(error)
        if bad:
            assert bad not in str(error) and bad.strip() not in str(error)
        assert_clean(error)
    with pytest.raises(ProviderError):
        provider.media_url(bad)
    assert api.requests == []


def test_wrong_token_is_not_retryable(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    p = TwilioProvider(ACCOUNT, "wrong-" + TOKEN, api.base_url, timeout=2)
    for call in (lambda: p.fetch_recording(sid), lambda: p.delete_recording(sid),
                 lambda: p.create_call(OPERATOR, HOTLINE, "https://h.example.org/t", "https://h.example.org/s"),
                 lambda: p.send_sms(OPERATOR, HOTLINE, "hello")):
        error = raises(call)
        assert (error.status, error.code, error.retryable) == (401, 20003, False)
        assert "Authenticate" not in str(error)
        assert_clean(error, "wrong-" + TOKEN)
    assert not api.was_deleted(sid) and api.calls == [] and api.messages == []
    p.close()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_rate_limits_are_retryable(
    api: TwilioApi, provider: TwilioProvider, status: int,
) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.fail_next(4, status)
    for call in (lambda: provider.fetch_recording(sid), lambda: provider.delete_recording(sid),
                 lambda: provider.create_call(OPERATOR, HOTLINE, "https://h.example.org/t",
                                              "https://h.example.org/s"),
                 lambda: provider.send_sms(OPERATOR, HOTLINE, "hello")):
        error = raises(call)
        assert error.status == status and error.retryable is True
        assert_clean(error)
    assert not api.was_deleted(sid)
    assert provider.fetch_recording(sid) == WAV  # the faults are spent: the retry works


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_on_download_are_not_retryable(
    api: TwilioApi, provider: TwilioProvider, status: int,
) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.fail_next(status=status)
    error = raises(lambda: provider.fetch_recording(sid))
    assert error.status == status and error.retryable is False
    assert_clean(error)


def test_connection_refused_is_retryable() -> None:
    p = TwilioProvider(ACCOUNT, TOKEN, f"http://127.0.0.1:{free_port()}", timeout=1)
    sid = new_sid("RE")
    for call in (lambda: p.fetch_recording(sid), lambda: p.delete_recording(sid),
                 lambda: p.send_sms(OPERATOR, HOTLINE, "hello")):
        error = raises(call)
        assert error.retryable is True and error.status is None
        assert "connection failed" in str(error)
        assert_clean(error)
    p.close()


def test_timeouts_are_retryable(api: TwilioApi) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    p = TwilioProvider(ACCOUNT, TOKEN, api.base_url, timeout=0.1, download_timeout=0.1)
    api.delay(0.4)
    started = time.monotonic()
    for call in (lambda: p.fetch_recording(sid), lambda: p.delete_recording(sid),
                 lambda: p.create_call(OPERATOR, HOTLINE, "https://h.example.org/t", "https://h.example.org/s")):
        error = raises(call)
        assert error.retryable is True and error.status is None
        assert str(error).endswith("timed out")
        assert_clean(error)
    assert time.monotonic() - started < 1.2
    p.close()


def test_a_cut_download_is_retryable(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.truncate_recording(sid, 1000, announce_full_length=True)
    error = raises(lambda: provider.fetch_recording(sid))
    assert error.retryable is True and error.status is None
    assert "cut short" in str(error)
    assert_clean(error)


def test_a_short_but_complete_download_is_returned_as_is(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.truncate_recording(sid, 1000)
    assert provider.fetch_recording(sid) == WAV[:1000]  # checking the audio is the caller's job


def test_an_empty_download_is_retryable(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = api.add_recording(new_sid("RE"), WAV)
    api.truncate_recording(sid, 0)
    error = raises(lambda: provider.fetch_recording(sid))
    assert error.retryable is True and "empty download" in str(error)


def test_an_oversized_download_is_refused(
    api: TwilioApi, provider: TwilioProvider, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ivr.providers.MAX_RECORDING", 1000)
    sid = api.add_recording(new_sid("RE"), WAV)
    error = raises(lambda: provider.fetch_recording(sid))
    assert error.retryable is False and "too large" in str(error)


# --- redirects --------------------------------------------------------------------------------


def test_a_redirect_to_another_origin_carries_no_credentials(redirector: Recorder, cdn: Recorder) -> None:
    sid = new_sid("RE")
    cdn.routes["/media/x.wav"] = (200, {"Content-Type": "audio/x-wav"}, WAV)
    location = f"{cdn.base_url}/media/x.wav?Signature=s3cr"
    redirector.routes[media_path(sid)] = (302, {"Location": location}, b"")
    p = TwilioProvider(ACCOUNT, TOKEN, redirector.base_url, timeout=2)
    assert p.fetch_recording(sid) == WAV
    assert redirector.hits == [Hit(media_path(sid), basic(ACCOUNT, TOKEN))]
    assert cdn.hits == [Hit("/media/x.wav", None)]
    p.close()


def test_a_redirect_on_the_same_origin_keeps_credentials(redirector: Recorder) -> None:
    sid = new_sid("RE")
    redirector.routes[media_path(sid)] = (307, {"Location": "/stored/x.wav"}, b"")
    redirector.routes["/stored/x.wav"] = (200, {"Content-Type": "audio/x-wav"}, WAV)
    p = TwilioProvider(ACCOUNT, TOKEN, redirector.base_url, timeout=2)
    assert p.fetch_recording(sid) == WAV
    assert [h.authorization for h in redirector.hits] == [basic(ACCOUNT, TOKEN)] * 2
    p.close()


@pytest.mark.parametrize(
    "location",
    [
        "http://media.example.com/x.wav?Signature=s3cr",  # plain http, not loopback
        "http://10.1.2.3/x.wav",
        "ftp://media.example.com/x.wav",
        "http://127.0.0.1:{port}/x.wav",  # plain http to another loopback origin
        "https://127.0.0.1:99999/x.wav",  # a port that cannot be
        "https://127.0.0.1:s3cr/x.wav",
        "https://[::1/x.wav",  # a broken IPv6 host
        "",  # no Location at all
    ],
)
def test_an_unsafe_redirect_is_refused(redirector: Recorder, location: str) -> None:
    other = Recorder()
    sid = new_sid("RE")
    headers = {"Location": location.format(port=other.server.server_address[1])} if location else {}
    redirector.routes[media_path(sid)] = (302, headers, b"")
    p = TwilioProvider(ACCOUNT, TOKEN, redirector.base_url, timeout=2)
    error = raises(lambda: p.fetch_recording(sid))
    assert error.retryable is False and error.status is None
    assert_clean(error, "example.com", "Signature", "10.1.2.3")
    assert len(redirector.hits) == 1 and other.hits == []
    other.stop()
    p.close()


def test_endless_redirects_stop(redirector: Recorder) -> None:
    sid = new_sid("RE")
    redirector.routes[media_path(sid)] = (302, {"Location": media_path(sid)}, b"")
    p = TwilioProvider(ACCOUNT, TOKEN, redirector.base_url, timeout=2)
    error = raises(lambda: p.fetch_recording(sid))
    assert error.retryable is False and "too many redirects" in str(error)
    assert len(redirector.hits) == MAX_REDIRECTS + 1
    p.close()


# --- calls and messages -----------------------------------------------------------------------


def test_create_call_returns_its_sid_and_the_api_records_it(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = provider.create_call(OPERATOR, HOTLINE, "https://hotline.example.org/twilio/operator?s=abc",
                               "https://hotline.example.org/twilio/status", timeout=20)
    assert sid.startswith("CA") and len(sid) == 34
    [made] = api.calls
    assert made.sid == sid
    assert made.params["To"] == OPERATOR and made.params["From"] == HOTLINE
    assert made.params["Url"] == "https://hotline.example.org/twilio/operator?s=abc"
    assert made.params["Method"] == "POST" and made.params["Timeout"] == "20"
    assert made.params["StatusCallback"] == "https://hotline.example.org/twilio/status"
    assert made.params["StatusCallbackMethod"] == "POST"
    assert made.multi["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]


def test_send_sms_returns_its_sid_and_the_api_records_it(api: TwilioApi, provider: TwilioProvider) -> None:
    sid = provider.send_sms(OPERATOR, HOTLINE, "Новий запис: справа 42")
    assert sid.startswith("SM") and len(sid) == 34
    [sent] = api.messages
    assert sent.sid == sid
    assert (sent.params["To"], sent.params["From"], sent.params["Body"]) == (
        OPERATOR, HOTLINE, "Новий запис: справа 42")


@pytest.mark.parametrize(
    ("to", "from_"),
    [
        ("0441112233", HOTLINE), ("380441112233", HOTLINE), (OPERATOR, "anonymous"),
        (OPERATOR + "\n", HOTLINE), ("+0441112233", HOTLINE), ("", HOTLINE), (OPERATOR, ""),
        ("client:operator", HOTLINE), ("+38 044 111 22 33", HOTLINE),
    ],
)
def test_numbers_not_in_e164_are_refused_before_any_request(
    api: TwilioApi, provider: TwilioProvider, to: str, from_: str,
) -> None:
    for error in (
        raises(lambda: provider.create_call(to, from_, "https://h.example.org/t", "https://h.example.org/s")),
        raises(lambda: provider.send_sms(to, from_, "hello")),
    ):
        assert error.retryable is False and "E.164" in str(error)
        for value in (to, from_):
            if value:
                assert value.strip() not in str(error)
        assert_clean(error)
    assert api.requests == []


def test_twilios_refusals_are_not_retryable_and_say_nothing_of_the_numbers(
    api: TwilioApi, provider: TwilioProvider,
) -> None:
    call = raises(lambda: provider.create_call(OPERATOR, STRANGER, "https://h.example.org/t",
                                               "https://h.example.org/s"))
    assert (call.status, call.code, call.retryable) == (400, 21210, False)
    assert "verified" not in str(call)
    assert_clean(call)
    body = "Сумний текст, що не має потрапити в журнал"
    sms = raises(lambda: provider.send_sms(OPERATOR_2, STRANGER, body))
    assert (sms.status, sms.code, sms.retryable) == (400, 21606, False)
    assert_clean(sms, body)
    long = raises(lambda: provider.send_sms(OPERATOR_2, HOTLINE, "x" * 1601))
    assert (long.status, long.code, long.retryable) == (400, 21617, False)
    assert_clean(long)
    assert api.calls == [] and api.messages == []


def test_the_recordings_at_twilio_are_listed_page_by_page(
    api: TwilioApi, provider: TwilioProvider,
) -> None:
    """The housekeeper's listing (ivr.reconcile): every page, ids and state only."""
    sids = {api.add_recording(new_sid("RE"), WAV) for _ in range(5)}
    api.add_recording(new_sid("RE"), None, status="absent", duration=0)
    listed = list(provider.list_recordings(page_size=2))
    assert {r.sid for r in listed} >= sids and len(listed) == 6
    assert {r.status for r in listed} == {"completed", "absent"}
    assert all(r.created is not None and r.created.tzinfo is not None for r in listed)
    assert sum(1 for s in api.requests if s.path.endswith("/Recordings.json")) == 3
    api.fail_next(1, status=503)
    error = raises(lambda: list(provider.list_recordings()))
    assert (error.operation, error.status, error.retryable) == ("list_recordings", 503, True)
    assert_clean(error)
    call = new_sid("CA")
    api.add_call(call, OPERATOR, HOTLINE)
    assert provider.call_from(call) == OPERATOR
    assert raises(lambda: provider.call_from("CA../../x")).retryable is False
