"""The flow model: what a hotline says and asks, as plain data.

Flows are data, not code (the goflow habit): the loader builds these objects from YAML and
has already checked them, the engine walks them, the graph drawer draws them. Nothing here
does I/O or knows about HTTP, so the model can be reasoned about and tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

# The locale each language speaks and listens in unless a flow says otherwise.
DEFAULT_LOCALES: dict[str, str] = {"ru": "ru-RU", "uk": "uk-UA", "en": "en-US"}


def _letters(prefix: str, last: str) -> list[str]:
    return [f"{prefix}{chr(c)}" for c in range(ord("A"), ord(last) + 1)]


# Twilio's <Say> voices and the one locale each speaks (Twilio rejects a mismatch).
# Source: Twilio's text-to-speech voice table; Amazon Polly has no Ukrainian voice.
VOICES: dict[str, str] = {
    **{v: "ru-RU" for v in ("Polly.Tatyana", "Polly.Maxim")},
    **{v: "ru-RU" for v in _letters("Google.ru-RU-Standard-", "E")},
    **{v: "ru-RU" for v in _letters("Google.ru-RU-Wavenet-", "E")},
    "Google.uk-UA-Standard-A": "uk-UA",
    "Google.uk-UA-Wavenet-A": "uk-UA",
    **{
        f"Polly.{n}": "en-US"
        for n in ("Joanna", "Matthew", "Salli", "Kimberly", "Kendra", "Justin", "Joey", "Ivy")
    },
    **{
        f"Polly.{n}-Neural": "en-US"
        for n in ("Joanna", "Matthew", "Salli", "Kimberly", "Kendra", "Justin", "Joey", "Ivy")
    },
    **{f"Polly.{n}": "en-GB" for n in ("Amy", "Brian", "Emma")},
    **{f"Polly.{n}-Neural": "en-GB" for n in ("Amy", "Brian", "Emma")},
    **{v: "en-US" for v in _letters("Google.en-US-Standard-", "J")},
    **{v: "en-US" for v in _letters("Google.en-US-Wavenet-", "J")},
    **{v: "en-GB" for v in _letters("Google.en-GB-Standard-", "F")},
    **{v: "en-GB" for v in _letters("Google.en-GB-Wavenet-", "F")},
}


def voices_for(locale: str) -> list[str]:
    return sorted(v for v, loc in VOICES.items() if loc == locale)


@dataclass(frozen=True, slots=True)
class Text:
    """One language's version of a prompt: words for text-to-speech, or a recorded file.

    When `audio` is set the caller hears the file; `text` is what they hear if the file is
    missing, and what `ivr call` prints.
    """

    text: str
    audio: str | None = None


Prompt = Mapping[str, Text]  # language code -> text


@dataclass(frozen=True, slots=True)
class Language:
    code: str
    voice: str
    locale: str


@dataclass(frozen=True, slots=True)
class Hours:
    """Opening hours in one time zone, with whole-day holidays.

    `weekly[d]` lists (start, end) minutes of weekday d (Monday is 0); an end at or before
    the start runs past midnight into the next day.
    """

    timezone: str
    weekly: Mapping[int, tuple[tuple[int, int], ...]]
    holidays: frozenset[date] = frozenset()

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        today, yesterday = local.date(), local.date() - timedelta(days=1)
        if today not in self.holidays:
            for start, end in self.weekly.get(today.weekday(), ()):
                if start <= minute < (end if end > start else 24 * 60):
                    return True
        if yesterday not in self.holidays:
            for start, end in self.weekly.get(yesterday.weekday(), ()):
                if end <= start and minute < end:
                    return True
        return False


# The call variable a flow sets to record the caller's consent to be called back (a `set`
# step: `variables: {callback: day}`); the loader accepts only these values. No value means
# no consent: nobody calls.
CONSENT_VARIABLE = "callback"
# The flow variable that says what the caller called about (the shipped hotline: mobilised,
# surrender): the engine writes it into the call's path, and the console says it in words.
TOPIC_VARIABLE = "topic"
CONSENTS = ("any", "day", "none")

# The languages of the console (ivr/console/i18n.py): a field's labels are given in each.
CONSOLE_LANGUAGES = ("uk", "en")


@dataclass(frozen=True, slots=True)
class Field:
    """A caller's answer the hotline keeps on the case (a flow's `fields:`), sealed like the
    transcript: one of `values` (each with its label per console language), or a whole
    number from `low` to `high` (kept by a `digits` step). A value in `urgent` puts the case
    at the top of the console's queue, with a shorter re-offer time."""

    name: str
    label: Mapping[str, str]  # console language -> what the console calls the field
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # value -> labels
    low: int = 0
    high: int = 0
    urgent: frozenset[str] = frozenset()

    @property
    def number(self) -> bool:
        return not self.values

    def allows(self, value: str) -> bool:
        if self.number:
            return value.isascii() and value.isdigit() and self.low <= int(value) <= self.high
        return value in self.values

    def shown(self, value: str, language: str) -> str:
        """The value as the console shows it: its label, or the number itself."""
        labels = self.values.get(value)
        return labels.get(language) or labels.get("en") or value if labels else value


