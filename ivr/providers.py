"""Our only door to Twilio's REST API: download and delete recordings, place and delete calls, send SMS.

Why one seam:
- Everything that talks to Twilio's REST side goes through `TwilioProvider`, built from the
  settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_API_BASE). Tests and `ivr call`
  point TWILIO_API_BASE at the local stand-in (`ivr.standin.TwilioApi`), and the very same
  code, the real `twilio.rest.Client` included, runs against it.
- SSRF: a webhook's `RecordingUrl` comes from outside (anyone can post to a webhook URL
  until the signature check, and a bug could let one through). We never fetch a URL taken
  from a request: the media URL is built from our API base, our account sid and a
  recording sid that must look like `RE` + 32 hex digits. Credentials go only to that
  origin; a redirect elsewhere (Twilio may redirect media to its CDN) gets no credentials,
  and must stay on https.
- Retries are the caller's decision (the rq job, with rq's `Retry`): this module never
  retries. A `ProviderError` says whether trying again can help (`retryable`: network
  errors, timeouts, 5xx, 429) or not (401/403, a 404 on download, a bad sid).
- Nothing secret leaks through an error: its message names the operation, the sid and the
  HTTP status (and Twilio's numeric error code), never a phone number, a URL query, a body
  or Twilio's error text (which can quote the number). Errors are raised after the `except`
  block, so the library's exception, which carries the URL and Twilio's text, is neither
  chained nor kept as `__context__`: not in a logged traceback, not in an error reporter.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ivr.errors import ConfigError, IvrError

if TYPE_CHECKING:
    from ivr.config import Settings

# \Z, not $: `$` also matches before a final newline ("RE…\n" would reach the URL).
RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}\Z")
ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}\Z")
CALL_SID = re.compile(r"^CA[0-9a-f]{32}\Z")
E164 = re.compile(r"^\+[1-9]\d{6,14}\Z")
MAX_RECORDING = 64 * 1024 * 1024  # an hour of 8 kHz 16-bit mono is 57.6 MB
MAX_REDIRECTS = 3

# The twilio library logs each request's URL and headers at INFO: keep it to warnings.
_library_log = logging.getLogger("ivr.providers.twilio_http")
_library_log.setLevel(logging.WARNING)


class ProviderError(IvrError):
    """Twilio's REST API did not do what we asked.

    `retryable`: whether the same request may succeed later. `status`: the HTTP status
    (None for a network error or a request we refused to send). `code`: Twilio's error code.
    """

    def __init__(
        self, operation: str, *, retryable: bool, sid: str = "", status: int | None = None,
        code: int | None = None, reason: str = "",
    ) -> None:
        self.operation = operation
        self.retryable = retryable
        self.sid = sid
        self.status = status
        self.code = code
        parts = [f"twilio {operation}"]
        if sid:
            parts.append(sid)
        detail = f"HTTP {status}" if status is not None else reason
        if code is not None and code != status:
            detail += f" (Twilio error {code})"
        super().__init__(" ".join(parts) + (f": {detail}" if detail else ""))


class AtTwilio(NamedTuple):
    """A recording as Twilio's listing shows it: ids and state, no audio, no number."""

    sid: str
    call_sid: str
    status: str  # processing, completed, absent, failed, deleted
    duration: int  # seconds; -1 while Twilio does not say
    created: datetime | None


def retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class TwilioProvider:
    """Twilio's REST API for one account, through the real `twilio.rest.Client`.

    `api_base`: https://api.twilio.com, or the stand-in's http://127.0.0.1:PORT (plain
    http is refused for any other host: Basic auth would send the token in the clear).
    """

    def __init__(
        self, account_sid: str, auth_token: str, api_base: str = "https://api.twilio.com",
        *, timeout: float = 10.0, download_timeout: float = 30.0,
    ) -> None:
        if not ACCOUNT_SID.match(account_sid):
            raise ConfigError("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        if not auth_token:
            raise ConfigError("TWILIO_AUTH_TOKEN is empty")
        base = api_base.rstrip("/")
        parts = urlsplit(base)
        if (parts.scheme not in ("https", "http") or not parts.hostname or parts.query
                or parts.fragment or parts.username):
            raise ConfigError("TWILIO_API_BASE must be a URL like https://api.twilio.com")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigError("TWILIO_API_BASE must use https:// (http only on 127.0.0.1)")
        self.account_sid = account_sid
        self.api_base = base
        self._auth = (account_sid, auth_token)
        self._timeout = timeout
        self._download_timeout = download_timeout
        http = TwilioHttpClient(timeout=timeout, logger=_library_log)
        self.client = Client(account_sid, auth_token, http_client=http)
        # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host name.
        self.client.edge = None
        self.client.region = None
        self.client.api.base_url = base  # the `api` domain builds {base}/2010-04-01/Accounts/…
        self._session = requests.Session()

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioProvider:
        return cls(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base)

    def close(self) -> None:
        self._session.close()
        session = getattr(self.client.http_client, "session", None)
        if session is not None:
            session.close()

    # --- recordings -----------------------------------------------------------------------
    def media_url(self, recording_sid: str) -> str:
        """Where a recording's WAV is: built from our base and ids, never from a webhook."""
        sid = self._recording_sid("media_url", recording_sid)
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}.wav"

    def fetch_recording(self, recording_sid: str) -> bytes:
        """The recording's WAV bytes, exactly as Twilio stores them."""
        op = "fetch_recording"
        sid = self._recording_sid(op, recording_sid)
        url = self.media_url(sid)
        home = _origin(url)
        failure: ProviderError
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                auth = self._auth if _origin(url) == home else None  # credentials stay home
                with self._session.get(
                    url, auth=auth, stream=True, allow_redirects=False,
                    timeout=(self._timeout, self._download_timeout),
                    headers={"Accept": "audio/x-wav, audio/wav, */*", "Accept-Encoding": "identity"},
                ) as r:
                    if r.status_code in (301, 302, 303, 307, 308):
                        url = self._redirect(op, sid, url, r.headers.get("Location", ""))
                        continue
                    if r.status_code != 200:
                        raise ProviderError(op, sid=sid, status=r.status_code, code=_code(r),
                                            retryable=retryable_status(r.status_code))
                    return self._read(op, sid, r)
        except requests.RequestException as exc:
            failure = ProviderError(op, sid=sid, retryable=True, reason=_network(exc))
        except ValueError:
            # urllib.parse on a Location with a bad port or IPv6 host (requests parses it even
            # with allow_redirects=False, to prepare `Response.next`); the message quotes it.
            failure = ProviderError(op, sid=sid, retryable=False, reason="malformed redirect")
        else:
            failure = ProviderError(op, sid=sid, retryable=False, reason="too many redirects")
        raise failure  # outside the handler: the library's exception is not kept as context

    def _redirect(self, op: str, sid: str, current: str, location: str) -> str:
        if not location:
            raise ProviderError(op, sid=sid, retryable=False, reason="redirect without a Location")
        target = urljoin(current, location)
        scheme, host, _port = _origin(target)
        same = _origin(target) == _origin(current)
        if not (scheme == "https" or (same and _loopback(host))):
            raise ProviderError(op, sid=sid, retryable=False, reason="redirect to a non-https URL")
        return target

    def _read(self, op: str, sid: str, r: requests.Response) -> bytes:
        announced = r.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > MAX_RECORDING:
            raise ProviderError(op, sid=sid, retryable=False, reason="recording too large")
        chunks: list[bytes] = []
        size = 0
        cut = False
        try:
            for chunk in r.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > MAX_RECORDING:
                    raise ProviderError(op, sid=sid, retryable=False, reason="recording too large")
                chunks.append(chunk)
        except requests.exceptions.ChunkedEncodingError:
            cut = True  # urllib3 saw the connection close before Content-Length bytes came
        data = b"".join(chunks)
        if cut or (announced is not None and announced.isdigit() and int(announced) != len(data)):
            raise ProviderError(op, sid=sid, retryable=True, reason="download cut short")
        if not data:
            raise ProviderError(op, sid=sid, retryable=True, reason="empty download")
        return data

    def delete_recording(self, recording_sid: str) -> None:
        """Delete the recording at Twilio; one already gone (404) counts as deleted."""
        op = "delete_recording"
        sid = self._recording_sid(op, recording_sid)
        self._rest(op, sid, lambda: self.client.recordings(sid).delete(), gone_ok=True)

    def list_recordings(self, page_size: int = 100) -> Iterator[AtTwilio]:
        """Every recording the account holds, newest first, page by page (Twilio's paging,
        followed by the library); raises ProviderError when a page cannot be had."""
        op = "list_recordings"
        stream: Any = self._rest(op, "", lambda: self.client.recordings.stream(page_size=page_size))
        while True:
            item: Any = self._rest(op, "", lambda: next(stream, None))
            if item is None:
                return
            duration = str(item.duration or "")
            yield AtTwilio(str(item.sid), str(item.call_sid or ""), str(item.status or ""),
                           int(duration) if duration.lstrip("-").isdigit() else -1,
                           item.date_created or item.start_time)

    def call_from(self, call_sid: str) -> str:
        """The `From` of a call (its caller's number, `anonymous` when withheld), for a
        recording the webhooks never reported; never logged."""
        op = "fetch_call"
        if not CALL_SID.match(call_sid):
            raise ProviderError(op, retryable=False, reason="not a call sid (CA + 32 hex digits)")
        call: Any = self._rest(op, call_sid, lambda: self.client.calls(call_sid).fetch())
        return str(call._from or "")

    # --- calls and messages -----------------------------------------------------------------
    def delete_call(self, call_sid: str) -> None:
        """Delete a call from Twilio's call log (which keeps its numbers); gone (404) is deleted."""
        op = "delete_call"
        if not isinstance(call_sid, str) or not CALL_SID.match(call_sid):
            raise ProviderError(op, retryable=False, reason="not a call sid (CA + 32 hex digits)")
        self._rest(op, call_sid, lambda: self.client.calls(call_sid).delete(), gone_ok=True)

    def create_call(
        self, to: str, from_: str, url: str, status_callback: str, timeout: int = 30,
        *, status_callback_event: Sequence[str] = ("initiated", "ringing", "answered", "completed"),
    ) -> str:
        """Place an outbound call; Twilio fetches `url` when it is answered. Returns its CA… sid."""
        op = "create_call"
        self._numbers(op, to, from_)
        call: Any = self._rest(op, "", lambda: self.client.calls.create(
            to=to, from_=from_, url=url, method="POST", status_callback=status_callback,
            status_callback_method="POST", status_callback_event=list(status_callback_event),
            timeout=timeout,
        ))
        return str(call.sid)

    def send_sms(self, to: str, from_: str, body: str) -> str:
        """Send an SMS (never with a caller's number or words in it). Returns its SM… sid."""
        op = "send_sms"
        self._numbers(op, to, from_)
        message: Any = self._rest(op, "", lambda: self.client.messages.create(to=to, from_=from_, body=body))
        return str(message.sid)

    @staticmethod
    def _rest(op: str, sid: str, request: Callable[[], Any], gone_ok: bool = False) -> Any:
        """One call of the twilio library, its failures turned into a clean ProviderError."""
        try:
            return request()
        except TwilioRestException as exc:
            if gone_ok and exc.status == 404:
                return None
            failure = _from_twilio(op, sid, exc)
        except (requests.RequestException, TwilioException) as exc:
            failure = _from_library(op, sid, exc)
        raise failure  # outside the handler: the library's exception is not kept as context

    # --- checks -----------------------------------------------------------------------------
    @staticmethod
    def _recording_sid(op: str, sid: str) -> str:
        if not isinstance(sid, str) or not RECORDING_SID.match(sid):
            # The value may come from outside: it is not repeated in the message.
            raise ProviderError(op, retryable=False, reason="not a recording sid (RE + 32 hex digits)")
        return sid

    @staticmethod
    def _numbers(op: str, to: str, from_: str) -> None:
        for name, number in (("to", to), ("from", from_)):
            if not E164.match(number):
                raise ProviderError(op, retryable=False, reason=f"the {name} number is not in E.164 form")


