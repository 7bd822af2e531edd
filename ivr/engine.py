"""The call engine: from (flow, call state, caller input) to what the caller hears next.

Pure on purpose: no Flask, no twilio, no clock and no I/O of its own. Everything it needs
(the flows, the time, who the caller is, whom a transfer may ring) comes in as arguments, so
every decision can be tested as a table and replayed exactly: the same state and input
always give the same turn, which is what makes a webhook that Twilio delivers twice safe.

A turn runs the automatic steps (say, set, language, branch, goto) until it reaches a step
that waits (menu, digits, record, transfer) or ends the call (hangup). The state it returns names
that waiting step; the adapter hands it back with the caller's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from ivr.errors import EngineError
from ivr.flow import (
    TOPIC_VARIABLE,
    Branch,
    CaseCode,
    Condition,
    Digits,
    Flow,
    Goto,
    Hangup,
    Menu,
    Option,
    Prompt,
    Record,
    Say,
    SetLanguage,
    SetVariables,
    Transfer,
)
from ivr.limits import MAX_AUTOMATIC_STEPS


@dataclass(frozen=True, slots=True)
class CallState:
    """Where a call is: small enough to travel in the signed action URL."""

    flow: str
    version: str
    step: str
    language: str
    attempts: int = 0
    variables: tuple[tuple[str, str], ...] = ()
    # What the caller did that an operator should know, in order (see PATH): the case keeps
    # it sealed. A record, not a decision: two states differing only here are the same place.
    path: tuple[str, ...] = field(default=(), compare=False)

    def var(self, name: str) -> str | None:
        return dict(self.variables).get(name)

    def went(self, event: str) -> CallState:
        """This state with `event` added to its path (a repeat of the last one is not added)."""
        if self.path and self.path[-1] == event[:40]:
            return self
        return replace(self, path=(*self.path, event[:40])[-MAX_PATH:])


# The events of a call's path, flow-independent: `language:uk` (a menu answer led to a
# language step: the caller chose it; the offers a flow says in each language are not),
# `topic:surrender` (the TOPIC_VARIABLE was set), `operator:closed` (a transfer out of its
# hours), `operator:nobody` (nobody on duty to ring), `operator:answered`,
# `operator:unanswered` (rung, nobody answered), `menu:failed` (a menu gave up: silence or
# wrong keys). The console says them in words (ivr/console/story.py).
MAX_PATH = 12  # the newest; it travels in every action URL


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as routing needs to know; never the number itself."""

    withheld: bool
    country: str | None  # ISO 3166 code from the number, None when unknown
    region: str  # a region name of flows/regions.yaml


# What the caller did since the last turn.
START, DIGITS, SPEECH, NO_INPUT, RECORDED, NO_RECORDING, DIALED = (
    "start",
    "digits",
    "speech",
    "no_input",
    "recorded",
    "no_recording",
    "dialed",
)


# What the web side found for the digits at a `case_code` step (the digits themselves never
# reach the engine): a right code and PIN, a wrong one, or a refusal (a locked case, a burst
# of wrong codes, nothing entered: the caller is told why by the web side).
CASE_FOUND, CASE_WRONG, CASE_REFUSED = "case_found", "case_wrong", "case_refused"


@dataclass(frozen=True, slots=True)
class CallInput:
    event: str
    digits: str = ""
    speech: str = ""
    dial_status: str = ""  # completed, busy, no-answer, failed, canceled


# --- what the engine asks the adapter to do ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Speak:
    text: str
    voice: str
    locale: str
    audio: str | None = None


@dataclass(frozen=True, slots=True)
class Silence:
    seconds: int


Utterance = Speak | Silence


@dataclass(frozen=True, slots=True)
class AskKeys:
    """Wait for keys (or speech); the prompt is inside so callers can answer early."""

    prompt: tuple[Utterance, ...]
    num_digits: int
    timeout: int
    finish_on_key: str
    speech_locale: str | None = None
    hints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AskRecording:
    max_length: int
    finish_key: str
    silence_timeout: int


@dataclass(frozen=True, slots=True)
class Connect:
    numbers: tuple[str, ...]
    timeout: int


@dataclass(frozen=True, slots=True)
class End:
    pass


Wait = AskKeys | AskRecording | Connect | End


@dataclass(frozen=True, slots=True)
class Turn:
    """One answer to Twilio: what to say, then what to wait for, then where to resume."""

    say: tuple[Utterance, ...]
    wait: Wait
    state: CallState
    trace: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Context:
    """The world outside the flow, handed in so the engine stays pure."""

    now: datetime
    caller: Callable[[], Caller]
    transfer_targets: Callable[[CallState], tuple[str, ...]] = lambda _s: ()


FlowLookup = Callable[[str, str | None], Flow]  # (flow id, version or None for current)


def start(flows: FlowLookup, flow_id: str, ctx: Context, language: str | None = None) -> Turn:
    """Begin a call at the flow's start (in `language`, when the flow speaks it)."""
    flow = flows(flow_id, None)
    lang = language if language and language in flow.languages else flow.default_language
    state = CallState(flow.id, flow.version, flow.start, lang)
    return _run(flows, flow, state, [], ctx, [])


