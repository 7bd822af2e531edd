"""YAML flow files -> flow model, naming every problem with its file, line and column.

A flow editor is not a programmer: the loader reads the whole file, keeps going after the
first mistake and reports all of them at once, each as `file:line:col: message`, with a
guess at what was meant where one helps. It works on `yaml.compose` nodes rather than
`yaml.safe_load` output because nodes keep their position and show duplicate keys.

The running service, `ivr flows check` and `ivr flows test` all use this one loader, so a
flow that passes the check is exactly the flow callers hear.

What a flow may be is bounded (ivr/limits.py, each limit refused with its own message), and
no check here recurses, so no file can exhaust the memory or the stack of the service that
reads it: a file over its size is not even read. ivr/runs.py checks what one answer to
Twilio can hold, as the engine walks a flow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ivr.flow import (
    CONSENT_VARIABLE,
    CONSENTS,
    CONSOLE_LANGUAGES,
    DEFAULT_LOCALES,
    STEP_TYPES,
    VOICES,
    WAITING,
    Branch,
    CaseCode,
    Condition,
    Digits,
    Field,
    Flow,
    Goto,
    Hangup,
    Hours,
    Language,
    Menu,
    Option,
    Prompt,
    Record,
    Say,
    SetLanguage,
    SetVariables,
    Step,
    Text,
    Transfer,
    edges,
    voices_for,
)
from ivr.limits import (
    MAX_FIELD_NUMBER,
    MAX_FIELD_VALUES,
    MAX_FIELDS,
    MAX_FILE_BYTES,
    MAX_PROBLEMS,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MAX_VARIABLE_CHARS,
)
from ivr.runs import Runs, check_runs, state_bytes
from ivr.yamldoc import NAME, Doc, Problem, compose, read_file

KEY = re.compile(r"^[0-9*#]$")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CONDITIONS = ("region", "country", "language", "withheld", "open", "closed", "variable")
RESERVED_FILES = {"regions.yaml"}  # data files in FLOWS_DIR that are not flows

FLOW_KEYS = {"id", "title", "languages", "default_language", "start", "hours", "fields", "steps"}
STEP_KEYS: dict[str, tuple[set[str], set[str]]] = {  # type -> (required, optional)
    "say": ({"prompt", "next"}, {"pause"}),
    "menu": (
        {"prompt", "options", "on_failure"},
        {"timeout", "retries", "no_input", "wrong_key", "repeat_key", "speech", "skip"},
    ),
    "digits": ({"prompt", "field", "next"}, {"timeout", "retries", "wrong_key"}),
    "language": ({"language", "next"}, {"prompt"}),
    "branch": ({"when", "otherwise"}, set()),
    "set": ({"variables", "next"}, set()),
    "record": ({"prompt", "next"}, {"max_length", "finish_key", "silence_timeout", "on_empty",
                                    "case_code"}),
    "transfer": ({"next", "no_answer"}, {"prompt", "out_of_hours", "hours", "timeout"}),
    "goto": ({"flow"}, {"step"}),
    "hangup": (set(), {"prompt"}),
    "case_code": ({"prompt", "found", "failed"}, {"wrong_key", "timeout", "retries"}),
}


# --- one flow file -----------------------------------------------------------------------


@dataclass
class Parsed:
    """A flow file after reading: the flow if it is usable, and what the set check needs."""

    file: str
    flow: Flow | None
    problems: list[Problem]
    id_node: Node | None = None
    gotos: list[tuple[Goto, Node]] = field(default_factory=list)
    step_nodes: dict[str, Node] = field(default_factory=dict)


class _FlowReader:
    def __init__(self, doc: Doc, audio_dir: Path | None, regions: set[str] | None) -> None:
        self.doc = doc
        self.audio_dir = audio_dir
        self.regions = regions
        self.languages: dict[str, Language] = {}
        self.hours: dict[str, Hours] = {}
        self.hours_names: set[str] = set()  # declared, even if their contents have mistakes
        self.fields: dict[str, Field] = {}
        self.field_names: set[str] = set()  # declared, even if their contents have mistakes
        self._broken = False  # a part of the current step was wrong (already reported)
        self.refs: list[tuple[str, Node]] = []  # step references to check
        self.hours_refs: list[tuple[str, Node]] = []
        self.gotos: list[tuple[Goto, Node]] = []
        self.step_nodes: dict[str, Node] = {}

    # prompts ----------------------------------------------------------------------------
    def prompt(self, node: Node, what: str) -> Prompt | None:
        doc = self.doc
        if not self.languages:
            return None  # the missing `languages` is reported once, not at every prompt
        if isinstance(node, ScalarNode) and len(self.languages) == 1:
            words = self.words(node, what)
            return {next(iter(self.languages)): Text(words)} if words else None
        if isinstance(node, ScalarNode):  # several languages, one line
            first = next(iter(self.languages))
            doc.problem(
                node, f"{what} needs one line per language",
                f"this flow speaks {', '.join(self.languages)}: "
                f"put each on its own line under it, like `{first}: …`",
            )
            return None
        found = doc.mapping(node, f"{what} (one line per language)")
        if found is None:
            return None
        out: dict[str, Text] = {}
        for lang, (key_node, value_node) in found.items():
            if lang not in self.languages:
                doc.problem(
                    key_node,
                    f"`{lang}` is not a language of this flow",
                    doc.guess(lang, self.languages) or f"it speaks {', '.join(self.languages)}",
                )
                continue
            text = self.text(value_node, f"{what} in `{lang}`")
            if text:
                out[lang] = text
        missing = [lang for lang in self.languages if lang not in found]
        if missing:
            doc.problem(
                node,
                f"{what} has no `{'`, `'.join(missing)}` version",
                f"this flow speaks {', '.join(self.languages)}: give the words in each",
            )
        return out if out and not missing else None

    def words(self, node: Node, what: str) -> str | None:
        words = self.doc.string(node, what)
        if words is not None and len(words) > MAX_PROMPT_CHARS:
            self.doc.problem(
                node, f"{what} is {len(words):,} characters long; a prompt may have at most "
                f"{MAX_PROMPT_CHARS:,} in each language", "split it over several `say` steps",
            )
            return None
        return words

    def text(self, node: Node, what: str) -> Text | None:
        doc = self.doc
        if isinstance(node, ScalarNode):
            words = self.words(node, what)
            return Text(words) if words else None
        found = doc.mapping(node, what)
        if found is None:
            return None
        doc.keys(node, found, {"text"}, {"audio"}, what)
        words = self.words(found["text"][1], f"{what} text") if "text" in found else None
        audio = None
        if "audio" in found:
            audio = doc.string(found["audio"][1], f"{what} audio")
            if audio and not audio.startswith(("https://", "http://")):
                if ".." in Path(audio).parts or audio.startswith("/"):
                    doc.problem(found["audio"][1], f"audio `{audio}` must stay inside flows/audio")
                    audio = None
                elif self.audio_dir is not None and not (self.audio_dir / audio).is_file():
                    doc.problem(
                        found["audio"][1],
                        f"audio file `{audio}` is not in {self.audio_dir}; callers hear the text",
                        warning=True,
                    )
                    audio = None
        return Text(words, audio) if words else None

    # flow-level parts -------------------------------------------------------------------
    def read_languages(self, node: Node) -> None:
        doc = self.doc
        found = doc.mapping(node, "`languages`")
        if not found:
            if found is not None:
                doc.problem(node, "a flow needs at least one language")
            return
        for code, (key_node, value_node) in found.items():
            entry = doc.mapping(value_node, f"language `{code}`")
            if entry is None:
                continue
            doc.keys(value_node, entry, {"voice"}, {"locale"}, f"language `{code}`")
            locale = DEFAULT_LOCALES.get(code)
            if "locale" in entry:
                locale = doc.string(entry["locale"][1], "`locale`")
            if locale is None:
                doc.problem(key_node, f"language `{code}` needs a `locale` such as `de-DE`")
                continue
            if "voice" not in entry:
                continue
            voice = doc.string(entry["voice"][1], "`voice`")
            if voice is None:
                continue
            speaks = VOICES.get(voice)
            offered = ", ".join(voices_for(locale)) or "none"
            if speaks is None:
                doc.problem(
                    entry["voice"][1],
                    f"unknown voice `{voice}` for {locale}",
                    doc.guess(voice, voices_for(locale)) or f"Twilio offers: {offered}",
                )
            elif speaks != locale:
                doc.problem(
                    entry["voice"][1],
                    f"voice `{voice}` speaks {speaks}, not {locale}: Twilio would reject the call",
                    f"for {locale} Twilio offers: {offered}",
                )
            else:
                self.languages[code] = Language(code, voice, locale)
        if len(self.languages) < len(found):
            # keep prompt checks meaningful: still expect a version in every declared language
            for code in found:
                self.languages.setdefault(code, Language(code, "", DEFAULT_LOCALES.get(code, "")))

    def read_hours(self, node: Node) -> None:
        doc = self.doc
        found = doc.mapping(node, "`hours`")
        self.hours_names = set(found or {})
        for name, (_key_node, value_node) in (found or {}).items():
            entry = doc.mapping(value_node, f"hours `{name}`")
            if entry is None:
                continue
            doc.keys(value_node, entry, {"timezone", "open"}, {"holidays"}, f"hours `{name}`")
            tz = doc.string(entry["timezone"][1], "`timezone`") if "timezone" in entry else None
            if tz:
                try:
                    ZoneInfo(tz)
                except (ZoneInfoNotFoundError, ValueError):
                    doc.problem(
                        entry["timezone"][1],
                        f"unknown time zone `{tz}`",
                        "use a name such as Europe/Kyiv or Europe/Moscow",
                    )
                    tz = None
            weekly: dict[int, list[tuple[int, int]]] = {}
            days = doc.mapping(entry["open"][1], "`open`") if "open" in entry else None
            for spec, (day_node, span_node) in (days or {}).items():
                spans = [self.span(s, span_node) for s in doc.strings(span_node, "opening time")]
                for day in self.weekdays(spec, day_node):
                    weekly.setdefault(day, []).extend(s for s in spans if s)
            holidays: set[date] = set()
            if "holidays" in entry:
                h_node = entry["holidays"][1]
                items = h_node.value if isinstance(h_node, SequenceNode) else [h_node]
                for item in items:
                    value = doc.value(item)
                    if isinstance(value, date):
                        holidays.add(value)
                    else:
                        doc.problem(item, "a holiday must be a date like 2027-01-01")
            if tz:
                weekly_spans = {d: tuple(s) for d, s in weekly.items() if s}
                self.hours[name] = Hours(tz, weekly_spans, frozenset(holidays))

    def weekdays(self, spec: str, node: Node) -> list[int]:
        spec = spec.strip().lower()
        if spec in ("daily", "every day"):
            return list(range(7))
        if "-" in spec:
            first, _, last = spec.partition("-")
            if first in WEEKDAYS and last in WEEKDAYS:
                a, b = WEEKDAYS.index(first), WEEKDAYS.index(last)
                return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
        elif spec in WEEKDAYS:
            return [WEEKDAYS.index(spec)]
        self.doc.problem(node, f"`{spec}` is not a day", "use mon, tue … sun, a range like mon-fri, or daily")
        return []

    def span(self, text: str, node: Node) -> tuple[int, int] | None:
        m = re.fullmatch(r"(\d{1,2}):(\d\d)\s*-\s*(\d{1,2}):(\d\d)", text)
        if m:
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            if h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60 and (h2 < 24 or m2 == 0):
                return h1 * 60 + m1, h2 * 60 + m2
        self.doc.problem(node, f"`{text}` is not a time span", "write it like 09:00-18:00")
        return None

    def read_fields(self, node: Node) -> None:
        """`fields:`: the answers kept on the case, each a choice of `values` or a `number`,
        with labels in every console language."""
        doc = self.doc
        found = doc.mapping(node, "`fields`")
        if found and len(found) > MAX_FIELDS:
            doc.problem(node, f"the flow declares {len(found)} fields; a flow may keep at most "
                        f"{MAX_FIELDS}", "keep only what an operator acts on")
            return
        self.field_names = set(found or {})
        for name, (key_node, value_node) in (found or {}).items():
            what = f"field `{name}`"
            if not NAME.match(name):
                doc.problem(key_node, f"field name `{name}` is not valid", "use letters, digits, `_` or `-`")
                continue
            if name == CONSENT_VARIABLE:
                doc.problem(key_node, f"`{CONSENT_VARIABLE}` is the caller's callback consent, "
                            "kept already", "give this field another name")
                continue
            entry = doc.mapping(value_node, what)
            if entry is None:
                continue
            doc.keys(value_node, entry, {"label"}, {"values", "number", "urgent"}, what)
            label = self.labels(entry["label"][1], f"the label of {what}") if "label" in entry else None
            if ("values" in entry) == ("number" in entry):
                doc.problem(value_node, f"{what} needs either `values` (the answers to choose "
                            "from) or `number` (a whole number, with `min` and `max`)",
                            "a menu's options keep `values`, a `digits` step keeps a `number`")
                continue
            values: dict[str, dict[str, str]] = {}
            low = high = 0
            if "values" in entry:
                listed = doc.mapping(entry["values"][1], f"`values` of {what}") or {}
                if len(listed) > MAX_FIELD_VALUES:
                    doc.problem(entry["values"][1], f"{what} has {len(listed)} values; a field may "
                                f"have at most {MAX_FIELD_VALUES}")
                    continue
                for value, (vk, vv) in listed.items():
                    if not NAME.match(value) or len(value) > MAX_VARIABLE_CHARS:
                        doc.problem(vk, f"value `{value}` of {what} is not a valid name",
                                    "use letters, digits, `_` or `-`")
                        continue
                    labels = self.labels(vv, f"the label of `{value}` in {what}")
                    if labels is not None:
                        values[value] = labels
                if not listed and isinstance(entry["values"][1], MappingNode):
                    doc.problem(entry["values"][1], f"{what} has no values")
                if len(values) < len(listed):
                    continue
            else:
                bounds = doc.mapping(entry["number"][1], f"`number` of {what}")
                if bounds is None:
                    continue
                doc.keys(entry["number"][1], bounds, {"min", "max"}, set(), f"`number` of {what}")
                if not {"min", "max"} <= bounds.keys():
                    continue
                lo = doc.integer(bounds["min"][1], "`min`", 0, MAX_FIELD_NUMBER)
                hi = doc.integer(bounds["max"][1], "`max`", 0, MAX_FIELD_NUMBER)
                if lo is None or hi is None:
                    continue
                if lo > hi:
                    doc.problem(bounds["min"][1], f"`min` of {what} is {lo}, more than its `max` {hi}")
                    continue
                low, high = lo, hi
            urgent: set[str] = set()
            if "urgent" in entry:
                for item, item_node in self.items(entry["urgent"][1], "an urgent value"):
                    if item not in values:
                        doc.problem(item_node, f"`{item}` is not a value of {what}",
                                    doc.guess(item, values) or ("a number field has no urgent values"
                                    if not values else f"its values: {', '.join(values)}"))
                    else:
                        urgent.add(item)
            if label is not None:
                self.fields[name] = Field(name, label, values, low, high, frozenset(urgent))

    def items(self, node: Node, what: str) -> list[tuple[str, Node]]:
        """A single text or a list of texts, each with its node (for its position)."""
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        return [(text, n) for n in nodes if (text := self.doc.string(n, what)) is not None]

    def labels(self, node: Node, what: str) -> dict[str, str] | None:
        """What the console calls a field or a value, in each of its languages."""
        doc = self.doc
        found = doc.mapping(node, f"{what} (one line per console language)")
        if found is None:
            return None
        out: dict[str, str] = {}
        for lang, (lk, lv) in found.items():
            if lang not in CONSOLE_LANGUAGES:
                doc.problem(lk, f"`{lang}` is not a language of the console",
                            f"labels are in {', '.join(CONSOLE_LANGUAGES)}")
                continue
            text = doc.string(lv, f"{what} in `{lang}`")
            if text and len(text) > MAX_VARIABLE_CHARS:
                doc.problem(lv, f"{what} in `{lang}` is {len(text)} characters long; a label may "
                            f"have at most {MAX_VARIABLE_CHARS}", "the queue shows it as a short tag")
            elif text:
                out[lang] = text
        missing = [lang for lang in CONSOLE_LANGUAGES if lang not in found]
        if missing:
            doc.problem(node, f"{what} has no `{'`, `'.join(missing)}` version",
                        f"the console shows it in {', '.join(CONSOLE_LANGUAGES)}: give each")
            return None
        return out if len(out) == len(CONSOLE_LANGUAGES) else None

    def check_value(self, var: str, value: str | None, node: Node) -> bool:
        """A value set for a declared field must be one it allows (reported if not)."""
        field = self.fields.get(var)
        if value is None or field is None:
            return True
        if field.allows(value):
            return True
        if field.number:
            self.doc.problem(node, f"`{value}` is not a number from {field.low} to {field.high} "
                             f"(field `{var}`)")
        else:
            self.doc.problem(node, f"`{value}` is not a value of field `{var}`",
                             self.doc.guess(value, field.values)
                             or f"its values: {', '.join(field.values)}")
        return False

    # steps ------------------------------------------------------------------------------
    def ref(self, node: Node, what: str) -> str:
        name = self.doc.string(node, what) or ""
        self.refs.append((name, node))
        return name

    def step(self, name: str, node: Node) -> Step | None:
        doc = self.doc
        what = f"step `{name}`"
        found = doc.mapping(node, what)
        if found is None:
            return None
        if "type" not in found:
            doc.problem(node, f"{what} needs a `type`", f"one of: {', '.join(STEP_TYPES)}")
            return None
        kind = doc.string(found["type"][1], "`type`")
        if kind not in STEP_KEYS:
            if kind:
                doc.problem(
                    found["type"][1],
                    f"unknown step type `{kind}`",
                    doc.guess(kind, STEP_TYPES) or f"step types: {', '.join(STEP_TYPES)}",
                )
            return None
        required, optional = STEP_KEYS[kind]
        said = set()
        if kind == "record" and "next" not in found:
            said = {"next"}  # said better than "needs `next`"
            doc.problem(
                node,
                f"record step `{name}` has nothing after it",
                "add `next:` with what the caller hears after leaving the message",
            )
        doc.keys(node, found, (required | {"type"}) - said, optional, f"{kind} step `{name}`")
        if not required <= found.keys():
            return None
        v: dict[str, Node] = {k: n for k, (_, n) in found.items()}
        self._broken = False
        try:
            built = self._build(kind, name, v)
        except _Skip:
            return None
        return None if self._broken else built

    def _need(self, value: Any) -> Any:
        """A part of the step that was wrong (already reported) leaves the step out of the
        model, but the rest of the step is still read so all its problems are reported."""
        if value is None:
            self._broken = True
        return value

    def _must(self, value: Any) -> Any:
        """A part the rest of the step is read from: stop reading the step if it is wrong."""
        if value is None:
            raise _Skip
        return value

    def _opt_prompt(self, v: dict[str, Node], key: str, what: str) -> Prompt | None:
        return self._need(self.prompt(v[key], what)) if key in v else None

    def _build(self, kind: str, name: str, v: dict[str, Node]) -> Step:
        doc, need = self.doc, self._need
        what = f"step `{name}`"
        match kind:
            case "say":
                pause = doc.integer(v["pause"], "`pause`", 0, 10) if "pause" in v else 0
                return Say(
                    name, need(self.prompt(v["prompt"], f"prompt of {what}")),
                    self.ref(v["next"], "`next`"), need(pause),
                )
            case "menu":
                return self.menu(name, v)
            case "language":
                lang = need(doc.string(v["language"], "`language`"))
                if lang is not None and lang not in self.languages:
                    doc.problem(
                        v["language"],
                        f"`{lang}` is not a language of this flow",
                        doc.guess(lang, self.languages) or f"it speaks {', '.join(self.languages)}",
                    )
                    need(None)
                return SetLanguage(
                    name, lang, self.ref(v["next"], "`next`"),
                    self._opt_prompt(v, "prompt", f"prompt of {what}"),
                )
            case "branch":
                return self.branch(name, v)
            case "set":
                found = self._must(doc.mapping(v["variables"], "`variables`"))
                values = {}
                for var, (key_node, value_node) in found.items():
                    if not NAME.match(var):
                        doc.problem(key_node, f"variable `{var}` is not a valid name")
                    values[var] = need(doc.string(value_node, f"variable `{var}`"))
                    if values[var] is not None and len(values[var]) > MAX_VARIABLE_CHARS:
                        doc.problem(value_node, f"variable `{var}` is {len(values[var]):,} "
                                    f"characters long; a value may have at most "
                                    f"{MAX_VARIABLE_CHARS}", "it travels in every step's URL")
                        values[var] = need(None)
                    if not self.check_value(var, values[var], value_node):
                        values[var] = need(None)
                    elif var == CONSENT_VARIABLE and values[var] not in CONSENTS:
                        doc.problem(value_node, f"`{CONSENT_VARIABLE}` is the caller's callback "
                                    f"consent: `{values[var]}` is not one of {', '.join(CONSENTS)}",
                                    doc.guess(values[var], CONSENTS) or "any (any time), day "
                                    "(daytime in their time zone) or none")
                return SetVariables(name, values, self.ref(v["next"], "`next`"))
            case "digits":
                field = need(doc.name(v["field"], "`field`"))
                declared = self.fields.get(field) if field else None
                if field and declared is None and field not in self.field_names:
                    doc.problem(v["field"], f"no field named `{field}`",
                                doc.guess(field, self.field_names) or "declare it under `fields:`, "
                                "with `number: {min: …, max: …}`")
                    need(None)
                elif declared is not None and not declared.number:
                    doc.problem(v["field"], f"field `{field}` is a choice of values, not a number",
                                "a `digits` step keeps a `number` field; a menu's options `set` a "
                                "choice")
                    need(None)
                return Digits(
                    name, need(self.prompt(v["prompt"], f"prompt of {what}")), field,
                    self.ref(v["next"], "`next`"),
                    need(doc.integer(v["timeout"], "`timeout`", 1, 60)) if "timeout" in v else 6,
                    need(doc.integer(v["retries"], "`retries`", 0, 9)) if "retries" in v else 1,
                    self._opt_prompt(v, "wrong_key", f"`wrong_key` of {what}"),
                )
            case "record":
                return Record(
                    name,
                    need(self.prompt(v["prompt"], f"prompt of {what}")),
                    self.ref(v["next"], "`next`"),
                    need(doc.integer(v["max_length"], "`max_length`", 5, 3600))
                    if "max_length" in v else 120,
                    need(self.key(v["finish_key"])) if "finish_key" in v else "#",
                    need(doc.integer(v["silence_timeout"], "`silence_timeout`", 1, 60))
                    if "silence_timeout" in v else 5,
                    self.ref(v["on_empty"], "`on_empty`") if "on_empty" in v else None,
                    bool(need(doc.boolean(v["case_code"], "`case_code`"))) if "case_code" in v else False,
                )
            case "transfer":
                hours = None
                if "hours" in v:
                    hours = need(doc.string(v["hours"], "`hours`"))
                    if hours is not None:
                        self.hours_refs.append((hours, v["hours"]))
                    if "out_of_hours" not in v:
                        doc.problem(
                            v["hours"],
                            f"transfer `{name}` has `hours` but no `out_of_hours` step",
                            "say where callers go when nobody is on duty",
                        )
                return Transfer(
                    name,
                    self._opt_prompt(v, "prompt", f"prompt of {what}"),
                    self.ref(v["next"], "`next`"),
                    self.ref(v["no_answer"], "`no_answer`"),
                    self.ref(v["out_of_hours"], "`out_of_hours`") if "out_of_hours" in v else None,
                    hours,
                    need(doc.integer(v["timeout"], "`timeout`", 5, 120)) if "timeout" in v else 25,
                )
            case "goto":
                step = Goto(
                    name,
                    self._must(doc.name(v["flow"], "`flow`")),
                    self._must(doc.name(v["step"], "`step`")) if "step" in v else None,
                )
                self.gotos.append((step, v.get("step", v["flow"])))
                return step
            case "case_code":
                return CaseCode(
                    name, need(self.prompt(v["prompt"], f"prompt of {what}")),
                    self.ref(v["found"], "`found`"), self.ref(v["failed"], "`failed`"),
                    self._opt_prompt(v, "wrong_key", f"`wrong_key` of {what}"),
                    need(doc.integer(v["timeout"], "`timeout`", 3, 60)) if "timeout" in v else 10,
                    need(doc.integer(v["retries"], "`retries`", 0, 4)) if "retries" in v else 2,
                )
            case _:
                return Hangup(name, self._opt_prompt(v, "prompt", f"prompt of {what}"))

    def key(self, node: Node) -> str | None:
        value = self.doc.value(node)
        key = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not KEY.match(key):
            self.doc.problem(node, f"`{key or node.value}` is not a phone key", "use 0-9, * or #")
            return None
        return key

    def menu(self, name: str, v: dict[str, Node]) -> Menu:
        doc, need = self.doc, self._need
        what = f"step `{name}`"
        found = self._must(doc.mapping(v["options"], f"options of {what}"))
        options: list[Option] = []
        seen: set[str] = set()  # `1` and "1" are one key: Doc.mapping reports the duplicate
        for _, (key_node, value_node) in found.items():
            key = self.key(key_node)
            if key is None:
                continue
            seen.add(key)
            if isinstance(value_node, MappingNode):
                entry = doc.mapping(value_node, f"option `{key}`") or {}
                doc.keys(value_node, entry, {"next"}, {"words", "set"}, f"option `{key}`")
                if "next" not in entry:
                    continue
                kept = self.option_set(entry["set"][1], key) if "set" in entry else {}
                words: dict[str, tuple[str, ...]] = {}
                for lang, (wk, wv) in (
                    doc.mapping(entry["words"][1], "`words`") or {} if "words" in entry else {}
                ).items():
                    if lang not in self.languages:
                        doc.problem(wk, f"`{lang}` is not a language of this flow")
                    words[lang] = doc.strings(wv, "a word")
                options.append(Option(key, self.ref(entry["next"][1], "`next`"), words, kept))
            else:
                options.append(Option(key, self.ref(value_node, f"option `{key}`")))
        if not options and not found:
            doc.problem(v["options"], f"menu `{name}` has no options")
        need(options or None)
        repeat = None
        if "repeat_key" in v:
            repeat = need(self.key(v["repeat_key"]))
            if repeat is not None and repeat in seen:
                doc.problem(v["repeat_key"], f"repeat key `{repeat}` is also a menu option")
        speech = need(doc.boolean(v["speech"], "`speech`")) if "speech" in v else False
        if speech and not any(o.words for o in options):
            doc.problem(
                v["speech"], "`speech: true` but no option lists `words` to listen for",
                warning=True,
            )
        if speech:
            # Not an error: a hotline may accept the trade. But it must be a choice, made
            # knowing that Twilio's recogniser, not our machines, hears these words.
            doc.problem(
                v["speech"], f"privacy: menu `{name}` listens for speech, so what callers say "
                "here is sent to Twilio's cloud speech recogniser",
                "remove `speech: true` to keep this menu keypad-only", note=True,
            )
        skip = self.ref(v["skip"], "`skip`") if "skip" in v else None
        if skip and "#" in seen:
            doc.problem(v["skip"], f"menu `{name}` has an option `#` and a `skip`",
                        "`#` is the key that skips: take it out of the options")
        return Menu(
            name,
            need(self.prompt(v["prompt"], f"prompt of {what}")),
            tuple(options),
            self.ref(v["on_failure"], "`on_failure`"),
            need(doc.integer(v["timeout"], "`timeout`", 1, 60)) if "timeout" in v else 5,
            need(doc.integer(v["retries"], "`retries`", 0, 9)) if "retries" in v else 2,
            self._opt_prompt(v, "no_input", f"`no_input` of {what}"),
            self._opt_prompt(v, "wrong_key", f"`wrong_key` of {what}"),
            repeat,
            speech,
            skip,
        )

    def option_set(self, node: Node, key: str) -> dict[str, str]:
        """An option's `set:`: call variables (or fields) kept when the caller chooses it."""
        doc = self.doc
        out: dict[str, str] = {}
        for var, (key_node, value_node) in (doc.mapping(node, f"`set` of option `{key}`") or {}).items():
            if not NAME.match(var):
                doc.problem(key_node, f"variable `{var}` is not a valid name")
                self._need(None)
                continue
            value = self._need(doc.string(value_node, f"variable `{var}`"))
            if value is not None and len(value) > MAX_VARIABLE_CHARS:
                doc.problem(value_node, f"variable `{var}` is {len(value):,} characters long; a "
                            f"value may have at most {MAX_VARIABLE_CHARS}", "it travels in every step's URL")
                value = self._need(None)
            if not self.check_value(var, value, value_node):
                value = self._need(None)
            elif var == CONSENT_VARIABLE and value not in CONSENTS:
                doc.problem(value_node, f"`{CONSENT_VARIABLE}` is the caller's callback consent: "
                            f"`{value}` is not one of {', '.join(CONSENTS)}")
                value = self._need(None)
            if value is not None:
                out[var] = value
        return out

    def branch(self, name: str, v: dict[str, Node]) -> Branch:
        doc = self.doc
        node = v["when"]
        if not isinstance(node, SequenceNode) or not node.value:
            doc.problem(node, "`when` must be a list of conditions, each starting with `- `")
            raise _Skip
        conditions: list[Condition] = []
        for item in node.value:
            entry = doc.mapping(item, "a `when` condition")
            if entry is None:
                continue
            kinds = [k for k in entry if k in CONDITIONS]
            extra = {"equals"} if "variable" in entry else set()
            doc.keys(item, entry, {"next"}, set(CONDITIONS) | extra, "a `when` condition")
            if len(kinds) != 1:
                doc.problem(
                    item, "each `when` condition needs exactly one test",
                    f"one of: {', '.join(CONDITIONS)}",
                )
                continue
            if "next" not in entry:
                continue
            kind = kinds[0]
            value_node = entry[kind][1]
            variable = None
            if kind == "withheld":
                flag = doc.boolean(value_node, "`withheld`")
                values: tuple[str, ...] = () if flag is None else (str(flag).lower(),)
            elif kind == "variable":
                variable = doc.name(value_node, "`variable`")
                if "equals" not in entry:
                    doc.problem(item, "a `variable` condition needs `equals`")
                    continue
                values = doc.strings(entry["equals"][1], "`equals`")
            else:
                values = doc.strings(value_node, f"`{kind}`")
                self.check_values(kind, values, value_node)
            if values:
                conditions.append(
                    Condition(kind, values, self.ref(entry["next"][1], "`next`"), variable)
                )
        return Branch(name, tuple(conditions), self.ref(v["otherwise"], "`otherwise`"))

    def check_values(self, kind: str, values: tuple[str, ...], node: Node) -> None:
        doc = self.doc
        for value in values:
            if kind == "language" and value not in self.languages:
                doc.problem(node, f"`{value}` is not a language of this flow")
            elif kind in ("open", "closed"):
                self.hours_refs.append((value, node))
            elif kind == "country" and not re.fullmatch(r"[A-Z]{2}", value):
                doc.problem(node, f"`{value}` is not a country code", "use codes like RU or UA")
            elif kind == "region" and self.regions is not None and value not in self.regions:
                doc.problem(
                    node, f"no region named `{value}` in regions.yaml",
                    doc.guess(value, self.regions) or f"regions: {', '.join(sorted(self.regions))}",
                )