def _code(r: requests.Response) -> int | None:
    try:
        payload = r.json()
    except ValueError:
        return None
    code = payload.get("code") if isinstance(payload, dict) else None
    return code if isinstance(code, int) else None


def _from_twilio(op: str, sid: str, exc: TwilioRestException) -> ProviderError:
    status = int(exc.status)
    code = exc.code if isinstance(exc.code, int) else None
    return ProviderError(op, sid=sid, status=status, code=code, retryable=retryable_status(status))


def _from_library(op: str, sid: str, exc: Exception) -> ProviderError:
    status = getattr(exc, "status", None)  # TwilioServiceException (RFC 9457 errors)
    if status is None and len(exc.args) > 1:  # a list's page: TwilioException(text, response)
        status = getattr(exc.args[1], "status_code", None)
    if isinstance(status, int):
        code = getattr(exc, "code", None)
        return ProviderError(op, sid=sid, status=status, code=code if isinstance(code, int) else None,
                             retryable=retryable_status(status))
    if isinstance(exc, requests.RequestException):
        return ProviderError(op, sid=sid, retryable=True, reason=_network(exc))
    return ProviderError(op, sid=sid, retryable=False, reason=type(exc).__name__)


def _network(exc: requests.RequestException) -> str:
    """The kind of network failure, without the URL its message carries."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"network error ({type(exc).__name__})"