def resume(flows: FlowLookup, state: CallState, given: CallInput, ctx: Context) -> Turn:
    """Continue a call from the step it was waiting at, with what the caller did."""
    flow = flows(state.flow, state.version)
    if state.language not in flow.languages:
        state = replace(state, language=flow.default_language)
    step = flow.steps.get(state.step)
    if step is None:
        raise EngineError(f"flow {flow.id}@{flow.version} has no step {state.step!r}")
    out: list[Utterance] = []
    if given.event == START:  # "try again" after an apology: replay the step
        return _run(flows, flow, state, out, ctx, [])
    match step:
        case Menu():
            chosen = _menu_choice(step, state, given)
            if chosen is None and step.skip and _skipped(given):
                return _run(flows, flow, _at(state, step.skip), out, ctx, [])
            if chosen is None:  # repeat, wrong key or silence: ask again
                attempts = state.attempts
                if given.event == NO_INPUT or not _is_repeat(step, given):
                    attempts += 1
                    if attempts > step.retries:
                        failed = _at(state, step.on_failure).went("menu:failed")
                        return _run(flows, flow, failed, out, ctx, [])
                    # Speech we could not match is "we did not catch that", not a wrong key.
                    extra = step.wrong_key if given.event == DIGITS else step.no_input
                    if extra:
                        out += _speak(flow, state.language, extra)
                return _run(flows, flow, replace(state, attempts=attempts), out, ctx, [])
            # A language step a menu answer leads to is the caller's choice of language
            # (unless it leads back to this menu: the offers heard again).
            landing = flow.steps.get(chosen.next)
            moved = _at(_kept(state, chosen.variables), chosen.next)
            if isinstance(landing, SetLanguage):
                moved = moved.went(f"language:{landing.language}")
            turn = _run(flows, flow, moved, out, ctx, [])
            if isinstance(landing, SetLanguage) and turn.state.step == state.step:
                turn = replace(turn, state=replace(turn.state, path=state.path))
            return turn
        case Digits():
            number = given.digits.rstrip("#") if given.event == DIGITS else ""
            if not number:  # `#` alone or silence: skipped
                return _run(flows, flow, _at(state, step.next), out, ctx, [])
            field = flow.fields.get(step.field)
            if field is not None and field.allows(number):
                kept = _kept(state, {step.field: str(int(number))})
                return _run(flows, flow, _at(kept, step.next), out, ctx, [])
            if state.attempts + 1 > step.retries:  # still wrong: go on without it
                return _run(flows, flow, _at(state, step.next), out, ctx, [])
            if step.wrong_key:
                out += _speak(flow, state.language, step.wrong_key)
            return _run(flows, flow, replace(state, attempts=state.attempts + 1), out, ctx, [])
        case CaseCode():
            if given.event == CASE_FOUND:
                return _run(flows, flow, _at(state, step.found), out, ctx, [])
            if given.event == CASE_WRONG and state.attempts + 1 <= step.retries:
                if step.wrong_key:
                    out += _speak(flow, state.language, step.wrong_key)
                return _run(flows, flow, replace(state, attempts=state.attempts + 1), out, ctx, [])
            # Silence, a refusal, the last wrong code, or digits no web side checked (a flow
            # test without a database): the way out for a caller without a case.
            return _run(flows, flow, _at(state, step.failed), out, ctx, [])
        case Record():
            if given.event == NO_RECORDING and step.on_empty:
                return _run(flows, flow, _at(state, step.on_empty), out, ctx, [])
            return _run(flows, flow, _at(state, step.next), out, ctx, [])
        case Transfer():
            answered = given.dial_status == "completed"
            target = step.next if answered else step.no_answer
            went = "operator:answered" if answered else "operator:unanswered"
            return _run(flows, flow, _at(state, target).went(went), out, ctx, [])
        case _:
            return _run(flows, flow, state, out, ctx, [])


def _at(state: CallState, step: str) -> CallState:
    return replace(state, step=step, attempts=0)


def _kept(state: CallState, values: Mapping[str, str]) -> CallState:
    """The state with these variables set (a `set` step, a menu option's `set`, a number)."""
    if not values:
        return state
    merged = dict(state.variables) | dict(values)
    return replace(state, variables=tuple(sorted(merged.items())))


def _skipped(given: CallInput) -> bool:
    """Silence, or `#` alone (Twilio sends nothing for the finish key alone; some gateways
    send the `#`)."""
    return given.event == NO_INPUT or (given.event == DIGITS and not given.digits.strip("#"))


def _is_repeat(step: Menu, given: CallInput) -> bool:
    return given.event == DIGITS and bool(step.repeat_key) and given.digits == step.repeat_key