class _Skip(Exception):
    """A part of a step was wrong (already reported): leave the step out of the model."""


def parse_flow(
    text: str,
    file: str,
    audio_dir: Path | None = None,
    regions: set[str] | None = None,
) -> Parsed:
    """Read one flow file; every problem found is in `.problems`, `.flow` is None if any."""
    parsed = _parse_flow(text, file, audio_dir, regions)
    parsed.problems = _shown(file, parsed.problems)
    return parsed


def _shown(file: str, problems: list[Problem]) -> list[Problem]:
    """The problems in reading order, the first MAX_PROBLEMS of them and a count of the rest
    (a file of thousands of mistakes must not flood the log at every reload)."""
    found = sorted(problems, key=lambda x: (x.line, x.col))
    if len(found) <= MAX_PROBLEMS:
        return found
    hidden = found[MAX_PROBLEMS:]
    return [*found[:MAX_PROBLEMS], Problem(
        file, hidden[0].line, hidden[0].col,
        f"{len(hidden):,} more problems from here on are not shown",
        "fix the ones above first", all(x.warning for x in hidden),
    )]


def _parse_flow(
    text: str, file: str, audio_dir: Path | None, regions: set[str] | None
) -> Parsed:
    doc = Doc(file)
    if len(text) > MAX_FILE_BYTES // 4 and len(text.encode()) > MAX_FILE_BYTES:
        doc.problems.append(Problem(
            file, 1, 1, f"the text is over {MAX_FILE_BYTES // 1_000_000} MB; a flow file may "
            f"be at most {MAX_FILE_BYTES // 1_000_000} MB", "split it into smaller files",
        ))
        return Parsed(file, None, doc.problems)
    root = compose(text, doc)
    if root is None:
        return Parsed(file, None, doc.problems)
    if not isinstance(root, MappingNode):
        doc.problem(root, "a flow file must be a mapping with `id`, `languages` and `steps`")
        return Parsed(file, None, doc.problems)
    top = doc.mapping(root, "the flow") or {}
    doc.keys(root, top, {"id", "languages", "steps"}, FLOW_KEYS - {"id", "languages", "steps"},
             "the flow")
    reader = _FlowReader(doc, audio_dir, regions)
    flow_id = doc.name(top["id"][1], "`id`") if "id" in top else None
    if "languages" in top:
        reader.read_languages(top["languages"][1])
    if "hours" in top:
        reader.read_hours(top["hours"][1])
    if "fields" in top:
        reader.read_fields(top["fields"][1])
    steps: dict[str, Step] = {}
    steps_node = top["steps"][1] if "steps" in top else None
    if isinstance(steps_node, MappingNode) and len(steps_node.value) > MAX_STEPS:
        doc.problem(
            steps_node, f"the flow has {len(steps_node.value):,} steps; a flow may have at "
            f"most {MAX_STEPS}", "split it into several flows joined by `goto` steps",
        )
        return Parsed(file, None, doc.problems, top.get("id", (None, None))[1])
    step_map = doc.mapping(steps_node, "`steps`") if steps_node is not None else None
    if step_map == {}:
        doc.problem(top["steps"][1], "a flow needs at least one step")
    for name, (key_node, value_node) in (step_map or {}).items():
        reader.step_nodes[name] = key_node
        if not NAME.match(name):
            doc.problem(key_node, f"step name `{name}` is not valid", "use letters, digits, `_` or `-`")
        step = reader.step(name, value_node)
        if step is not None:
            steps[name] = step
    names = list(reader.step_nodes)
    for target, node in reader.refs:
        if target and target not in reader.step_nodes:
            doc.problem(
                node, f"no step named `{target}`", doc.guess(target, names) or "check the spelling"
            )
    for target, node in reader.hours_refs:
        if target not in reader.hours_names:
            doc.problem(
                node, f"no opening hours named `{target}`",
                doc.guess(target, reader.hours_names) or "define them under `hours:`",
            )
    start = names[0] if names else ""
    if "start" in top:
        start = reader.ref(top["start"][1], "`start`")
        if start not in reader.step_nodes:
            doc.problem(top["start"][1], f"no step named `{start}`", doc.guess(start, names))
    default = next(iter(reader.languages), "")
    if "default_language" in top:
        default = doc.string(top["default_language"][1], "`default_language`") or ""
        if default not in reader.languages:
            doc.problem(top["default_language"][1], f"`{default}` is not a language of this flow")
    clean = not any(not p.warning for p in doc.problems)  # else: follow-on noise, no news
    if clean and start in steps and len(steps) == len(reader.step_nodes):
        _check_graph(doc, steps, start, reader.step_nodes)
    title = doc.string(top["title"][1], "`title`") if "title" in top else ""
    if any(not p.warning for p in doc.problems) or not flow_id:
        return Parsed(file, None, doc.problems, top.get("id", (None, None))[1], reader.gotos,
                      reader.step_nodes)
    flow = Flow(
        id=flow_id,
        version=hashlib.sha256(text.encode()).hexdigest()[:10],
        languages=reader.languages,
        default_language=default,
        start=start,
        steps=steps,
        hours=reader.hours,
        source=file,
        title=title or "",
        fields=reader.fields,
    )
    return Parsed(file, flow, doc.problems, top["id"][1], reader.gotos, reader.step_nodes)