# --- steps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """Say or play a prompt, then go on."""

    name: str
    prompt: Prompt
    next: str
    pause: float = 0


@dataclass(frozen=True, slots=True)
class Option:
    key: str
    next: str
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)  # `set:` kept when chosen


@dataclass(frozen=True, slots=True)
class Menu:
    """Ask for a key (or a spoken word) and go where the caller chose."""

    name: str
    prompt: Prompt
    options: tuple[Option, ...]
    on_failure: str
    timeout: int = 5
    retries: int = 2
    no_input: Prompt | None = None
    wrong_key: Prompt | None = None
    repeat_key: str | None = None
    speech: bool = False
    skip: str | None = None  # `#` or silence go here at once (a question one may skip)

    @property
    def num_digits(self) -> int:
        return max(len(k) for k in self.menu_keys())

    def menu_keys(self) -> list[str]:
        return [o.key for o in self.options] + ([self.repeat_key] if self.repeat_key else [])


@dataclass(frozen=True, slots=True)
class Digits:
    """Ask for a number on the keypad, ended by `#`, and keep it as a number field.

    `#` alone or silence skips the question; a number outside the field's range is said to
    be wrong (`wrong_key`) and asked again, `retries` times, then skipped: either way the
    call goes on to `next`, so no answer here stands between a caller and the message.
    """

    name: str
    prompt: Prompt
    field: str
    next: str
    timeout: int = 6
    retries: int = 1
    wrong_key: Prompt | None = None


@dataclass(frozen=True, slots=True)
class SetLanguage:
    name: str
    language: str
    next: str
    prompt: Prompt | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """One `when` line of a branch: `kind` is region, country, language, withheld, open,
    closed or variable; the branch takes `next` when the call's value is one of `values`."""

    kind: str
    values: tuple[str, ...]
    next: str
    variable: str | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    when: tuple[Condition, ...]
    otherwise: str


@dataclass(frozen=True, slots=True)
class SetVariables:
    name: str
    values: Mapping[str, str]
    next: str


