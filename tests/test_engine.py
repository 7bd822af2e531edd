"""The engine's decisions, as tables: (flow, state, input) -> what the caller hears next."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr import engine
from ivr.engine import (
    AskKeys,
    AskRecording,
    Caller,
    CallInput,
    CallState,
    Connect,
    Context,
    End,
    Speak,
    Turn,
)
from ivr.errors import EngineError
from ivr.flow import Flow, Say
from ivr.loader import parse_flow

FLOW = """
id: main
languages:
  ru: {voice: Polly.Tatyana}
  uk: {voice: Google.uk-UA-Standard-A}
hours:
  office:
    timezone: Europe/Kyiv
    open: {mon-fri: "09:00-18:00"}
    holidays: [2026-12-25]
steps:
  hello:
    type: say
    prompt: {ru: привет, uk: вітаю}
    next: route
  route:
    type: branch
    when:
      - withheld: true
        next: secret
      - region: crimea
        next: crimea_note
      - country: UA
        next: set_uk
    otherwise: menu
  secret: {type: set, variables: {topic: hidden}, next: menu}
  crimea_note: {type: say, prompt: {ru: крым, uk: крим}, next: menu}
  set_uk: {type: language, language: uk, next: menu}
  menu:
    type: menu
    prompt: {ru: меню, uk: меню-uk}
    options:
      1: info
      2: {next: vm, words: {ru: [сообщение], uk: [повідомлення]}}
      3: op
      4: elsewhere
    repeat_key: "*"
    retries: 2
    speech: true
    no_input: {ru: не слышу, uk: не чую}
    wrong_key: {ru: нет такой, uk: немає такої}
    on_failure: vm
  info:
    type: branch
    when:
      - variable: topic
        equals: hidden
        next: hidden_info
      - open: office
        next: open_info
    otherwise: closed_info
  hidden_info: {type: hangup, prompt: {ru: скрытый, uk: прихований}}
  open_info: {type: hangup, prompt: {ru: открыто, uk: відчинено}}
  closed_info: {type: hangup, prompt: {ru: закрыто, uk: зачинено}}
  vm:
    type: record
    prompt: {ru: говорите, uk: говоріть}
    next: bye
    on_empty: menu
  op:
    type: transfer
    hours: office
    out_of_hours: vm
    no_answer: vm
    next: bye
  elsewhere: {type: goto, flow: other}
  bye: {type: hangup, prompt: {ru: пока, uk: бувай}}
"""

OTHER = """
id: other
languages:
  en: {voice: Polly.Joanna}
  uk: {voice: Google.uk-UA-Wavenet-A}
steps:
  start: {type: say, prompt: {en: other flow, uk: інший потік}, next: rec}
  rec: {type: record, prompt: {en: speak, uk: говоріть}, next: end}
  end: {type: hangup}
