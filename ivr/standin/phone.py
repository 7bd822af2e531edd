"""A local stand-in for Twilio's side of a phone call.

Twilio cannot be reached from our machines, so this plays its part faithfully: it posts
Twilio's standard parameters to our webhooks, signs each request with the auth token as
Twilio does (twilio's own RequestValidator computes the signature), and follows the TwiML
it gets back with Twilio's rules: the prompts nested in <Gather> play before it listens,
a <Gather> with no input falls through to the next verb, an empty <Record> skips its
action, a <Dial> posts DialCallStatus, the end of a document hangs up, a failed webhook
goes to the fallback URL with ErrorCode and ErrorUrl, and a status callback ends the call.
It also rejects what Twilio would reject: a non-XML answer, a document over 64 kB, or a
<Say> voice that does not speak its language.

With a `TwilioApi` (the REST side, `ivr.standin.api`) attached, a <Record> leaves the
caller's audio in that API under a new RE… sid, as Twilio does: the action URL and the
recordingStatusCallback get its RecordingUrl (on the API, without extension), an empty
message posts RecordingStatus=absent to the callback and skips the action.

`ivr call`, `ivr flows test`, the test suite and the benchmark all call through it.
"""

from __future__ import annotations

import io
import secrets
import urllib.error
import urllib.request
import wave
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

from ivr.flow import VOICES
from ivr.standin.api import all_silent, new_sid, rfc2822, tone_wav, wav_seconds

MAX_TWIML = 64_000
MAX_WEBHOOKS = 300
KNOWN_VERBS = {"Say", "Play", "Pause", "Gather", "Record", "Dial", "Redirect", "Hangup", "Reject"}


class TwimlError(Exception):
    """Our answer is something Twilio would refuse (it would play its own error message)."""


@dataclass
class HttpReply:
    status: int
    content_type: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply: ...


class FlaskTransport:
    """Calls the app in-process, as if over HTTP (the URL's path and query are kept)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        r = self.client.post(path, data=params, headers=headers)
        return HttpReply(
            r.status_code, r.headers.get("Content-Type", ""), r.get_data(as_text=True),
            dict(r.headers),
        )


class HttpTransport:
    """Calls a running server; `server` replaces the public base URL's host for the socket."""

    def __init__(self, public_base: str, server: str, timeout: float = 15.0) -> None:
        self.public_base = public_base.rstrip("/")
        self.server = server.rstrip("/")
        self.timeout = timeout  # Twilio gives up after 15 s

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        target = self.server + url[len(self.public_base):] if url.startswith(self.public_base) else url
        req = urllib.request.Request(
            target, data=urlencode(params).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return HttpReply(r.status, r.headers.get("Content-Type", ""),
                                 r.read().decode("utf-8", "replace"), dict(r.headers))
        except urllib.error.HTTPError as e:
            return HttpReply(e.code, e.headers.get("Content-Type", ""),
                             e.read().decode("utf-8", "replace"), dict(e.headers))


# --- what the caller does --------------------------------------------------------------

SILENCE = "wait"
HANG_UP = "hangup"


class Caller(Protocol):
    """The person on the phone: hears, and answers each wait with one action."""

    def hear(self, kind: str, text: str, locale: str) -> None: ...
    def keys(self, info: dict[str, str]) -> str: ...  # digits, "say:words", SILENCE or HANG_UP
    def record(self, info: dict[str, str]) -> str: ...  # finish key, SILENCE or HANG_UP
    def dial(self, numbers: list[str]) -> str: ...  # DialCallStatus the operator leg ends in


class SpeaksAudio(Protocol):
    """A caller who can also say something into a <Record> (optional, beside `Caller`)."""

    def audio(self, info: dict[str, str]) -> bytes | None: ...  # WAV bytes; None: a tone


CallerAudio = bytes | Callable[[dict[str, str]], bytes]


def synthesize(text: str, voice: str | None = None, rate: int = 8000, speed: int = 150) -> bytes:
    """`text` spoken by espeak-ng at telephone quality (sox), as Twilio would record it.

    The voice follows the script when not given: Ukrainian letters (і ї є ґ) → uk, other
    Cyrillic → ru, else en-us. Raises RuntimeError naming the missing Debian package. The
    same bytes every run: `sox -R` seeds its dither, which otherwise differs per call and
    flips some of tiny.en's words ("surrender" / "remember") from run to run.
    """
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed (apt-get install espeak-ng sox); "
                           "or give a WAV file instead")
    if voice is None:
        lower = text.lower()
        voice = "uk" if any(c in lower for c in "іїєґ") else (
            "ru" if any("а" <= c <= "я" or c == "ё" for c in lower) else "en-us")
    with tempfile.TemporaryDirectory() as tmp:
        raw, phone = Path(tmp) / "raw.wav", Path(tmp) / "phone.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        subprocess.run(["sox", "-R", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(phone)],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return phone.read_bytes()