def _check_graph(doc: Doc, steps: dict[str, Step], start: str, nodes: dict[str, Node]) -> None:
    """Unreachable steps and loops that never wait for the caller, within one flow."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in steps:
            continue
        seen.add(name)
        todo.extend(t for _, t, _ in edges(steps[name]))
    for name in steps:
        if name not in seen:
            doc.problem(
                nodes[name], f"step `{name}` can never be reached from `{start}`",
                "link to it from another step, or delete it",
            )
    cycles = _automatic_cycles(steps)
    for cycle in cycles:
        doc.problem(
            nodes[cycle[0]],
            "these steps loop forever without waiting for the caller: "
            + " -> ".join(f"`{s}`" for s in [*cycle, cycle[0]]),
            "put a menu, record or transfer step in the loop",
        )
    if not cycles:
        flow_id = "\0"  # gotos end the chain here; load_set follows them across the set
        runs = Runs({flow_id: steps}, state_bytes({flow_id: steps}))
        check_runs(doc, runs, flow_id, steps, nodes)


def _automatic_cycles(steps: Mapping[str, Step]) -> list[list[str]]:
    """Each distinct cycle of automatic edges, found by depth-first search (iterative: a
    flow of many steps in a row must not exhaust the stack)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in steps:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(edges(steps[root]))]
        while stack:
            for _, target, auto in stack[-1]:
                if not auto or target not in steps:
                    continue
                if state.get(target) == 1:
                    cycles.append(path[path.index(target):])
                elif target not in state:
                    state[target] = 1
                    path.append(target)
                    stack.append(iter(edges(steps[target])))
                    break
            else:
                stack.pop()
                state[path.pop()] = 2
    return cycles


