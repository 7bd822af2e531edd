"""Twilio's webhooks in, TwiML out: reads Twilio's parameters, runs the engine, renders.

No Flask here, so `ivr call`, `ivr flows test`, the benchmark and the web blueprint all go
through exactly this code. Whatever fails inside (our bug, a flow, a store), the caller
hears an apology in their language with a retry and a voicemail: never silence.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from ivr import codevoice, engine
from ivr.callbacks import Done, OperatorLeg
from ivr.casecode import SLOW_SECONDS, CodeDesk
from ivr.config import Settings
from ivr.engine import Caller, CallInput, CallState, Context, Turn
from ivr.errors import FlowNotServed, StateError
from ivr.flow import CONSENT_VARIABLE, CaseCode, Record
from ivr.limits import MAX_TWIML_BYTES
from ivr.registry import FlowRegistry
from ivr.twiml import EMPTY, HANGUP, Renderer, SignatureChecker, decode_state, encode_state
from ivr.voicemail import Reported

log = logging.getLogger(__name__)

RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}\Z")
ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
MAX_TWIML = MAX_TWIML_BYTES  # Twilio rejects a TwiML document over 64 kB

EVENTS = {
    "timeout": engine.NO_INPUT,
    "recorded": engine.RECORDED,
    "silence": engine.NO_RECORDING,
    "dialed": engine.DIALED,
    "retry": engine.START,
}


@dataclass(frozen=True, slots=True)
class Reply:
    twiml: str
    trace: tuple[str, ...] = ()  # the steps this webhook walked, for editors' tools


Params = Mapping[str, str]


class CallHandler:
    def __init__(
        self,
        settings: Settings,
        registry: FlowRegistry,
        clock: Callable[[], datetime] | None = None,
        voicemail: Callable[[Reported], None] | None = None,
        consent: Callable[[str, str], None] | None = None,
        transfer: Callable[[Caller, str, datetime], tuple[str, ...]] | None = None,
        ended: Callable[[str, str, int], None] | None = None,
        codes: CodeDesk | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock or (lambda: datetime.now(UTC))
        self.voicemail = voicemail
        self.consent = consent
        self.transfer = transfer
        self.ended = ended
        self.codes: CodeDesk | None = codes  # case codes and PINs; None: no code is given or checked
        self.renderer = Renderer(settings.public_base_url, settings.hotline_number)
        self.checker = SignatureChecker(settings.twilio_auth_token, settings.webhook_shared_keys)

    def _context(self, params: Params) -> Context:
        number = params.get("From", "")
        caller: Callable[[], Caller] = cache(lambda: self.registry.regions.which(number)[0])
        now = self.clock()
        return Context(now, caller, lambda state: self._targets(caller(), state.language, now))

    def _targets(self, caller: Caller, language: str, now: datetime) -> tuple[str, ...]:
        """Whom a transfer rings: on-duty operators of the caller's region and language, else
        TRANSFER_NUMBERS. A failure here must not drop the call: it rings the fallback."""
        if self.transfer is not None:
            try:
                found = self.transfer(caller, language, now)
            except Exception:
                log.exception("could not choose operators for a transfer; ringing TRANSFER_NUMBERS")
            else:
                if found:
                    return found
        return self.settings.transfer_numbers

    def _reply(self, turn: Turn) -> Reply:
        twiml = self.renderer.render(turn)
        if len(twiml.encode()) > MAX_TWIML:
            raise ValueError(f"TwiML for step {turn.state.step} is over 64 kB")
        return Reply(twiml, turn.trace)

    def incoming(self, params: Params) -> Reply:
        """A new call: start the entry flow."""
        try:
            turn = engine.start(self.registry.get, self.settings.entry_flow, self._context(params))
            return self._reply(turn)
        except FlowNotServed as exc:  # a flow problem, said at start-up and on /healthz
            log.warning("incoming call %s: %s; answered with the apology",
                        params.get("CallSid", "?"), exc)
            return Reply(self.renderer.apology("ru", None))
        except Exception:
            log.exception("incoming call %s failed; answered with the apology",
                          params.get("CallSid", "?"))
            return Reply(self.renderer.apology("ru", None))

    def step(self, query: Params, params: Params) -> Reply:
        """An action URL of ours: a menu answer, a recording, a dial outcome, a retry."""
        event = query.get("e", "")
        language = query.get("l", "ru")
        state: CallState | None = None
        try:
            if event == "rescued":  # the message left at the apology: kept like any other
                with contextlib.suppress(StateError):
                    state = decode_state(query.get("s", "")) if query.get("s") else None
                kept = self._report(params, state, "completed", language=language)
                state = None  # a failure after this point gets no retry
                return Reply(self.renderer.goodbye(language) if kept
                             else self.renderer.not_kept(language))
            if event == "restart":
                turn = engine.start(
                    self.registry.get, self.settings.entry_flow, self._context(params), language
                )
                return self._reply(turn)
            state = decode_state(query.get("s", ""))
            if event in ("pin", "pin2"):
                return self._choose_pin(state, event, params)
            if event == "cpin":
                return self._check_pin(state, params)
            given = self._input(event, params)
            if event == "input" and isinstance(self._step(state), CaseCode):
                return self._find_case(state, given, params)
            if given.event == engine.RECORDED and params.get("RecordingDuration", "").strip() == "0":
                # Under a second: nothing said. Noted (so it is deleted at Twilio), and the
                # flow goes on as for an empty message (`on_empty`).
                self._report(params, state, "completed")
                given = CallInput(engine.NO_RECORDING)
            if given.event == engine.RECORDED and not self._report(params, state, "completed"):
                # Neither the database nor the spool took it: no "thank you", the truth.
                return Reply(self.renderer.not_kept(state.language))
            step = self._step(state)
            if (given.event == engine.RECORDED and self.codes is not None
                    and isinstance(step, Record) and step.case_code):
                code = self._issue(params)
                if code is not None:  # said now or never: it is kept nowhere in clear
                    return self._say_code(state, code)
            turn = engine.resume(self.registry.get, state, given, self._context(params))
            agreed = turn.state.var(CONSENT_VARIABLE)
            if agreed is not None and agreed != state.var(CONSENT_VARIABLE):
                self._consent(params, agreed)
            return self._reply(turn)
        except Exception as exc:
            if isinstance(exc, StateError | FlowNotServed):
                log.warning("call %s: %s", params.get("CallSid", "?"), exc)
            else:
                log.exception("call %s failed at %s; answered with the apology",
                              params.get("CallSid", "?"), state.step if state else "?")
            token = query.get("s") if state is not None and event != "retry" else None
            return Reply(self.renderer.apology(state.language if state else language, token))

    # --- case codes and PINs (ivr/casecode.py) ----------------------------------------
    def _step(self, state: CallState) -> object:
        return self.registry.get(state.flow, state.version).steps.get(state.step)

    def _voice(self, state: CallState) -> Any:
        return self.registry.get(state.flow, state.version).languages[state.language]

    def _pin_url(self, state: CallState, event: str) -> str:
        return self.renderer.step_url(encode_state(state), event)

    def _issue(self, params: Params) -> str | None:
        """A new case's code; None (and the flow goes on as before) if it cannot be had."""
        assert self.codes is not None
        try:
            return self.codes.issue(params.get("CallSid", "")[:64]) if params.get("CallSid") else None
        except Exception:
            log.exception("could not give a case code to call %s", params.get("CallSid", "?")[:64])
            return None

    def _say_code(self, state: CallState, code: str) -> Reply:
        """The code twice, then the PIN; `state` is the record step's, resumed once done."""
        r = VoiceResponse()
        codevoice.say_code(r, code, state.language, self._voice(state))
        return Reply(codevoice.ask_pin(r, self._pin_url(state, "pin"), state.language,
                                       self._voice(state), "choose"), (state.step,))

    def _after_message(self, state: CallState, said: str, params: Params) -> Reply:
        """The flow after the message (the record step's `next`), with what was said first."""
        turn = engine.resume(self.registry.get, state, CallInput(engine.RECORDED),
                             self._context(params))
        text = codevoice.phrase(state.language, said)
        voice = self._voice(state)
        turn = replace(turn, say=(engine.Speak(text, voice.voice, voice.locale), *turn.say))
        return self._reply(turn)

    def _choose_pin(self, state: CallState, event: str, params: Params) -> Reply:
        """The new case's PIN, entered twice; `#` alone or silence: no PIN (said so). Two
        invalid or differing entries: no PIN either."""
        if self.codes is None:  # no code was given (no database): nothing to choose
            return self._reply(engine.resume(self.registry.get, state, CallInput(engine.RECORDED),
                                             self._context(params)))
        digits = params.get("Digits", "").strip().rstrip("#")
        try:
            found = self.codes.choose_pin(params.get("CallSid", "")[:64], digits, event == "pin2")
        except Exception:
            log.exception("could not keep the PIN of call %s", params.get("CallSid", "?")[:64])
            found = "gone"
        if found in ("invalid", "mismatch") and state.attempts >= 2:
            try:
                self.codes.give_up_pin(params.get("CallSid", "")[:64])
            except Exception:
                log.exception("could not drop the code of call %s", params.get("CallSid", "?")[:64])
            found = "skipped"
        if found in ("set", "skipped"):
            return self._after_message(state, found, params)
        if found == "gone":  # nothing waits for a PIN (a repeated request): go on
            return self._reply(engine.resume(self.registry.get, state, CallInput(engine.RECORDED),
                                             self._context(params)))
        if found == "again":
            return Reply(codevoice.ask_pin(VoiceResponse(), self._pin_url(state, "pin2"),
                                           state.language, self._voice(state), "confirm"),
                         (state.step,))
        retry = replace(state, attempts=state.attempts + 1)
        return Reply(codevoice.ask_pin(VoiceResponse(), self._pin_url(retry, "pin"),
                                       state.language, self._voice(state), "choose", (found,)),
                     (state.step,))

    def _find_case(self, state: CallState, given: CallInput, params: Params) -> Reply:
        """A code at a `case_code` step: a wrong one counts toward the burst; a right one asks
        for the PIN, the call linked to the case server-side."""
        code = given.digits.strip().rstrip("#") if given.event == engine.DIGITS else ""
        if not code:
            return self._reply(engine.resume(self.registry.get, state,
                                             CallInput(engine.CASE_REFUSED), self._context(params)))
        if self.codes is None:  # no database (a flow test): no code can be right
            return self._reply(engine.resume(self.registry.get, state,
                                             CallInput(engine.CASE_WRONG), self._context(params)))
        found = self.codes.find(params.get("CallSid", "")[:64], code, self.clock())
        if found.outcome == "found":
            reply = Reply(codevoice.ask_pin(VoiceResponse(), self._pin_url(state, "cpin"),
                                            state.language, self._voice(state), "pin"),
                          (state.step,))
        elif found.outcome == "wrong":
            reply = self._reply(engine.resume(self.registry.get, state, CallInput(engine.CASE_WRONG),
                                              self._context(params)))
        else:  # locked, busy
            reply = self._refused(state, found.outcome, params)
        if found.slow:
            reply = Reply(codevoice.paused(reply.twiml, SLOW_SECONDS), reply.trace)
        return reply

    def _refused(self, state: CallState, why: str, params: Params) -> Reply:
        turn = engine.resume(self.registry.get, state, CallInput(engine.CASE_REFUSED),
                             self._context(params))
        voice = self._voice(state)
        said_first = engine.Speak(codevoice.phrase(state.language, why), voice.voice, voice.locale)
        return self._reply(replace(turn, say=(said_first, *turn.say)))

    def _check_pin(self, state: CallState, params: Params) -> Reply:
        """The PIN after a right code: right goes on to the step's `found`, in the case's
        language; wrong counts as a wrong code; the last wrong one locks the case's line."""
        if self.codes is None:
            return self._reply(engine.resume(self.registry.get, state,
                                             CallInput(engine.CASE_REFUSED), self._context(params)))
        pin = params.get("Digits", "").strip().rstrip("#")
        checked = self.codes.check_pin(params.get("CallSid", "")[:64], pin, self.clock())
        if checked.outcome == "right":
            flow = self.registry.get(state.flow, state.version)
            if checked.language is not None and checked.language in flow.languages:
                state = replace(state, language=checked.language)
            return self._reply(engine.resume(self.registry.get, state,
                                             CallInput(engine.CASE_FOUND), self._context(params)))
        if checked.outcome == "locked":
            return self._refused(state, "locked", params)
        event = engine.CASE_WRONG if checked.outcome == "wrong" and pin else engine.CASE_REFUSED
        return self._reply(engine.resume(self.registry.get, state, CallInput(event),
                                         self._context(params)))

    def _input(self, event: str, params: Params) -> CallInput:
        if event == "input":
            digits = params.get("Digits", "").strip()
            speech = params.get("SpeechResult", "").strip()
            if digits:
                return CallInput(engine.DIGITS, digits=digits)
            if speech:
                return CallInput(engine.SPEECH, speech=speech)
            return CallInput(engine.NO_INPUT)
        if event not in EVENTS:
            raise StateError(f"unknown event {event[:20]!r}")
        return CallInput(EVENTS[event], dial_status=params.get("DialCallStatus", ""))

    def fallback(self, params: Params) -> Reply:
        """Twilio's fallback URL: our primary answer failed; apologise in the call's language."""
        language = "ru"
        error_url = params.get("ErrorUrl", "")
        if "s=" in error_url:
            token = error_url.split("s=", 1)[1].split("&", 1)[0]
            with contextlib.suppress(StateError):
                language = decode_state(token).language
        log.warning("fallback for call %s: Twilio error %s",
                    params.get("CallSid", "?"), params.get("ErrorCode", "?"))
        return Reply(self.renderer.apology(language, None))

    def status(self, params: Params) -> Reply:
        """The call's status callback: an ended call is counted (region and length only), so
        the console's dashboard counts every call, not only those that left a message."""
        log.debug("call %s is %s", params.get("CallSid", "?"), params.get("CallStatus", "?"))
        if self.ended is not None and params.get("CallStatus") in ENDED and params.get("CallSid"):
            try:
                seconds = int(params.get("CallDuration", "0") or 0)
            except ValueError:
                seconds = 0
            try:
                region = self.registry.regions.which(params.get("From", ""))[0].region
                self.ended(params["CallSid"][:64], region, max(0, seconds))
            except Exception:
                log.exception("could not count the end of call %s", params["CallSid"][:64])
        return Reply(EMPTY)

    def recording(self, query: Params, params: Params) -> Reply:
        """recordingStatusCallback: note the recording (it carries no From) and answer."""
        state = None
        with contextlib.suppress(StateError):
            state = decode_state(query.get("s", ""))
        self._report(params, state, params.get("RecordingStatus", ""), language=query.get("l", ""))
        return Reply(EMPTY)

    def _consent(self, params: Params, value: str) -> None:
        """The caller answered the callback question: keep it with the call and its case."""
        if self.consent is None or not params.get("CallSid"):
            return
        try:
            self.consent(params["CallSid"][:64], value)
        except Exception:
            # Not kept means no callback: the safe side. The caller still hears the flow.
            log.exception("could not store the callback consent of call %s", params["CallSid"][:64])

    def _intake(self, state: CallState | None) -> dict[str, Any]:
        """The flow's declared fields the call carries (answers it allows only), and whether
        one is urgent, by the call's own flow version (the registry keeps past versions)."""
        if state is None:
            return {}
        try:
            fields = self.registry.get(state.flow, state.version).fields
        except Exception:
            log.warning("flow %s@%s unknown: the message is kept without its intake answers",
                        state.flow[:64], state.version[:16])
            return {}
        kept = {k: v for k, v in state.variables if k in fields and fields[k].allows(v)}
        return {"intake": kept, "urgent": any(v in fields[k].urgent for k, v in kept.items())}

    def _report(self, params: Params, state: CallState | None, status: str,
                language: str = "") -> bool:
        """Hand a reported recording to the voicemail desk; never fail the webhook for it.

        False only when it was not kept (neither in the database nor in the spool): then the
        caller must not hear that it was. Without a valid RecordingSid there is nothing at
        Twilio to keep (Twilio always sends one), so that is not a loss.
        """
        sid = params.get("RecordingSid", "")
        if self.voicemail is None:
            return True
        if not RECORDING_SID.match(sid) or not params.get("CallSid"):
            log.warning("recording report without valid ids ignored")
            return True
        try:
            duration = int(params.get("RecordingDuration", "0") or 0)
        except ValueError:
            duration = 0
        number = params.get("From", "")
        caller = self.registry.regions.which(number)[0]
        try:
            self.voicemail(Reported(
                call_sid=params["CallSid"][:64], recording_sid=sid, status=status,
                duration=duration, number=number,
                caller=caller, timezone=self.registry.regions.region(caller.region).timezone,
                flow=state.flow if state else "", flow_version=state.version if state else "",
                step=state.step if state else "", language=state.language if state else language,
                consent=(state.var(CONSENT_VARIABLE) or "") if state else "",
                **self._intake(state),
                path=state.path if state else None,
            ))
        except Exception:
            # The recording stays at Twilio, where the housekeeper's listing finds it.
            log.exception("could not keep the report of recording %s; it remains at Twilio", sid)
            return False
        return True