def _menu_choice(step: Menu, state: CallState, given: CallInput) -> Option | None:
    if given.event == DIGITS:
        for option in step.options:
            if given.digits == option.key:
                return option
    elif given.event == SPEECH and given.speech:
        heard = given.speech.casefold()
        # The call's own language first; then any language's words, since a caller choosing
        # a language may well say its name in that language.
        for words in (
            lambda o: o.words.get(state.language, ()),
            lambda o: [w for ws in o.words.values() for w in ws],
        ):
            for option in step.options:
                if any(w.casefold() in heard for w in words(option)):
                    return option
    return None


def _speak(flow: Flow, language: str, prompt: Prompt) -> list[Utterance]:
    lang = flow.languages[language]
    text = prompt.get(language) or prompt[flow.default_language]
    return [Speak(text.text, lang.voice, lang.locale, text.audio)]


def _matches(cond: Condition, flow: Flow, state: CallState, ctx: Context) -> bool:
    match cond.kind:
        case "language":
            return state.language in cond.values
        case "region":
            return ctx.caller().region in cond.values
        case "country":
            return (ctx.caller().country or "") in cond.values
        case "withheld":
            return ctx.caller().withheld == (cond.values[0] == "true")
        case "open":
            return flow.hours[cond.values[0]].is_open(ctx.now)
        case "closed":
            return not flow.hours[cond.values[0]].is_open(ctx.now)
        case "variable":
            assert cond.variable is not None
            return (state.var(cond.variable) or "") in cond.values
    raise EngineError(f"unknown condition {cond.kind!r}")


def _run(
    flows: FlowLookup,
    flow: Flow,
    state: CallState,
    out: list[Utterance],
    ctx: Context,
    trace: list[str],
) -> Turn:
    for _ in range(MAX_AUTOMATIC_STEPS):
        step = flow.steps[state.step]
        trace.append(state.step)
        match step:
            case Say():
                out += _speak(flow, state.language, step.prompt)
                if step.pause:
                    out.append(Silence(max(1, round(step.pause))))
                state = _at(state, step.next)
            case SetLanguage():
                state = _at(replace(state, language=step.language), step.next)
                if step.prompt:
                    out += _speak(flow, state.language, step.prompt)
            case SetVariables():
                state = _at(_kept(state, dict(step.values)), step.next)
                if TOPIC_VARIABLE in step.values:
                    state = state.went(f"topic:{step.values[TOPIC_VARIABLE]}")
            case Branch():
                target = next(
                    (c.next for c in step.when if _matches(c, flow, state, ctx)), step.otherwise
                )
                state = _at(state, target)
            case Goto():
                flow = flows(step.flow, None)
                language = state.language if state.language in flow.languages else None
                state = replace(
                    state,
                    flow=flow.id,
                    version=flow.version,
                    step=step.step or flow.start,
                    language=language or flow.default_language,
                    attempts=0,
                )
            case Menu():
                prompt = tuple(_speak(flow, state.language, step.prompt))
                speech = flow.languages[state.language].locale if step.speech else None
                hints = tuple(w for o in step.options for w in o.words.get(state.language, ()))
                finish = "" if "#" in step.menu_keys() else "#"
                ask = AskKeys(prompt, step.num_digits, step.timeout, finish, speech, hints)
                return Turn(tuple(out), ask, state, tuple(trace))
            case Digits():
                prompt = tuple(_speak(flow, state.language, step.prompt))
                field = flow.fields.get(step.field)
                width = len(str(field.high)) if field is not None else 4
                # One key more than the longest number: Twilio then waits for the `#`.
                ask = AskKeys(prompt, width + 1, step.timeout, "#")
                return Turn(tuple(out), ask, state, tuple(trace))
            case CaseCode():
                # Up to 12 digits and `#`: one key more than the code, so Twilio waits for `#`.
                prompt = tuple(_speak(flow, state.language, step.prompt))
                return Turn(tuple(out), AskKeys(prompt, 13, step.timeout, "#"), state, tuple(trace))
            case Record():
                out += _speak(flow, state.language, step.prompt)
                wait = AskRecording(step.max_length, step.finish_key, step.silence_timeout)
                return Turn(tuple(out), wait, state, tuple(trace))
            case Transfer():
                if step.hours and step.out_of_hours and not flow.hours[step.hours].is_open(ctx.now):
                    state = _at(state, step.out_of_hours).went("operator:closed")
                    continue
                numbers = ctx.transfer_targets(state)
                if not numbers:
                    # Nobody on duty to ring: that is "closed", not "busy" (no_answer is
                    # for an operator who was rung and did not answer).
                    state = _at(state, step.out_of_hours or step.no_answer).went("operator:nobody")
                    continue
                if step.prompt:
                    out += _speak(flow, state.language, step.prompt)
                return Turn(tuple(out), Connect(numbers, step.timeout), state, tuple(trace))
            case Hangup():
                if step.prompt:
                    out += _speak(flow, state.language, step.prompt)
                return Turn(tuple(out), End(), state, tuple(trace))
    raise EngineError(
        f"flow {flow.id} ran {MAX_AUTOMATIC_STEPS} steps without waiting for the caller: "
        + " -> ".join(trace[-6:])
    )