# --- a set of flow files ------------------------------------------------------------------


@dataclass
class FlowSet:
    flows: dict[str, Flow]
    problems: list[Problem]
    files: dict[str, str]  # flow id -> file
    broken: set[str]  # files with errors


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """The flow files named, or found in the folders named (their top level only)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(
                p for p in path.iterdir()
                if p.suffix in (".yaml", ".yml") and p.name not in RESERVED_FILES
            )
        else:
            out.append(path)
    return out


def load_set(
    files: Iterable[Path],
    audio_dir: Callable[[Path], Path] = lambda f: f.parent / "audio",
    regions: set[str] | None = None,
    known: dict[str, Flow] | None = None,
    cache: dict[tuple[object, ...], Parsed] | None = None,
) -> FlowSet:
    """Read flow files and check what only the whole set can tell: ids, gotos, reachability.

    `known` are flows already serving (the last good versions) that a goto may still name.
    `cache` (the running service's) keeps each file's reading by name, size and modification
    time, so a reload reads only the files that changed: a big or broken file that stays in
    the folder costs one reading, not one per edit of another file.
    """
    parsed: list[Parsed] = []
    problems: list[Problem] = []
    used: set[tuple[object, ...]] = set()
    for path in files:
        key: tuple[object, ...] | None = None
        if cache is not None:
            try:
                st = path.stat()
                key = (str(path), st.st_mtime_ns, st.st_size, frozenset(regions or ()))
            except OSError:
                key = None
        if key is not None and cache is not None and key in cache:
            used.add(key)
            parsed.append(replace(cache[key], problems=list(cache[key].problems)))
            continue
        text, problem = read_file(path, MAX_FILE_BYTES)
        if text is None:
            assert problem is not None
            problems.append(problem)
            continue
        one = parse_flow(text, str(path), audio_dir(path), regions)
        if key is not None and cache is not None:
            used.add(key)
            cache[key] = replace(one, problems=list(one.problems))
        parsed.append(one)
    if cache is not None:
        for gone in set(cache) - used:
            del cache[gone]
    flows: dict[str, Flow] = dict(known or {})
    owners: dict[str, str] = {}
    for p in parsed:
        if p.flow is None:
            continue
        if p.flow.id in owners:
            doc = Doc(p.file)
            assert p.id_node is not None
            doc.problem(
                p.id_node, f"flow id `{p.flow.id}` is also used by {owners[p.flow.id]}",
                "give each flow file its own `id`",
            )
            p.problems += doc.problems
            p.flow = None
            continue
        owners[p.flow.id] = p.file
        flows[p.flow.id] = p.flow
    broken_ids: dict[str, str] = {}  # files with mistakes: a goto there is not misspelt
    for p in parsed:
        name = Doc(p.file).value(p.id_node) if p.flow is None and p.id_node else None
        if isinstance(name, str) and name not in owners:
            broken_ids[name] = p.file
    for p in parsed:
        doc = Doc(p.file)
        for goto, node in p.gotos:
            target = flows.get(goto.flow)
            if target is None and goto.flow in broken_ids:
                doc.problem(
                    node, f"flow `{goto.flow}` cannot be used: {broken_ids[goto.flow]} has mistakes",
                    "fix that file first",
                )
            elif target is None:
                doc.problem(
                    node, f"no flow with id `{goto.flow}`",
                    doc.guess(goto.flow, flows)
                    or f"check the spelling, or add a flow file with `id: {goto.flow}`",
                )
            elif goto.step and goto.step not in target.steps:
                doc.problem(
                    node, f"flow `{goto.flow}` has no step `{goto.step}`",
                    doc.guess(goto.step, target.steps)
                    or f"its steps: {', '.join(target.steps)}",
                )
        if p.flow is not None and not doc.problems:
            _check_outcome(doc, p, flows)
            _check_cross_cycles(doc, p, flows)
        if p.flow is not None and not doc.problems and p.gotos:
            sets = {f.id: f.steps for f in flows.values()}
            runs = Runs(sets, state_bytes(sets), follow=flows)
            check_runs(doc, runs, p.flow.id, p.flow.steps, p.step_nodes)
        p.problems += doc.problems
    for p in parsed:  # only after every flow was checked against the same set
        if p.flow is not None and any(not x.warning for x in p.problems):
            flows.pop(p.flow.id, None)
            owners.pop(p.flow.id, None)
            p.flow = None
    for p in parsed:
        problems += sorted(p.problems, key=lambda x: (x.line, x.col))  # in reading order
    broken = {p.file for p in parsed if p.flow is None} | {x.file for x in problems if not x.warning}
    return FlowSet(
        {k: f for k, f in flows.items() if k in owners}, problems, owners, broken
    )


def _reachable(flow: Flow, start: str, flows: dict[str, Flow]) -> Iterator[tuple[Flow, Step]]:
    seen: set[tuple[str, str]] = set()
    todo = [(flow, start)]
    while todo:
        f, name = todo.pop()
        if (f.id, name) in seen or name not in f.steps:
            continue
        seen.add((f.id, name))
        step = f.steps[name]
        yield f, step
        if isinstance(step, Goto) and step.flow in flows:
            target = flows[step.flow]
            todo.append((target, step.step or target.start))
        todo.extend((f, t) for _, t, _ in edges(step))


def _check_outcome(doc: Doc, p: Parsed, flows: dict[str, Flow]) -> None:
    assert p.flow is not None and p.id_node is not None
    kinds = {type(s) for _, s in _reachable(p.flow, p.flow.start, flows)}
    if not kinds & {Record, Transfer}:
        doc.problem(
            p.id_node,
            f"flow `{p.flow.id}` never reaches a voicemail (`record`) or an operator (`transfer`)",
            "every caller must be able to reach a human or leave a message",
        )


def _check_cross_cycles(doc: Doc, p: Parsed, flows: dict[str, Flow]) -> None:
    """A goto into another flow that comes back without waiting for the caller."""
    assert p.flow is not None
    for goto, node in p.gotos:
        target = flows.get(goto.flow)
        if target is None:
            continue
        todo, seen = [(target, goto.step or target.start)], set()
        while todo:
            f, name = todo.pop()
            if (f.id, name) in seen or name not in f.steps:
                continue
            seen.add((f.id, name))
            step = f.steps[name]
            if isinstance(step, (*WAITING, Hangup)):
                continue
            if f.id == p.flow.id and name == goto.name:
                doc.problem(
                    node, f"goto `{goto.name}` comes back to itself without waiting for the caller",
                    "put a menu, record or transfer step on the way",
                )
                break
            if isinstance(step, Goto) and step.flow in flows:
                nxt = flows[step.flow]
                todo.append((nxt, step.step or nxt.start))
            todo.extend((f, t) for _, t, auto in edges(step) if auto)