class CallbackHandler:
    """The operator's leg of a callback (`/twilio/callback/*?a=ATTEMPT`): whisper, press 1,
    bridge, outcome. Whatever fails, the operator hears a short message, never silence."""

    def __init__(self, settings: Settings, leg: OperatorLeg, renderer: Renderer,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings, self.leg, self.renderer = settings, leg, renderer
        self.clock = clock or (lambda: datetime.now(UTC))

    def _url(self, what: str, attempt: int) -> str:
        return f"{self.renderer.base}/twilio/callback/{what}?a={attempt}"

    @staticmethod
    def _attempt(query: Params) -> int:
        raw = query.get("a", "")
        if not (raw.isdigit() and len(raw) < 12):
            raise StateError("no callback attempt in the URL")
        return int(raw)

    def _guard(self, query: Params, params: Params, act: Callable[[int, str], str]) -> Reply:
        speak_in = "en"
        try:
            attempt = self._attempt(query)
            speak_in = self.leg.language(attempt)
            return Reply(act(attempt, speak_in))
        except Exception:
            log.exception("callback webhook %s failed for call %s", query.get("a", "?")[:12],
                          params.get("CallSid", "?")[:64])
            return Reply(self.renderer.operator_done("error", speak_in))

    def answer(self, query: Params, params: Params) -> Reply:
        def act(attempt: int, speak_in: str) -> str:
            found = self.leg.answered(attempt)
            if isinstance(found, Done):
                return self.renderer.operator_done(found.reason, speak_in)
            return self.renderer.whisper(found.case_id, found.language, found.region,
                                         found.speak_in, self._url("connect", attempt))
        return self._guard(query, params, act)

    def connect(self, query: Params, params: Params) -> Reply:
        def act(attempt: int, speak_in: str) -> str:
            found = self.leg.pressed(attempt, params.get("Digits", "").strip(), self.clock())
            if isinstance(found, Done):
                return self.renderer.operator_done(found.reason, speak_in)
            return self.renderer.bridge(found.number, found.caller_id, speak_in,
                                        self._url("bridged", attempt), self._url("callee", attempt))
        return self._guard(query, params, act)

    def callee(self, query: Params, params: Params) -> Reply:
        """Whoever answered the caller's phone (`<Number url>`), before the bridge: asked for a
        key (e absent), or their key (e=key), or their silence (e=none). Whatever fails here,
        that leg hangs up: no bridge is the safe side."""
        try:
            attempt = self._attempt(query)
            event = query.get("e", "")
            if event == "":
                found = self.leg.callee_answered(attempt, params.get("AnsweredBy", ""), self.clock())
                if isinstance(found, Done):
                    return Reply(HANGUP)
                return Reply(self.renderer.callee_question(
                    found, self._url("callee", attempt) + "&e=key",
                    self._url("callee", attempt) + "&e=none"))
            digits = params.get("Digits", "").strip() if event == "key" else ""
            if self.leg.callee_pressed(attempt, digits, self.clock()):
                return Reply(EMPTY)  # the end of this document: Twilio bridges the two legs
            return Reply(HANGUP)
        except Exception:
            log.exception("callback webhook for the caller's phone failed (attempt %s); hung up",
                          query.get("a", "?")[:12])
            return Reply(HANGUP)

    def bridged(self, query: Params, params: Params) -> Reply:
        def act(attempt: int, speak_in: str) -> str:
            found = self.leg.bridged(attempt, params.get("DialCallStatus", ""),
                                     params.get("DialCallDuration", ""), self.clock())
            return self.renderer.operator_done(found.reason, speak_in)
        return self._guard(query, params, act)

    def status(self, query: Params, params: Params) -> Reply:
        try:
            self.leg.status(self._attempt(query), params.get("CallStatus", ""), self.clock())
        except Exception:
            log.exception("callback status for call %s not recorded", params.get("CallSid", "?")[:64])
        return Reply(EMPTY)