@dataclass(frozen=True, slots=True)
class Record:
    """Take a voicemail: the prompt asks for consent and explains how to finish."""

    name: str
    prompt: Prompt
    next: str
    max_length: int = 120
    finish_key: str = "#"
    silence_timeout: int = 5
    on_empty: str | None = None
    # Give the new case a code and let the caller choose a PIN before `next` (ivr/casecode.py)
    case_code: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ring a live operator; `next` after a finished conversation, `no_answer` when those rung
    did not answer, `out_of_hours` when closed or nobody is on duty to ring."""

    name: str
    prompt: Prompt | None
    next: str
    no_answer: str
    out_of_hours: str | None = None
    hours: str | None = None
    timeout: int = 25


@dataclass(frozen=True, slots=True)
class Goto:
    """Continue in another flow (at its start, or at `step`)."""

    name: str
    flow: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    name: str
    prompt: Prompt | None = None


@dataclass(frozen=True, slots=True)
class CaseCode:
    """A caller who has a case code: the code (ended by `#`), then the case's PIN.

    The digits never enter the call's state: the web side checks them (ivr/casecode.py) and
    the call goes on to `found`, in the case's language, after a right code and PIN; to
    `failed` after `retries` wrong codes or PINs, silence, a locked case or a hotline under a
    burst of wrong codes (each said to the caller). `wrong_key` is said after a wrong one.
    """

    name: str
    prompt: Prompt
    found: str
    failed: str
    wrong_key: Prompt | None = None
    timeout: int = 10
    retries: int = 2


Step = (Say | Menu | Digits | SetLanguage | Branch | SetVariables | Record | Transfer | Goto | Hangup
        | CaseCode)

# The YAML `type:` of each step kind.
STEP_TYPES: dict[str, type] = {
    "say": Say,
    "menu": Menu,
    "digits": Digits,
    "language": SetLanguage,
    "branch": Branch,
    "set": SetVariables,
    "record": Record,
    "transfer": Transfer,
    "goto": Goto,
    "hangup": Hangup,
    "case_code": CaseCode,
}
# Steps that stop and wait for the caller (or for an operator's phone).
WAITING: tuple[type, ...] = (Menu, Digits, Record, Transfer, CaseCode)


def variables_set(step: Step) -> set[str]:
    """The call variables a step may set (for the size of the call state)."""
    match step:
        case SetVariables():
            return set(step.values)
        case Menu():
            return {k for o in step.options for k in o.variables}
        case Digits():
            return {step.field}
    return set()


def edges(step: Step) -> Iterator[tuple[str, str, bool]]:
    """Yield (label, target step, automatic) for each way out of a step within its flow.

    `automatic` edges are taken without any input from the caller; a cycle made only of
    them would loop forever, so the validator looks for one.
    """
    match step:
        case Say() | SetLanguage() | SetVariables():
            yield "", step.next, True
        case Menu():
            for o in step.options:
                yield o.key, o.next, False
            yield "failure", step.on_failure, False
            if step.skip:
                yield "skip", step.skip, False
        case Digits():
            yield "number", step.next, False
        case CaseCode():
            yield "found", step.found, False
            yield "failed", step.failed, False
        case Branch():
            for c in step.when:
                label = f"{c.kind} {'/'.join(c.values)}"
                yield (f"{c.variable}={'/'.join(c.values)}" if c.variable else label), c.next, True
            yield "otherwise", step.otherwise, True
        case Record():
            yield "recorded", step.next, False
            if step.on_empty:
                yield "empty", step.on_empty, False
        case Transfer():
            yield "done", step.next, False
            yield "no answer", step.no_answer, False
            if step.out_of_hours:
                yield "closed", step.out_of_hours, True
        case Goto() | Hangup():
            return


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    version: str
    languages: Mapping[str, Language]
    default_language: str
    start: str
    steps: Mapping[str, Step]
    hours: Mapping[str, Hours] = field(default_factory=dict)
    source: str = ""  # the file it was loaded from, for messages
    title: str = ""
    fields: Mapping[str, Field] = field(default_factory=dict)  # kept on the case

    def step(self, name: str) -> Step:
        return self.steps[name]


def mermaid(flow: Flow) -> str:
    """Draw a flow as a Mermaid flowchart, for editors (GitHub and most editors render it)."""
    shapes = {
        Menu: ('{{"', '"}}'),
        Digits: ('{{"', '"}}'),
        CaseCode: ('{{"', '"}}'),
        Branch: ('{"', '"}'),
        Record: ('[("', '")]'),
        Transfer: ('[["', '"]]'),
        Hangup: ('(["', '"])'),
        Goto: ('>"', '"]'),
    }
    lines = ["flowchart TD"]

    def node_id(name: str) -> str:
        return "s_" + name.replace("-", "_")

    for name, step in flow.steps.items():
        kind = next(k for k, t in STEP_TYPES.items() if isinstance(step, t))
        left, right = shapes.get(type(step), ('["', '"]'))
        lines.append(f"    {node_id(name)}{left}{name}<br/><i>{kind}</i>{right}")
    lines.append(f'    start(("call")) --> {node_id(flow.start)}')
    for name, step in flow.steps.items():
        for label, target, _auto in edges(step):
            arrow = f'-- "{label}" -->' if label else "-->"
            lines.append(f"    {node_id(name)} {arrow} {node_id(target)}")
        if isinstance(step, Goto):
            ext = f"flow_{step.flow}_{step.step or 'start'}".replace("-", "_")
            lines.append(f'    {node_id(name)} --> {ext}[/"{step.flow}: {step.step or "start"}"/]')
    return "\n".join(lines) + "\n"


def dot(flow: Flow) -> str:
    """Draw a flow in Graphviz's language (`dot -Tsvg` makes a picture of it)."""
    shapes = {Menu: "hexagon", Digits: "hexagon", CaseCode: "hexagon", Branch: "diamond",
              Record: "cylinder", Transfer: "box3d", Hangup: "oval", Goto: "cds"}
    lines = [f'digraph "{flow.id}" {{', "  rankdir=TB; node [fontname=Helvetica];",
             '  "__call" [label="call", shape=circle];', f'  "__call" -> "{flow.start}";']
    for name, step in flow.steps.items():
        kind = next(k for k, t in STEP_TYPES.items() if isinstance(step, t))
        shape = shapes.get(type(step), "box")
        lines.append(f'  "{name}" [label="{name}\\n({kind})", shape={shape}];')
        for label, target, auto in edges(step):
            style = "" if auto else ", style=bold"
            lines.append(f'  "{name}" -> "{target}" [label="{label}"{style}];')
        if isinstance(step, Goto):
            lines.append(f'  "{name}" -> "{step.flow}:{step.step or "start"}" [style=dashed];')
    lines.append("}")
    return "\n".join(lines) + "\n"
