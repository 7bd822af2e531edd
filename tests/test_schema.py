"""flows/schema.json describes the flow format as the loader reads it.

The schema is what an editor (VS Code with the YAML extension) completes and underlines as
a flow is typed; `ivr flows check` stays the judge. So the schema must accept every flow the
loader accepts, and catch what it can of the mistakes: the shape, not the cross-references.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from ivr.flow import DEFAULT_LOCALES, VOICES, voices_for
from ivr.loader import CONDITIONS, FLOW_KEYS, RESERVED_FILES, STEP_KEYS, parse_flow
from tests.conftest import ROOT, TEST_FLOWS

SCHEMA_FILE = ROOT / "flows" / "schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
FLOWS = sorted(
    p for p in (*(ROOT / "flows").glob("*.yaml"), *TEST_FLOWS.glob("*.yaml"))
    if p.name not in RESERVED_FILES
)


def as_editor_sees(value: Any) -> Any:
    """PyYAML's reading, as JSON: keys are strings (`1:` is the key "1") and dates are text
    (the YAML extension reads YAML 1.2, where 2027-01-01 is a string)."""
    if isinstance(value, dict):
        return {str(k): as_editor_sees(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_editor_sees(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def errors(text: str) -> list[str]:
    """Each innermost schema error, as `path: message`."""
    def leaves(errs: Any) -> Iterator[Any]:
        for e in errs:
            if e.context:
                yield from leaves(e.context)
            else:
                yield e

    found = leaves(VALIDATOR.iter_errors(as_editor_sees(yaml.safe_load(text))))
    return sorted(f"{e.json_path}: {e.message}" for e in found)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_there_are_flows_to_check() -> None:
    assert TEST_FLOWS / "mini.yaml" in FLOWS


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flow_matches_the_schema(path: Path) -> None:
    assert errors(path.read_text(encoding="utf-8")) == []


# Every key and form the loader accepts, in one flow the loader reads without a problem.
EVERYTHING = """\
id: everything
title: Every key the loader knows
languages:
  ru: {voice: Polly.Tatyana}
  uk: {voice: Google.uk-UA-Wavenet-A, locale: uk-UA}
  gb: {voice: Polly.Amy, locale: en-GB}
default_language: uk
start: hello
hours:
  office:
    timezone: Europe/Kyiv
    open: {Mon-Fri: ["09:00-13:00", "14:00-18:00"], sat: "10:00-14:00", every day: "22:00-24:00"}
    holidays: [2027-01-01]
  night: {timezone: Europe/Moscow, open: {daily: "22:00-06:00"}, holidays: 2027-01-07}