"""


def _flow(text: str) -> Flow:
    parsed = parse_flow(text, "test.yaml")
    assert parsed.flow is not None, [str(p) for p in parsed.problems]
    return parsed.flow


FLOWS = {f.id: f for f in (_flow(FLOW), _flow(OTHER))}
MONDAY_NOON = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 12:00 in Kyiv
SUNDAY = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CHRISTMAS = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)  # a Friday, but a holiday

CALLERS = {
    "moscow": Caller(False, "RU", "russia"),
    "crimea": Caller(False, "RU", "crimea"),
    "kyiv": Caller(False, "UA", "ukraine"),
    "hidden": Caller(True, None, "elsewhere"),
}


def lookup(flow_id: str, version: str | None) -> Flow:
    return FLOWS[flow_id]


def ctx(caller: str = "moscow", now: datetime = MONDAY_NOON, targets: int = 1) -> Context:
    numbers = tuple(f"+38044111223{i}" for i in range(targets))
    return Context(now, lambda: CALLERS[caller], lambda _s: numbers)


def words(turn: Turn) -> list[str]:
    said = [u.text for u in turn.say if isinstance(u, Speak)]
    if isinstance(turn.wait, AskKeys):
        said += [u.text for u in turn.wait.prompt if isinstance(u, Speak)]
    return said


def at_menu(language: str = "ru", attempts: int = 0, variables: tuple[tuple[str, str], ...] = ()
            ) -> CallState:
    return CallState("main", FLOWS["main"].version, "menu", language, attempts, variables)


@pytest.mark.parametrize(
    ("caller", "heard", "language"),
    [
        ("moscow", ["привет", "меню"], "ru"),
        ("crimea", ["привет", "крым", "меню"], "ru"),
        ("kyiv", ["привет", "меню-uk"], "uk"),
        ("hidden", ["привет", "меню"], "ru"),
    ],
)
def test_start_branches_on_who_is_calling(caller: str, heard: list[str], language: str) -> None:
    turn = engine.start(lookup, "main", ctx(caller))
    assert words(turn) == heard
    assert turn.state.step == "menu" and turn.state.language == language
    assert isinstance(turn.wait, AskKeys)


def test_menu_turn_asks_for_one_key_and_listens_in_the_call_language() -> None:
    turn = engine.start(lookup, "main", ctx("kyiv"))
    assert isinstance(turn.wait, AskKeys)
    assert turn.wait.num_digits == 1
    assert turn.wait.speech_locale == "uk-UA"
    assert turn.wait.hints == ("повідомлення",)
    assert turn.wait.finish_on_key == "#"
    speak = turn.wait.prompt[0]
    assert isinstance(speak, Speak) and speak.voice == "Google.uk-UA-Standard-A"


@pytest.mark.parametrize(
    ("given", "attempts", "step", "heard", "wait"),
    [
        (CallInput("digits", digits="2"), 0, "vm", ["говорите"], AskRecording),
        (CallInput("speech", speech="Хочу оставить СООБЩЕНИЕ"), 0, "vm", ["говорите"],
         AskRecording),
        (CallInput("speech", speech="погода"), 0, "menu", ["не слышу", "меню"], AskKeys),
        (CallInput("speech", speech="залишити повідомлення"), 0, "vm", ["говорите"],
         AskRecording),  # Ukrainian words on a Russian call still count
        (CallInput("digits", digits="*"), 0, "menu", ["меню"], AskKeys),
        (CallInput("digits", digits="9"), 0, "menu", ["нет такой", "меню"], AskKeys),
        (CallInput("digits", digits="1" * 300), 0, "menu", ["нет такой", "меню"], AskKeys),
        (CallInput("no_input"), 0, "menu", ["не слышу", "меню"], AskKeys),
        (CallInput("no_input"), 1, "menu", ["не слышу", "меню"], AskKeys),
        (CallInput("no_input"), 2, "vm", ["говорите"], AskRecording),  # retries used up
        (CallInput("digits", digits="9"), 2, "vm", ["говорите"], AskRecording),
        (CallInput("digits", digits="*"), 2, "menu", ["меню"], AskKeys),  # repeat is free
    ],
)
def test_menu_answers(
    given: CallInput, attempts: int, step: str, heard: list[str], wait: type
) -> None:
    turn = engine.resume(lookup, at_menu(attempts=attempts), given, ctx())
    assert turn.state.step == step
    assert words(turn) == heard
    assert isinstance(turn.wait, wait)


def test_wrong_keys_count_attempts_and_repeat_does_not() -> None:
    state = at_menu()
    for expected in (1, 2):
        state = engine.resume(lookup, state, CallInput("digits", digits="0"), ctx()).state
        assert state.attempts == expected
    state = engine.resume(lookup, state, CallInput("digits", digits="*"), ctx()).state
    assert state.attempts == 2 and state.step == "menu"


@pytest.mark.parametrize(
    ("now", "variables", "heard"),
    [
        (MONDAY_NOON, (), "открыто"),
        (SUNDAY, (), "закрыто"),
        (CHRISTMAS, (), "закрыто"),
        (datetime(2026, 11, 23, 16, 30, tzinfo=UTC), (), "закрыто"),  # 18:30 in Kyiv
        (MONDAY_NOON, (("topic", "hidden"),), "скрытый"),
    ],
)
def test_branch_on_hours_and_variables(
    now: datetime, variables: tuple[tuple[str, str], ...], heard: str
) -> None:
    turn = engine.resume(lookup, at_menu(variables=variables), CallInput("digits", digits="1"),
                         ctx(now=now))
    assert words(turn) == [heard]
    assert isinstance(turn.wait, End)


def test_withheld_caller_gets_the_variable_set() -> None:
    turn = engine.start(lookup, "main", ctx("hidden"))
    assert dict(turn.state.variables) == {"topic": "hidden"}
    assert turn.trace == ("hello", "route", "secret", "menu")


@pytest.mark.parametrize(
    ("now", "targets", "step", "wait"),
    [
        (MONDAY_NOON, 2, "op", Connect),
        (MONDAY_NOON, 0, "vm", AskRecording),  # nobody to ring: out_of_hours (here also vm)
        (SUNDAY, 2, "vm", AskRecording),  # out of hours
    ],
)
def test_transfer(now: datetime, targets: int, step: str, wait: type) -> None:
    turn = engine.resume(lookup, at_menu(), CallInput("digits", digits="3"),
                         ctx(now=now, targets=targets))
    assert turn.state.step == step
    assert isinstance(turn.wait, wait)
    if isinstance(turn.wait, Connect):
        assert len(turn.wait.numbers) == 2


RINGS = """
id: rings
languages: {en: {voice: Polly.Joanna}}
hours:
  office: {timezone: Europe/Kyiv, open: {mon-fri: "09:00-18:00"}}
