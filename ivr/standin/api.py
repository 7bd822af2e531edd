"""Twilio's REST side, played by a real HTTP server on 127.0.0.1.

What `ivr.providers.TwilioProvider` talks to in tests and in `ivr call`: the paths, the
HTTP Basic auth (Account SID + Auth Token, or an API key + secret), the JSON shapes and the
error bodies of Twilio's 2010-04-01 API, as the `twilio` library and `requests` see them:

    GET    /2010-04-01/Accounts/{AC}/Recordings/{RE}[.wav|.mp3]   the audio (no extension: WAV)
    GET    /2010-04-01/Accounts/{AC}/Recordings/{RE}.json         the metadata
    DELETE /2010-04-01/Accounts/{AC}/Recordings/{RE}.json         204; then 404, as on Twilio
    POST   /2010-04-01/Accounts/{AC}/Calls.json                   201, a queued call (CA…)
    POST   /2010-04-01/Accounts/{AC}/Messages.json                201, a queued message (SM…)
    GET    /2010-04-01/Accounts/{AC}/Calls/{CA}.json, Messages/{SM}.json
    GET    /2010-04-01/Accounts/{AC}/Recordings.json                the account's recordings,
           newest first, in Twilio's pages (PageSize, Page, PageToken; next_page_uri…)
    DELETE /2010-04-01/Accounts/{AC}/Calls/{CA}.json              204; then 404, as on Twilio

Errors have Twilio's legacy shape, `{"code", "message", "more_info", "status"}`: 401 with
20003 for missing or wrong credentials, 404 with 20404 for an unknown or deleted resource,
400 with Twilio's code for a missing parameter. Tests inject faults (`fail_next`, `delay`,
`truncate_recording`) and read what was done (`calls`, `messages`, `deleted`, `requests`).

It logs nothing: request bodies carry phone numbers and message text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import math
import re
import secrets
import struct
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2010-04-01"
MAX_BODY = 1024 * 1024
E164 = re.compile(r"^\+[1-9]\d{6,14}\Z")
ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}\Z")
ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)(?P<rest>/.*)?\Z")
RECORDING_PATH = re.compile(r"^/Recordings/(?P<sid>RE[0-9a-fA-F]{32})(?P<ext>\.json|\.wav|\.mp3)?\Z")
RECORDINGS_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Recordings\.json\Z")
CREATED_PATH = re.compile(r"^/(?P<kind>Calls|Messages)(?:/(?P<sid>(?:CA|SM)[0-9a-fA-F]{32}))?\.json\Z")
MEDIA_TYPES = {".wav": "audio/x-wav", ".mp3": "audio/mpeg"}
REASONS = {
    400: "Bad Request", 401: "Authenticate", 403: "Forbidden", 404: "Not Found",
    405: "Method not allowed", 413: "Request Entity Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class RemoteApi:
    """A `TwilioApi` running in another process (`ivr serve` in development), as a `Phone`
    sees it: where a caller's recording goes and the RecordingUrl it gets."""

    def __init__(self, base_url: str, account_sid: str, auth_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self._auth = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

    def recording_url(self, sid: str) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{sid}"

    def add_recording(
        self, sid: str, wav: bytes | None, *, call_sid: str | None = None,
        duration: int | None = None, status: str = "completed",
    ) -> str:
        import urllib.request

        request = urllib.request.Request(
            self.recording_url(sid) + ".wav", data=wav or b"", method="PUT",
            headers={"Authorization": f"Basic {self._auth}", "Content-Type": "audio/x-wav"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 201:
                raise RuntimeError(f"the Twilio stand-in did not keep the recording ({answer.status})")
        return sid

    def reachable(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.base_url + "/", timeout=2)
        except urllib.error.HTTPError:
            return True  # it answered (404): it is there
        except OSError:
            return False
        return True


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(when: datetime) -> str:
    """Twilio's date format in JSON: `Tue, 24 Nov 2026 10:00:00 +0000`."""
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def tone_wav(seconds: float = 3.0, hz: float = 440.0, rate: int = 8000) -> bytes:
    """A phone-quality recording (8 kHz, mono, 16-bit PCM) of a quiet tone."""
    frames = int(seconds * rate)
    samples = (int(3000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{frames}h", *samples))
    return out.getvalue()


def silence_wav(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A phone-quality recording of silence: what `ivr call` says at the tone by default."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * int(seconds * rate)))
    return out.getvalue()


def all_silent(data: bytes) -> bool:
    """Whether a WAV holds nothing but digital silence (what trim-silence leaves empty)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, struct.error):
        return False
    return not frames.strip(b"\x00")


def wav_seconds(data: bytes) -> float | None:
    """The length of a WAV recording, or None when the bytes are not a WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError, struct.error):
        return None


@dataclass
class Recording:
    sid: str
    call_sid: str
    wav: bytes | None  # None: an absent (empty) recording, nothing to download
    duration: int
    status: str = "completed"
    mp3: bytes | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    announce: int | None = None  # a Content-Length larger than `wav`: the download is cut


@dataclass(frozen=True)
class Created:
    """A call or a message created through the API, with the form parameters it was given."""

    sid: str
    params: dict[str, str]  # first value of each parameter
    multi: dict[str, list[str]]  # every value (StatusCallbackEvent repeats)
    body: dict[str, Any]  # the JSON the API answered with


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it: no query string, no body, no credentials."""

    method: str
    path: str
    status: int
    authenticated: bool


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    announce: int | None = None  # a Content-Length larger than the body: a cut transfer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: TwilioApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout, a closed socket) is no error: socketserver would
        print a traceback to stderr for it. A bug of the stand-in itself still shows."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use it with Twilio

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line and bodies may carry numbers."""

    def _any(self) -> None:
        self.server.api._handle(self)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _any


class TwilioApi:
    """Twilio's REST API for one account, on a free port of 127.0.0.1.

        with TwilioApi(account_sid, auth_token) as api:   # started; api.base_url
            sid = api.add_recording(new_sid("RE"), wav_bytes, call_sid=...)
            client.api.base_url = api.base_url

    `numbers`, if given, are the account's own numbers: a call or message from another
    number is refused with 21210/21606 as Twilio does for unverified caller IDs.
    """

    def __init__(
        self, account_sid: str, auth_token: str, *, numbers: tuple[str, ...] = (),
        on_call: Callable[[Created], None] | None = None,
        host: str = "127.0.0.1", port: int = 0,
    ) -> None:
        if not ACCOUNT_SID.match(account_sid):
            raise ValueError("account_sid must be AC followed by 32 hex digits")
        self.account_sid = account_sid
        self.host = host
        self.port = port  # 0: a free one
        self.numbers = frozenset(numbers)
        # Plays the phone a created call rings, as Twilio would, after answering the request
        # (`ivr serve` answers as an operator who presses 1; see `Phone.answer`).
        self.on_call = on_call
        self._credentials: dict[str, str] = {account_sid: auth_token}
        self._lock = threading.Lock()
        self._recordings: dict[str, Recording] = {}
        self._calls: list[Created] = []
        self._messages: list[Created] = []
        self._deleted: list[str] = []
        self._inbound: dict[str, dict[str, Any]] = {}  # calls to the hotline, as the API shows them
        self._call_log: set[str] = set()  # inbound calls Twilio's log holds (add_recording, add_call)
        self._seen: list[Seen] = []
        self._fail: list[int] = []  # statuses for the next requests, in order
        self._delay = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- running ------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a free port; return the base URL (like https://api.twilio.com)."""
        if self._server is None:
            server = _Server((self.host, self.port), _Handler)
            server.api = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name="twilio-api-standin", daemon=True,
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TwilioApi:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Twilio API stand-in is not running: call start() first")
        return f"http://{self.host}:{self._server.server_address[1]}"

    # --- what tests set up --------------------------------------------------------------
    def add_api_key(self, key_sid: str, secret: str) -> None:
        """An API key (SK…) + secret, accepted for Basic auth like the account's token."""
        with self._lock:
            self._credentials[key_sid] = secret

    def add_recording(
        self, sid: str, wav: bytes | None, *, call_sid: str | None = None,
        duration: int | None = None, status: str = "completed", mp3: bytes | None = None,
    ) -> str:
        """Register a recording (its WAV bytes; None for an absent one); return its sid."""
        if not re.match(r"^RE[0-9a-f]{32}$", sid):
            raise ValueError("a recording sid is RE followed by 32 hex digits")
        if duration is None:
            seconds = wav_seconds(wav) if wav else 0.0
            duration = round(seconds if seconds is not None else len(wav or b"") / 16000)
        rec = Recording(sid, call_sid or new_sid("CA"), wav, duration, status, mp3)
        with self._lock:
            self._recordings[sid] = rec
            self._call_log.add(rec.call_sid)
        return sid

    def add_call(self, sid: str, from_: str, to: str, *, direction: str = "inbound") -> None:
        """A call Twilio received (the phone stand-in registers each), for `calls(sid).fetch()`."""
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        body: dict[str, Any] = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "caller_name": None,
            "date_created": now, "date_updated": now, "direction": direction, "duration": None,
            "end_time": None, "forwarded_from": None, "from": from_, "from_formatted": from_,
            "parent_call_sid": None, "price": None, "price_unit": "USD", "sid": sid,
            "start_time": now, "status": "in-progress", "to": to, "to_formatted": to,
            "uri": uri + ".json", "subresource_uris": {"recordings": uri + "/Recordings.json"},
        }
        with self._lock:
            self._inbound[sid] = body
            self._call_log.add(sid)

    def has_call(self, sid: str) -> bool:
        """Whether the account's call log still holds this call (until it is deleted)."""
        with self._lock:
            return sid in self._call_log or any(c.sid == sid for c in self._calls)

    def recording(self, sid: str) -> Recording | None:
        """A copy of the recording as the API holds it (deleted ones are gone)."""
        with self._lock:
            rec = self._recordings.get(sid)
            return replace(rec) if rec else None

    def recording_url(self, sid: str) -> str:
        """The RecordingUrl Twilio posts: no extension (it serves WAV by default)."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{sid}"

    def truncate_recording(self, sid: str, n_bytes: int, *, announce_full_length: bool = False) -> None:
        """Keep only the first n bytes. With `announce_full_length` the server still sends
        the full Content-Length and drops the connection after n bytes: a cut download."""
        with self._lock:
            rec = self._recordings[sid]
            full = len(rec.wav or b"")
            rec.wav = (rec.wav or b"")[:n_bytes]
            rec.announce = full if announce_full_length and n_bytes < full else None

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next n requests (whatever they are) get `status` with Twilio's error JSON."""
        with self._lock:
            self._fail += [status] * n

    def delay(self, seconds: float) -> None:
        """Every following request waits this long before it is answered (0: no delay)."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def reset_faults(self) -> None:
        with self._lock:
            self._fail.clear()
            self._delay = 0.0

    # --- what tests read ----------------------------------------------------------------
    @property
    def calls(self) -> list[Created]:
        with self._lock:
            return list(self._calls)

    @property
    def messages(self) -> list[Created]:
        with self._lock:
            return list(self._messages)

    @property
    def deleted(self) -> list[str]:
        """Recording sids deleted through the API, in order."""
        with self._lock:
            return list(self._deleted)

    def was_deleted(self, sid: str) -> bool:
        with self._lock:
            return sid in self._deleted

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    # --- serving ------------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        method = h.command
        path = urlsplit(h.path).path
        declared = h.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isascii() and declared.isdigit() else -1
        authenticated = False
        if length < 0:
            answer = self._error(400, 20400, "Bad Request")  # as fail_next(status=400)
            h.close_connection = True
        elif length > MAX_BODY:
            answer = self._error(413, 20413, "Request entity too large")
            h.close_connection = True
        else:
            body = h.rfile.read(length) if length else b""
            with self._lock:
                failing = self._fail.pop(0) if self._fail else None
                pause = self._delay
            if pause:
                time.sleep(pause)
            authenticated = self._authenticated(h.headers.get("Authorization", ""))
            if failing is not None:
                answer = self._error(failing, 20000 + failing, REASONS.get(failing, "Error"))
            elif not authenticated:
                answer = self._error(401, 20003, "Authenticate")
            elif (listing := RECORDINGS_PATH.match(path)) and method == "GET":
                answer = (self._list_recordings(path, parse_qs(urlsplit(h.path).query))
                          if listing["account"] == self.account_sid
                          else self._error(401, 20003, "Authenticate"))
            else:
                answer = self._route(method, path, body)
        with self._lock:
            self._seen.append(Seen(method, path, answer.status, authenticated))
        self._send(h, answer)

    def _send(self, h: _Handler, a: _Answer) -> None:
        h.send_response(a.status)
        for name, value in a.headers.items():
            h.send_header(name, value)
        if a.status != 204:
            h.send_header("Content-Type", a.content_type)
        h.send_header("Content-Length", str(a.announce if a.announce is not None else len(a.body)))
        if a.announce is not None:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command != "HEAD" and a.status != 204:
            h.wfile.write(a.body)
        h.wfile.flush()

    def _authenticated(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        with self._lock:
            expected = self._credentials.get(user)
        if not sep or expected is None:
            return False
        return hmac.compare_digest(password.encode(), expected.encode())

    def _route(self, method: str, path: str, body: bytes) -> _Answer:
        m = ACCOUNT_PATH.match(path)
        if not m:
            return self._not_found(path)
        if m["account"] != self.account_sid:
            # Credentials of one account on another account's URL: Twilio says Authenticate.
            return self._error(401, 20003, "Authenticate")
        rest = m["rest"] or ""
        if (r := RECORDING_PATH.match(rest)) and method == "PUT" and r["ext"] == ".wav":
            # The stand-in's own door (Twilio has none): how a phone in another process
            # (`ivr call --url`) leaves what the caller said. An empty body: an absent one.
            self.add_recording(r["sid"], body or None, status="completed" if body else "absent")
            return _Answer(201)
        if r:
            return self._recording(method, path, r["sid"], r["ext"] or "")
        if c := CREATED_PATH.match(rest):
            if c["sid"] is None and method == "POST":
                form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
                return self._create_call(form) if c["kind"] == "Calls" else self._create_message(form)
            if c["sid"] is not None and method in ("GET", "HEAD"):
                return self._fetch_created(path, c["kind"], c["sid"])
            if c["sid"] is not None and method == "DELETE" and c["kind"] == "Calls":
                return self._delete_call(path, c["sid"])
            return self._error(405, 20004, "Method not allowed")
        return self._not_found(path)

    def _recording(self, method: str, path: str, sid: str, ext: str) -> _Answer:
        with self._lock:
            rec = self._recordings.get(sid)
            if rec is None:
                return self._not_found(path)
            if method == "DELETE":
                if ext not in ("", ".json"):
                    return self._error(405, 20004, "Method not allowed")
                del self._recordings[sid]
                self._deleted.append(sid)
                return _Answer(204)
            if method not in ("GET", "HEAD"):
                return self._error(405, 20004, "Method not allowed")
            if ext == ".json":
                return self._json(200, self._recording_json(rec))
            ext = ext or ".wav"  # the RecordingUrl itself serves WAV
            media = rec.wav if ext == ".wav" else rec.mp3
            if media is None:
                return self._not_found(path)
            announce = rec.announce if ext == ".wav" else None
            return _Answer(200, media, MEDIA_TYPES[ext], announce=announce)

    def _recording_json(self, rec: Recording) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{rec.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "call_sid": rec.call_sid,
            "conference_sid": None,
            "date_created": rfc2822(rec.created),
            "date_updated": rfc2822(rec.created),
            "start_time": rfc2822(rec.created),
            "duration": str(rec.duration),
            "sid": rec.sid,
            "price": None,
            "price_unit": "USD",
            "status": rec.status,
            "channels": 1,
            "source": "RecordVerb",
            "error_code": None,
            "uri": uri + ".json",
            "encryption_details": None,
            "media_url": self.base_url + uri,
            "subresource_uris": {
                "add_on_results": uri + "/AddOnResults.json",
                "transcriptions": uri + "/Transcriptions.json",
            },
        }

    def _list_recordings(self, path: str, query: dict[str, list[str]]) -> _Answer:
        """One page of the account's recordings, newest first, as Twilio pages them: PageSize
        (default 50, at most 1000), Page (the page's number, for the client's count) and
        PageToken (`PA` + the last sid of the page before), with `next_page_uri` until the end."""
        def one(name: str, default: str = "") -> str:
            return (query.get(name) or [default])[0]

        size, number = one("PageSize", "50"), one("Page", "0")
        if not (size.isdigit() and 1 <= int(size) <= 1000 and number.isdigit()):
            return self._error(400, 20001, "Invalid paging parameters")
        with self._lock:
            ordered = sorted(self._recordings.values(), key=lambda r: (r.created, r.sid),
                             reverse=True)
            token = one("PageToken")
            start = 0
            if token.startswith("PA"):
                sids = [r.sid for r in ordered]
                # After the page before's last recording (or where it was, if it was deleted).
                start = sids.index(token[2:]) + 1 if token[2:] in sids else int(number) * int(size)
            page = ordered[start:start + int(size)]
            records = [self._recording_json(r) for r in page]
        base = f"{path}?PageSize={size}"
        more = start + len(page) < len(ordered)
        return self._json(200, {
            "recordings": records, "page": int(number), "page_size": int(size), "start": start,
            "end": start + len(page) - 1, "uri": f"{base}&Page={number}" + (
                f"&PageToken={token}" if token else ""),
            "first_page_uri": f"{base}&Page=0",
            "next_page_uri": (f"{base}&Page={int(number) + 1}&PageToken=PA{page[-1].sid}"
                              if more and page else None),
            "previous_page_uri": (f"{base}&Page={int(number) - 1}&PageToken=PB{page[0].sid}"
                                  if int(number) > 0 and page else None),
        })

    def _create_call(self, form: dict[str, list[str]]) -> _Answer:
        p = {name: values[0] for name, values in form.items()}
        to, from_ = p.get("To", "").strip(), p.get("From", "").strip()
        if not to:
            return self._error(400, 21201, "No 'To' number is specified")
        if not from_:
            return self._error(400, 21213, "No 'From' number is specified")
        if not (p.get("Url") or p.get("Twiml") or p.get("ApplicationSid")):
            return self._error(400, 21205, "Url parameter is required")
        for name in ("Url", "StatusCallback", "FallbackUrl"):
            if p.get(name) and not re.match(r"^https?://[^/\s]+", p[name]):
                return self._error(400, 21205, f"{name} is not a valid URL: {p[name]}")
        if not (E164.match(to) or to.startswith(("client:", "sip:"))):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if self.numbers and from_ not in self.numbers:
            return self._error(400, 21210, f"The source phone number provided, {from_}, is not yet "
                                           "verified for your account.")
        if p.get("Timeout") and not p["Timeout"].isdigit():
            return self._error(400, 21220, "Invalid Timeout value")
        sid = new_sid("CA")
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        body: dict[str, Any] = {
            "account_sid": self.account_sid, "annotation": None, "answered_by": None,
            "api_version": API_VERSION, "caller_name": None, "date_created": now,
            "date_updated": now, "direction": "outbound-api", "duration": None, "end_time": None,
            "forwarded_from": None, "from": from_, "from_formatted": from_, "group_sid": None,
            "parent_call_sid": None, "phone_number_sid": new_sid("PN"), "price": None,
            "price_unit": "USD", "queue_time": "0", "sid": sid, "start_time": None,
            "status": "queued", "to": to, "to_formatted": to, "trunk_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {name: f"{uri}/{name.title().replace('_', '')}.json"
                                 for name in ("notifications", "recordings", "events")},
        }
        with self._lock:
            self._calls.append(Created(sid, p, form, body))
        if self.on_call is not None:
            threading.Timer(0.2, self.on_call, args=(self._calls[-1],)).start()
        return self._json(201, body)

    def _create_message(self, form: dict[str, list[str]]) -> _Answer:
        p = {name: values[0] for name, values in form.items()}
        to, from_ = p.get("To", "").strip(), p.get("From", "").strip()
        text = p.get("Body", "")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not (from_ or p.get("MessagingServiceSid")):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not (text or p.get("MediaUrl") or p.get("ContentSid")):
            return self._error(400, 21602, "Message body is required.")
        if len(text) > 1600:
            return self._error(400, 21617, "The concatenated message body exceeds the 1600 "
                                           "character limit.")
        if not E164.match(to):
            return self._error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if self.numbers and from_ and from_ not in self.numbers:
            return self._error(400, 21606, f"The From phone number {from_} is not a valid, "
                                           "SMS-capable inbound phone number for your account.")
        per = (160, 153) if text.isascii() else (70, 67)  # GSM-7 or UCS-2 segments
        segments = 1 if len(text) <= per[0] else -(-len(text) // per[1])
        sid = new_sid("SM")
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        body: dict[str, Any] = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": text,
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": from_ or None, "messaging_service_sid": p.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": str(segments), "price": None, "price_unit": "USD",
            "sid": sid, "status": "queued", "to": to, "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
        }
        with self._lock:
            self._messages.append(Created(sid, p, form, body))
        return self._json(201, body)

    def _delete_call(self, path: str, sid: str) -> _Answer:
        with self._lock:
            created = [c for c in self._calls if c.sid != sid]
            if sid not in self._call_log and len(created) == len(self._calls):
                return self._not_found(path)
            self._call_log.discard(sid)
            self._inbound.pop(sid, None)
            self._calls = created
            self._deleted.append(sid)
        return _Answer(204)

    def _fetch_created(self, path: str, kind: str, sid: str) -> _Answer:
        with self._lock:
            found = next((c for c in (self._calls if kind == "Calls" else self._messages)
                          if c.sid == sid), None)
            inbound = self._inbound.get(sid) if kind == "Calls" else None
        if inbound is not None:
            return self._json(200, inbound)
        return self._json(200, found.body) if found else self._not_found(path)

    # --- answers ------------------------------------------------------------------------
    def _json(self, status: int, payload: dict[str, Any]) -> _Answer:
        return _Answer(status, json.dumps(payload).encode())

    def _error(self, status: int, code: int, message: str) -> _Answer:
        answer = self._json(status, {
            "code": code, "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status,
        })
        if status == 401:  # every 401, also for another account's path
            answer.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return answer

    def _not_found(self, path: str) -> _Answer:
        return self._error(404, 20404, f"The requested resource {path} was not found")