steps:
  hello:
    type: say
    prompt:
      ru: Здравствуйте
      uk: {text: Добрий день, audio: hello-uk.wav}
      gb: {text: Hello, audio: "https://example.org/hello.mp3"}
    pause: 1
    next: remember
  remember: {type: set, variables: {topic: none, count: 1}, next: route}
  route:
    type: branch
    when:
      - {region: [crimea, occupied], next: main_menu}
      - {country: UA, next: main_menu}
      - {country: [RU, BY], next: main_menu}
      - {language: [ru, uk], next: main_menu}
      - {withheld: false, next: main_menu}
      - {open: office, next: main_menu}
      - {closed: [office, night], next: main_menu}
      - {variable: topic, equals: [legal, 2], next: main_menu}
    otherwise: main_menu
  main_menu:
    type: menu
    prompt: {ru: Меню, uk: Меню, gb: Menu}
    options:
      1: {next: to_gb, words: {gb: [english, britain], ru: английский}}
      2: operator
      "#": voicemail
      0: {next: elsewhere}
    timeout: 7
    retries: 0
    no_input: {ru: Не слышу, uk: Не чую, gb: Pardon}
    wrong_key: {ru: Нет, uk: Ні, gb: No such key}
    repeat_key: "*"
    speech: true
    on_failure: voicemail
  to_gb: {type: language, language: gb, prompt: {ru: Да, uk: Так, gb: "Yes"}, next: main_menu}
  operator:
    type: transfer
    prompt: {ru: Соединяю, uk: З'єдную, gb: Connecting}
    hours: office
    out_of_hours: voicemail
    timeout: 30
    next: bye
    no_answer: voicemail
  voicemail:
    type: record
    prompt: {ru: Говорите, uk: Говоріть, gb: Speak}
    max_length: 300
    finish_key: 5
    silence_timeout: 10
    on_empty: bye
    next: bye
  elsewhere: {type: goto, flow: legal, step: intro}
  bye: {type: hangup, prompt: {ru: Пока, uk: Бувайте, gb: Goodbye}}
"""


def test_the_schema_accepts_every_key_and_form_the_loader_accepts() -> None:
    parsed = parse_flow(EVERYTHING, "everything.yaml")
    assert [p for p in parsed.problems if not p.note] == [] and parsed.flow is not None
    assert [p.message.split(":")[0] for p in parsed.problems] == ["privacy"]  # speech: a note
    assert errors(EVERYTHING) == []
    one_language = "id: x\nlanguages: {en: {voice: Polly.Joanna}}\nsteps:\n" \
        "  vm: {type: record, prompt: Speak, next: bye}\n  bye: {type: hangup, prompt: 112}\n"
    assert parse_flow(one_language, "x.yaml").problems == []
    assert errors(one_language) == []


@pytest.mark.parametrize(("case", "found"), [
    ("unknown_step_type", [
        "$.steps.main_menu.type: 'manu' is not one of "
        "['say', 'menu', 'digits', 'language', 'branch', 'set', 'record', 'transfer', 'goto', 'hangup', "
        "'case_code']",
    ]),
    ("unknown_top_key", ["$: Additional properties are not allowed ('titel' was unexpected)"]),
    ("unknown_step_key", [
        "$.steps.hello: 'prompt' is a required property",
        "$.steps.hello: Additional properties are not allowed ('promt' was unexpected)",
    ]),
    ("invalid_menu_key", [
        "$.steps.main_menu.options: '10' does not match '^[0-9*#]$'",
        "$.steps.main_menu.options: 'a' does not match '^[0-9*#]$'",
    ]),
    ("missing_type", ["$.steps.hello: 'type' is a required property"]),
    ("record_no_next", ["$.steps.voicemail: 'next' is a required property"]),
    ("bad_numbers", [
        "$.steps.main_menu.retries: 'many' is not of type 'integer'",
        "$.steps.main_menu.timeout: 0 is less than the minimum of 1",
    ]),
    ("transfer_no_out_of_hours", ["$.steps.operator: 'out_of_hours' is a dependency of 'hours'"]),
    ("variable_no_equals", ["$.steps.main.when[0]: 'equals' is a dependency of 'variable'"]),
    ("voice_wrong_language", [
        "$.languages.uk.voice: 'Polly.Tatyana' is not one of "
        "['Google.uk-UA-Standard-A', 'Google.uk-UA-Wavenet-A']",
    ]),
    ("no_id", ["$: 'id' is a required property"]),
])
def test_the_schema_rejects_mistakes_it_can_see(case: str, found: list[str]) -> None:
    assert errors((ROOT / "tests" / "broken" / f"{case}.yaml").read_text(encoding="utf-8")) == found


@pytest.mark.parametrize("case", [
    "bad_hours", "bad_timezone", "country_code", "unknown_voice", "when_tests", "three_mistakes",
    "not_mapping_list", "not_mapping_scalar", "empty",
])
def test_the_schema_rejects_more_mistakes(case: str) -> None:
    assert errors((ROOT / "tests" / "broken" / f"{case}.yaml").read_text(encoding="utf-8"))


# --- the schema and the loader know the same keys ------------------------------------------


def test_top_level_keys_match_the_loader() -> None:
    assert set(SCHEMA["properties"]) == FLOW_KEYS
    assert set(SCHEMA["required"]) == {"id", "languages", "steps"}
    assert SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize("kind", list(STEP_KEYS))
def test_step_keys_match_the_loader(kind: str) -> None:
    required, optional = STEP_KEYS[kind]
    step = SCHEMA["$defs"][f"{kind}_step"]
    assert set(step["required"]) == required | {"type"}
    assert set(step["properties"]) == required | optional | {"type"}
    assert step["properties"]["type"]["const"] == kind
    assert step["additionalProperties"] is False


def test_step_types_match_the_loader() -> None:
    step = SCHEMA["$defs"]["step"]
    assert step["properties"]["type"]["enum"] == list(STEP_KEYS)
    assert [rule["if"]["properties"]["type"]["const"] for rule in step["allOf"]] == list(STEP_KEYS)


def test_branch_conditions_match_the_loader() -> None:
    condition = SCHEMA["$defs"]["condition"]
    assert set(condition["properties"]) == {*CONDITIONS, "equals", "next"}
    assert [rule["required"] for rule in condition["oneOf"]] == [[c] for c in CONDITIONS]


def test_voices_match_the_loader() -> None:
    assert SCHEMA["$defs"]["language"]["properties"]["voice"]["enum"] == sorted(VOICES)
    languages = SCHEMA["properties"]["languages"]["properties"]
    assert set(languages) == set(DEFAULT_LOCALES)
    for code, locale in DEFAULT_LOCALES.items():
        rule = languages[code]["allOf"][1]
        assert rule["then"]["properties"]["voice"]["enum"] == voices_for(locale)


def test_every_key_is_explained() -> None:
    """Editors show `title` and `description` when completing a key: every key has both."""
    missing: list[str] = []

    def explained(sub: dict[str, Any], what: str) -> bool:
        ref = sub.get("$ref", "")
        target = SCHEMA["$defs"][ref.removeprefix("#/$defs/")] if ref else {}
        return bool(sub.get(what) or target.get(what))

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                for what in ("title", "description"):
                    if not explained(sub, what):
                        missing.append(f"{path}.{key}: {what}")
            for key, sub in node.items():
                if key != "if":  # a condition on `type`, not a key to explain
                    walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(SCHEMA, "#")
    assert missing == []


def test_the_schema_has_the_loaders_limits_it_can_express() -> None:
    """A prompt over 4,000 characters, a `set` value over 100 and a 501st step are
    underlined in the editor, as `ivr flows check` refuses them."""
    from ivr.limits import MAX_PROMPT_CHARS, MAX_STEPS, MAX_VARIABLE_CHARS

    head = "id: x\nlanguages: {en: {voice: Polly.Joanna}}\nsteps:\n"
    ok = "  a: {type: say, prompt: '" + "w" * MAX_PROMPT_CHARS + "', next: b}\n"
    long = "  a: {type: say, prompt: {en: '" + "w" * (MAX_PROMPT_CHARS + 1) + "'}, next: b}\n"
    var = "  b: {type: set, variables: {v: " + "x" * (MAX_VARIABLE_CHARS + 1) + "}, next: c}\n"
    many = "".join(f"  s{i}: {{type: hangup}}\n" for i in range(MAX_STEPS - 1))
    assert errors(head + ok + many) == []
    assert [e.split(":")[0] for e in errors(head + ok + many + "  z: {type: hangup}\n")
            if "too many properties" in e] == ["$.steps"]
    assert any(e.startswith("$.steps.a.prompt") and "is too long" in e for e in errors(head + long))
    assert any(e.startswith("$.steps.b.variables.v") and "is too long" in e
               for e in errors(head + var))