steps:
  op:
    type: transfer
    hours: office
    out_of_hours: closed
    no_answer: busy
    next: bye
  closed: {type: hangup, prompt: {en: we are closed}}
  busy: {type: hangup, prompt: {en: all operators are busy}}
  bye: {type: hangup}
"""


@pytest.mark.parametrize(
    ("now", "targets", "dial", "heard"),
    [
        (MONDAY_NOON, 0, None, "we are closed"),  # open, but nobody on duty: not "busy"
        (SUNDAY, 2, None, "we are closed"),
        (MONDAY_NOON, 2, "busy", "all operators are busy"),  # rung, and nobody answered
        (MONDAY_NOON, 2, "no-answer", "all operators are busy"),
    ],
)
def test_busy_is_said_only_when_someone_was_rung(now: datetime, targets: int, dial: str | None,
                                                  heard: str) -> None:
    flow = _flow(RINGS)
    turn = engine.start(lambda _i, _v: flow, "rings", ctx(now=now, targets=targets))
    if dial is not None:
        assert isinstance(turn.wait, Connect)
        turn = engine.resume(lambda _i, _v: flow, turn.state, CallInput("dialed", dial_status=dial),
                             ctx(now=now, targets=targets))
    assert words(turn) == [heard]


@pytest.mark.parametrize(
    ("status", "step"),
    [("completed", "bye"), ("busy", "vm"), ("no-answer", "vm"), ("failed", "vm"), ("", "vm")],
)
def test_dial_outcome(status: str, step: str) -> None:
    state = CallState("main", FLOWS["main"].version, "op", "ru")
    turn = engine.resume(lookup, state, CallInput("dialed", dial_status=status), ctx())
    assert turn.state.step == step


@pytest.mark.parametrize(
    ("event", "step", "heard"),
    [("recorded", "bye", ["пока"]), ("no_recording", "menu", ["меню"])],
)
def test_record_outcome(event: str, step: str, heard: list[str]) -> None:
    state = CallState("main", FLOWS["main"].version, "vm", "ru")
    turn = engine.resume(lookup, state, CallInput(event), ctx())
    assert turn.state.step == step and words(turn) == heard


def test_goto_other_flow_keeps_language_when_it_can() -> None:
    uk = engine.resume(lookup, at_menu("uk"), CallInput("digits", digits="4"), ctx())
    assert (uk.state.flow, uk.state.step, uk.state.language) == ("other", "rec", "uk")
    assert words(uk) == ["інший потік", "говоріть"]
    ru = engine.resume(lookup, at_menu("ru"), CallInput("digits", digits="4"), ctx())
    assert ru.state.language == "en"  # `other` speaks no Russian: its default language
    assert ru.state.version == FLOWS["other"].version


def test_same_state_and_input_give_the_same_turn() -> None:
    given = CallInput("digits", digits="9")
    first = engine.resume(lookup, at_menu(), given, ctx())
    again = engine.resume(lookup, at_menu(), given, ctx())
    assert first == again


def test_retry_replays_the_waiting_step() -> None:
    turn = engine.resume(lookup, at_menu(attempts=1), CallInput("start"), ctx())
    assert words(turn) == ["меню"] and turn.state.attempts == 1


def test_unknown_step_in_state_is_an_engine_error() -> None:
    state = CallState("main", FLOWS["main"].version, "nope", "ru")
    with pytest.raises(EngineError):
        engine.resume(lookup, state, CallInput("digits", digits="1"), ctx())


def test_loop_without_input_is_stopped() -> None:
    # The validator refuses this flow; the engine must still not spin forever on one.
    looping = _flow(FLOW)
    steps = dict(looping.steps)
    note = steps["crimea_note"]
    assert isinstance(note, Say)
    steps["hello"] = Say("hello", note.prompt, "hello")
    broken = Flow("main", "x", looping.languages, "ru", "hello", steps)
    with pytest.raises(EngineError, match="without waiting"):
        engine.start(lambda _f, _v: broken, "main", ctx())


def test_core_imports_neither_flask_nor_twilio() -> None:
    code = (
        "import sys, ivr.engine, ivr.loader, ivr.flow;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flask', 'twilio', 'werkzeug')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the caller's path: what an operator should know, kept in the state --------------------------

HOTLINE = Path(__file__).parent.parent / "flows"
OPEN, CLOSED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC), datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(("keys", "at", "ring", "path"), [
    # keys at each wait (a dial status at a transfer); when; anyone to ring
    (["2", "2", "3"], OPEN, True, ("language:uk", "topic:surrender")),
    (["0", "3", "1", "3"], OPEN, True, ("language:en", "topic:mobilised")),  # offers heard again
    (["1", "4", "busy"], OPEN, True, ("language:ru", "operator:unanswered")),
    (["1", "4", "completed"], OPEN, True, ("language:ru", "operator:answered")),
    (["1", "4"], CLOSED, True, ("language:ru", "operator:closed")),
    (["1", "4"], OPEN, False, ("language:ru", "operator:nobody")),
    (["", "", "", "", "3"], OPEN, True, ("menu:failed",)),  # silence at the language menu
])
def test_the_hotline_keeps_the_callers_path(keys: list[str], at: datetime, ring: bool,
                                            path: tuple[str, ...]) -> None:
    from ivr.loader import flow_files, load_set

    flows = load_set(flow_files([HOTLINE])).flows
    ctx = Context(at, lambda: Caller(False, "UA", "ukraine"),
                  lambda _s: ("+380441112233",) if ring else ())
    turn = engine.start(lambda f, _v: flows[f], "hotline", ctx)
    for key in keys:
        if isinstance(turn.wait, Connect):
            given = CallInput(engine.DIALED, dial_status=key)
        else:
            given = CallInput(engine.DIGITS, digits=key) if key else CallInput(engine.NO_INPUT)
        turn = engine.resume(lambda f, _v: flows[f], turn.state, given, ctx)
    assert turn.state.path == path
    from ivr.twiml import decode_state, encode_state

    assert decode_state(encode_state(turn.state)).path == path  # it travels in the action URL