FESTIVAL_RU = Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits")


def festival_russian(text: str, rate: int = 8000) -> bytes | None:
    """Russian `text` spoken by Debian's festival with festvox-ru, at telephone quality; None
    when they are not installed. Whisper understands this voice (espeak-ng's Russian it does
    not). The same bytes every run (`sox -R`)."""
    import shutil
    import subprocess
    import tempfile

    if shutil.which("text2wave") is None or shutil.which("sox") is None or not FESTIVAL_RU.is_dir():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        words, raw, phone = Path(tmp) / "words.txt", Path(tmp) / "raw.wav", Path(tmp) / "phone.wav"
        words.write_text(text, encoding="utf-8")
        subprocess.run(["text2wave", "-eval", "(voice_msu_ru_nsh_clunits)", "-o", str(raw), str(words)],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        subprocess.run(["sox", "-R", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(phone)],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return phone.read_bytes()


class ScriptedCaller:
    """Answers from a list such as ["1", "wait", "#"]; hangs up when the list runs out.

    At a <Gather>: keys, `wait` (say nothing), `say:words` (speech: heard only by a Gather
    whose `input` includes speech, as at Twilio) or `hangup`. At a <Record>: the key that
    ends the message, `wait` (an empty message) or `hangup`. At a <Dial>: `answer`, `busy`,
    `no-answer` or `failed` (an unrelated item: no-answer).

    `recording`: what the caller says into a <Record> when a `TwilioApi` is attached to
    the phone, WAV bytes or a function of the <Record>'s attributes (default: a tone).
    """

    def __init__(
        self,
        presses: list[str],
        on_hear: Callable[[str, str, str], None] | None = None,
        recording: CallerAudio | None = None,
    ) -> None:
        self.presses = list(presses)
        self.on_hear = on_hear
        self.recording = recording

    def _next(self) -> str:
        return self.presses.pop(0) if self.presses else HANG_UP

    def hear(self, kind: str, text: str, locale: str) -> None:
        if self.on_hear:
            self.on_hear(kind, text, locale)

    def keys(self, info: dict[str, str]) -> str:
        return self._next()

    def record(self, info: dict[str, str]) -> str:
        return self._next()

    def audio(self, info: dict[str, str]) -> bytes | None:
        if self.recording is None or isinstance(self.recording, bytes):
            return self.recording
        return self.recording(info)

    def dial(self, numbers: list[str]) -> str:
        item = self._next()
        if item == HANG_UP:
            return HANG_UP
        return {"answer": "completed"}.get(item, item if item in ("busy", "failed") else "no-answer")


@dataclass
class Heard:
    kind: str  # say, play, pause
    text: str
    locale: str = ""


@dataclass
class CallLog:
    heard: list[Heard] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    # per answer: the steps it walked and the languages its <Say>s spoke
    turns: list[tuple[list[str], set[str]]] = field(default_factory=list)
    requests: int = 0
    ended: str = ""  # hangup, end-of-document, caller-hangup, reject, error
    errors: list[str] = field(default_factory=list)
    last_action: str = ""  # the last action URL the hotline gave (it carries the call state)

    def text(self) -> str:
        return "\n".join(h.text for h in self.heard if h.kind == "say")


class RecordingStore(Protocol):
    """Where a <Record> leaves the caller's audio: a `TwilioApi` here or a `RemoteApi`."""

    account_sid: str

    def recording_url(self, sid: str) -> str: ...

    def add_recording(
        self, sid: str, wav: bytes | None, *, call_sid: str | None = None,
        duration: int | None = None, status: str = "completed",
    ) -> str: ...


class Phone:
    """Twilio's part of one inbound call to the hotline.

    `api`: a `TwilioApi` (or a `RemoteApi` to one) of the same account that keeps what
    callers record.
    """

    def __init__(
        self,
        transport: Transport,
        public_base: str,
        auth_token: str,
        account_sid: str,
        hotline: str,
        on_step: Callable[[list[str]], None] | None = None,
        api: RecordingStore | None = None,
    ) -> None:
        self.transport = transport
        self.base = public_base.rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.hotline = hotline
        self.on_step = on_step
        self.api = api
        self.to, self.direction = hotline, "inbound"  # an `answer` call changes both
        self.callee: Caller | None = None  # at a <Number url>'s phone (see `answer`)
        self.callee_log = CallLog()
        if api is not None and api.account_sid != account_sid:
            raise ValueError("the Twilio API stand-in belongs to another account than the phone")

    def _params(self, from_: str, extra: dict[str, str]) -> dict[str, str]:
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": self.to,
            "Caller": from_,
            "Called": self.to,
            "CallStatus": "in-progress",
            "Direction": self.direction,
            "ApiVersion": "2010-04-01",
            "FromCountry": "",
            "FromState": "",
            "FromCity": "",
            "FromZip": "",
            "ToCountry": "US",
            "ToState": "",
            "ToCity": "",
            "ToZip": "",
            "CallerCountry": "",
            "CalledCountry": "US",
        }
        params.update(extra)
        return params

    def post(self, url: str, params: dict[str, str]) -> HttpReply:
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, params)}
        return self.transport.post(url, params, headers)

    def call(self, from_: str, caller: Caller) -> CallLog:
        self.call_sid = "CA" + secrets.token_hex(16)
        self.to, self.direction = self.hotline, "inbound"
        self.callee = None
        register = getattr(self.api, "add_call", None)  # the REST side knows the call, as Twilio
        if callable(register):
            register(self.call_sid, from_, self.hotline)
        log = CallLog()
        url = f"{self.base}/twilio/voice"
        params = self._params(from_, {"CallStatus": "ringing"})
        doc = self._fetch(url, params, log)
        while doc is not None and log.requests < MAX_WEBHOOKS:
            url, _extra, doc = self._follow(doc, url, from_, caller, log)
        if log.requests >= MAX_WEBHOOKS:
            log.errors.append("the call went on for too many webhooks")
            log.ended = "error"
        status = self._params(from_, {"CallStatus": "completed", "CallDuration": "60",
                                      "SequenceNumber": "1"})
        reply = self.post(f"{self.base}/twilio/status", status)
        if reply.status != 200 or "<Response" not in reply.body:
            log.errors.append(f"status callback answered {reply.status}")
        return log

    def answer(self, created: Any, person: Caller, pick_up: str = "answer",
               callee: Caller | None = None) -> CallLog:
        """Twilio's part of a call we placed with `calls.create` (`created`: the stand-in's
        record of it, `TwilioApi.calls[-1]`): the `To` phone rings; `pick_up` says what it
        does (`answer`, `busy`, `no-answer`, `failed`). Answered, Twilio fetches `Url`,
        signed, and follows the TwiML with `person` at that phone (their keys; at a <Dial>,
        whether the dialled phone answers); then it posts `StatusCallback` as the call ends.

        `callee`: whoever holds the dialled phone, for a `<Number url>` that asks them for a
        key before the bridge (`self.callee_log` keeps what they heard); an `answered_by`
        attribute (`machine_start`, say) is what answering-machine detection reports.
        """
        self.callee = callee
        p: dict[str, str] = created.params
        self.call_sid = created.sid
        self.to, self.direction = p["To"], "outbound-api"
        from_ = p["From"]
        log = CallLog()
        events = set(getattr(created, "multi", {}).get("StatusCallbackEvent", ["completed"]))
        callback = p.get("StatusCallback", "")

        def status(call_status: str, event: str, **extra: str) -> None:
            if callback and (event in events or event == "completed"):
                reply = self.post(callback, self._params(from_, {"CallStatus": call_status,
                                                                  "CallbackSource": "call-progress-events",
                                                                  "SequenceNumber": str(len(log.heard)),
                                                                  **extra}))
                if reply.status != 200:
                    log.errors.append(f"status callback answered {reply.status}")

        if pick_up in ("busy", "no-answer", "failed"):
            status(pick_up, "completed")
            log.ended = pick_up
            return log
        status("in-progress", "answered")
        url = p["Url"]
        doc = self._fetch(url, self._params(from_, {}), log)
        while doc is not None and log.requests < MAX_WEBHOOKS:
            url, _extra, doc = self._follow(doc, url, from_, person, log)
        status("completed", "completed", CallDuration="30")
        return log

    def _screen(self, number: ET.Element, caller_id: str, child_sid: str) -> bool:
        """Twilio runs a `<Number url>`'s TwiML for whoever answered that phone before it
        bridges: with `self.callee` at that phone (default: someone who presses nothing).
        True when the document ran to its end (bridged); a <Hangup> or their hanging up ends
        that leg unbridged. `AnsweredBy` comes with it when `machineDetection` is on."""
        callee: Caller = self.callee if self.callee is not None else ScriptedCaller([])
        saved = self.call_sid, self.to, self.direction
        self.call_sid, self.to, self.direction = child_sid, (number.text or "").strip(), "outbound-dial"
        log = self.callee_log = CallLog()
        try:
            extra = {"ParentCallSid": saved[0]}
            if number.get("machineDetection"):
                extra["AnsweredBy"] = getattr(callee, "answered_by", "human")
            url = number.get("url") or ""
            doc = self._fetch(url, self._params(caller_id, extra), log)
            while doc is not None and log.requests < MAX_WEBHOOKS:
                url, _extra, doc = self._follow(doc, url, caller_id, callee, log)
        finally:
            self.call_sid, self.to, self.direction = saved
        return log.ended == "end-of-document" and not log.errors

    def _fetch(self, url: str, params: dict[str, str], log: CallLog) -> ET.Element | None:
        log.requests += 1
        reply = self.post(url, params)
        try:
            return self._check(reply, log)
        except TwimlError as exc:
            log.errors.append(f"{urlsplit(url).path}: {exc}")
            # Twilio now requests the fallback URL with the error.
            fb = dict(params, ErrorCode="11200", ErrorUrl=url)
            reply = self.post(f"{self.base}/twilio/fallback", fb)
            try:
                return self._check(reply, log)
            except TwimlError as exc2:
                log.errors.append(f"fallback: {exc2}")
                log.ended = "error"
                return None

    def _check(self, reply: HttpReply, log: CallLog) -> ET.Element:
        if reply.status != 200:
            raise TwimlError(f"HTTP {reply.status}")
        if reply.content_type.split(";")[0].strip() not in ("text/xml", "application/xml"):
            raise TwimlError(f"Content-Type {reply.content_type!r} is not XML")
        if len(reply.body.encode()) > MAX_TWIML:
            raise TwimlError("TwiML over 64 kB")
        try:
            root = ET.fromstring(reply.body)
        except ET.ParseError as exc:
            raise TwimlError(f"invalid XML: {exc}") from exc
        if root.tag != "Response":
            raise TwimlError(f"root element is <{root.tag}>, not <Response>")
        for el in root.iter():
            if el.get("action"):
                log.last_action = el.get("action", "")
            if el is not root and el.tag not in KNOWN_VERBS | {"Number", "Client", "Conference"}:
                raise TwimlError(f"unknown verb <{el.tag}>")
            if el.tag == "Say":
                voice, lang = el.get("voice", ""), el.get("language", "")
                if voice in VOICES and lang and VOICES[voice] != lang:
                    raise TwimlError(f"voice {voice} does not speak {lang}")
                if not (el.text or "").strip():
                    raise TwimlError("<Say> with nothing to say")
        steps = reply.headers.get("X-IVR-Steps", "")
        if steps:
            log.steps += steps.split(",")
            log.turns.append((steps.split(","), {s.get("language", "") for s in root.iter("Say")}))
            if self.on_step:
                self.on_step(steps.split(","))
        return root

    def _play(self, el: ET.Element, caller: Caller, log: CallLog) -> None:
        if el.tag == "Say":
            h = Heard("say", (el.text or "").strip(), el.get("language", ""))
        elif el.tag == "Play":
            h = Heard("play", (el.text or "").strip())
        else:
            h = Heard("pause", el.get("length", "1"))
        log.heard.append(h)
        caller.hear(h.kind, h.text, h.locale)

    def _follow(
        self, doc: ET.Element, url: str, from_: str, caller: Caller, log: CallLog
    ) -> tuple[str, dict[str, str], ET.Element | None]:
        """Run one TwiML document; return the next request to make, if any."""
        for verb in doc:
            if verb.tag in ("Say", "Play", "Pause"):
                self._play(verb, caller, log)
            elif verb.tag == "Gather":
                for inner in verb:
                    self._play(inner, caller, log)
                info = dict(verb.attrib)
                answer = caller.keys(info)
                if answer == HANG_UP:
                    log.ended = "caller-hangup"
                    return url, {}, None
                if answer == SILENCE or (answer.startswith("say:")
                                         and "speech" not in verb.get("input", "dtmf")):
                    continue  # nothing pressed; words said to a keypad-only Gather go nowhere
                extra = {"Digits": answer}
                if answer.startswith("say:"):
                    extra = {"SpeechResult": answer[4:], "Confidence": "0.9"}
                action = verb.get("action") or url
                return self._next(action, from_, extra, log)
            elif verb.tag == "Record" and self.api is not None:
                answer = caller.record(dict(verb.attrib))
                recorded = self._record(self.api, verb, url, from_, caller, answer, log)
                if recorded is not None:
                    return recorded
            elif verb.tag == "Record":
                answer = caller.record(dict(verb.attrib))
                if answer == SILENCE:
                    continue  # empty recording: Twilio skips the action
                rec = "RE" + secrets.token_hex(16)
                extra = {
                    "RecordingSid": rec,
                    "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/"
                    f"{self.account_sid}/Recordings/{rec}",
                    "RecordingDuration": "7",
                    "Digits": answer,
                }
                callback = verb.get("recordingStatusCallback")
                action = verb.get("action") or url
                nxt = self._next(action, from_, extra, log)
                if callback:
                    cb = self._params(from_, {**extra, "RecordingStatus": "completed",
                                              "RecordingChannels": "1"})
                    cb.pop("Digits")
                    reply = self.post(callback, cb)
                    if reply.status != 200:
                        log.errors.append(f"recording callback answered {reply.status}")
                if answer == HANG_UP:
                    log.ended = "caller-hangup"
                    return url, {}, None
                return nxt
            elif verb.tag == "Dial":
                numbers = [n.text or "" for n in verb if n.tag == "Number"]
                status = caller.dial(numbers)
                if status == HANG_UP:
                    log.ended = "caller-hangup"
                    return url, {}, None
                dial_action = verb.get("action")
                extra = {"DialCallStatus": status, "DialCallSid": "CA" + secrets.token_hex(16)}
                if status == "completed":
                    screen = next((n for n in verb if n.tag == "Number" and n.get("url")), None)
                    bridged = screen is None or self._screen(
                        screen, verb.get("callerId") or self.hotline, extra["DialCallSid"])
                    extra["DialCallDuration"] = "42" if bridged else "0"
                if dial_action:
                    return self._next(dial_action, from_, extra, log)
            elif verb.tag == "Redirect":
                return self._next((verb.text or "").strip() or url, from_, {}, log)
            elif verb.tag in ("Hangup", "Reject"):
                log.ended = verb.tag.lower()
                return url, {}, None
        log.ended = log.ended or "end-of-document"
        return url, {}, None

    def _record(
        self, api: RecordingStore, verb: ET.Element, url: str, from_: str, caller: Caller, answer: str,
        log: CallLog,
    ) -> tuple[str, dict[str, str], ET.Element | None] | None:
        """A <Record> with the REST side attached; None: the message was empty, go on."""
        info = dict(verb.attrib)
        events = set((verb.get("recordingStatusCallbackEvent") or "completed").split())
        callback = verb.get("recordingStatusCallback")
        sid = new_sid("RE")
        started = rfc2822(datetime.now(UTC))
        meta = {"RecordingSid": sid, "RecordingUrl": api.recording_url(sid),
                "RecordingChannels": "1", "RecordingSource": "RecordVerb",
                "RecordingStartTime": started}

        def notify(status: str, duration: str | None) -> None:
            if not callback or status not in events:
                return
            params = {"AccountSid": self.account_sid, "CallSid": self.call_sid, **meta,
                      "RecordingStatus": status}
            if duration is not None:
                params["RecordingDuration"] = duration
            target = callback if callback.startswith(("http://", "https://")) else self.base + callback
            reply = self.post(target, params)
            if reply.status != 200:
                log.errors.append(f"recording callback ({status}) answered {reply.status}")

        notify("in-progress", None)
        audio = getattr(caller, "audio", None)
        wav = audio(info) if callable(audio) and answer != SILENCE else None
        # trim-silence leaves nothing of a recording that is all silence: empty, like `wait`
        trimmed = wav is not None and info.get("trim") == "trim-silence" and all_silent(wav)
        if answer == SILENCE or trimmed:  # an empty message: no action, the call goes on
            api.add_recording(sid, None, call_sid=self.call_sid, duration=0, status="absent")
            notify("absent", "0")
            if answer == HANG_UP:
                log.ended = "caller-hangup"
                return url, {}, None
            return None
        wav = _clip(wav if wav is not None else tone_wav(3.0), info.get("maxLength", "3600"))
        seconds = wav_seconds(wav)
        # whole seconds, as Twilio counts them: 0 for a recording under half a second
        duration = round(seconds) if seconds is not None else max(1, round(len(wav) / 16000))
        api.add_recording(sid, wav, call_sid=self.call_sid, duration=duration)
        extra = {"RecordingSid": sid, "RecordingUrl": api.recording_url(sid),
                 "RecordingDuration": str(duration), "Digits": answer}
        nxt = self._next(verb.get("action") or url, from_, extra, log)
        notify("completed", str(duration))
        if answer == HANG_UP:
            log.ended = "caller-hangup"
            return url, {}, None
        return nxt

    def _next(
        self, action: str, from_: str, extra: dict[str, str], log: CallLog
    ) -> tuple[str, dict[str, str], ET.Element | None]:
        if not action.startswith(("http://", "https://")):
            action = self.base + action if action.startswith("/") else action
        return action, extra, self._fetch(action, self._params(from_, extra), log)


def _clip(wav: bytes, max_length: str) -> bytes:
    """Twilio stops recording at maxLength seconds."""
    try:
        limit = float(max_length)
        with wave.open(io.BytesIO(wav), "rb") as r:
            params, keep = r.getparams(), int(limit * r.getframerate())
            if r.getnframes() <= keep:
                return wav
            frames = r.readframes(keep)
    except (ValueError, wave.Error, EOFError):
        return wav
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return out.getvalue()
