"""The flow loader as a flow editor meets it: every mistake named once, at its line and column.

Each file in tests/broken holds one kind of mistake and starts with the exact lines the
loader must print for it, as `# expect: line:col: message` (the file's path is added in
front). A folder in tests/broken is one set of flow files loaded together (for mistakes only
a set shows, such as two files with one id), with its regions.yaml if it has one; a file of
such a set that is fine says `# expect nothing`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from ivr.cli import main
from ivr.flow import (
    Branch,
    Condition,
    Hangup,
    Hours,
    Menu,
    Option,
    Record,
    Say,
    SetLanguage,
    Text,
    Transfer,
)
from ivr.loader import flow_files, load_set, parse_flow
from ivr.routing import load_regions
from tests.conftest import ROOT, TEST_FLOWS

BROKEN = Path("tests/broken")  # relative to ROOT: messages carry the paths as given
EXPECT = "# expect: "
CASES = sorted(p.name for p in (ROOT / BROKEN).iterdir() if p.suffix == ".yaml" or p.is_dir())


@pytest.fixture(autouse=True)
def _in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def expected(files: list[Path]) -> list[str]:
    lines: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        mine = [line[len(EXPECT):] for line in text.splitlines() if line.startswith(EXPECT)]
        assert mine or text.startswith("# expect nothing"), f"{file} says nothing it expects"
        lines += [f"{file}:{line}" for line in mine]
    return lines


def load(target: Path) -> tuple[list[str], set[str], set[str]]:
    """Problems as `ivr flows check` prints them, the files with errors, the flows loaded."""
    regions, printed = None, []
    if target.is_dir() and (target / "regions.yaml").is_file():
        found, problems = load_regions(target / "regions.yaml")
        regions, printed = found.names(), [str(p) for p in problems]
    result = load_set(flow_files([target]), regions=regions)
    return printed + [str(p) for p in result.problems], result.broken, set(result.flows)


def test_there_are_broken_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
def test_a_broken_flow_gives_exactly_the_expected_messages(case: str) -> None:
    target = BROKEN / case
    files = flow_files([target])
    want = expected(files)
    assert want, f"{target} expects no problem at all"
    got, broken, _ = load(target)
    assert sorted(got) == sorted(want)  # not a set: the same message twice is a bug too
    errors = {line.split(":", 1)[0] for line in want
              if ": warning: " not in line and ": note: " not in line}
    assert broken == errors


def test_a_flow_with_only_warnings_still_loads() -> None:
    for case in ("speech_no_words.yaml", "audio_missing.yaml"):
        got, broken, flows = load(BROKEN / case)
        assert got and all(": warning: " in line or ": note: " in line for line in got)
        assert not broken and flows == {case.removesuffix(".yaml")}


def test_a_broken_file_in_a_set_does_not_stop_the_others() -> None:
    _, broken, flows = load(BROKEN / "goto_step")
    assert broken == {"tests/broken/goto_step/main.yaml"}
    assert flows == {"goto_step_legal"}


def test_every_mistake_is_reported_at_once() -> None:
    got, _, _ = load(BROKEN / "three_mistakes.yaml")
    assert len(got) == 3 and len({line.split(": ", 1)[0] for line in got}) == 3
    assert [line.split(": ", 1)[1] for line in sorted(got, key=position)] == [
        "no step named `main_manu` (did you mean `main_menu`?)",
        "`x` is not a phone key (use 0-9, * or #)",
        "unknown step type `recrd` (did you mean `record`?)",
    ]


def position(line: str) -> tuple[int, int]:
    _, row, col, _ = line.split(":", 3)
    return int(row), int(col)


def test_messages_name_the_file_as_given() -> None:
    absolute = ROOT / BROKEN / "unknown_step_type.yaml"
    for given in (absolute, BROKEN / "unknown_step_type.yaml"):
        got, _, _ = load(given)
        assert [line.split(":", 1)[0] for line in got] == [str(given)]


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("id: caf\xe9\n".encode("latin-1"))
    missing = tmp_path / "missing.yaml"
    result = load_set([bad, missing])
    assert [str(p) for p in result.problems] == [
        f"{bad}:1:1: cannot read the file: it is not UTF-8 text",
        f"{missing}:1:1: cannot read the file: No such file or directory",
    ]


# --- the `ivr flows check` command ----------------------------------------------------------

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def check(*paths: str, flows_dir: Path) -> tuple[int, list[str]]:
    env = {"FLOWS_DIR": str(flows_dir), "IVR_DOTENV": str(flows_dir / "no.env")}
    result = CliRunner().invoke(main, ["flows", "check", *paths], env=env)
    return result.exit_code, result.output.splitlines()


def test_check_fails_on_a_broken_file_and_names_each_problem(tmp_path: Path) -> None:
    code, lines = check("tests/broken/three_mistakes.yaml", flows_dir=tmp_path)
    assert code == 1
    *problems, summary = lines
    assert sorted(problems) == sorted(expected([BROKEN / "three_mistakes.yaml"]))
    for line in problems:
        match = LINE.match(line)
        assert match and match["file"] == "tests/broken/three_mistakes.yaml"
    assert summary.startswith("3 problem(s) found")


def test_check_passes_a_good_folder_with_a_one_line_summary(tmp_path: Path) -> None:
    code, lines = check(str(TEST_FLOWS.relative_to(ROOT)), flows_dir=tmp_path)
    assert code == 0
    assert len(lines) == 1 and re.fullmatch(r"1 flow\(s\) OK: hotline@\w{10} \(8 steps\)", lines[0])


def test_check_prints_warnings_and_notes_but_passes(tmp_path: Path) -> None:
    code, lines = check("tests/broken/speech_no_words.yaml", flows_dir=tmp_path)
    assert code == 0
    assert lines[:2] == expected([BROKEN / "speech_no_words.yaml"])
    assert lines[2].startswith("1 flow(s) OK: speech_no_words@")


def test_every_menu_that_listens_for_speech_gets_a_privacy_note(tmp_path: Path) -> None:
    """Speech goes to Twilio's cloud recogniser: allowed, but never without a word about it."""
    flow = (ROOT / "flows" / "hotline.yaml").read_text(encoding="utf-8")
    assert "    speech: true" not in flow  # the shipped hotline is keypad-only
    code, lines = check(str(ROOT / "flows"), flows_dir=tmp_path)
    assert code == 0 and not any(": note: " in line for line in lines), lines
    edited = tmp_path / "speech"
    edited.mkdir()
    (edited / "regions.yaml").write_text((ROOT / "flows" / "regions.yaml").read_text(encoding="utf-8"),
                                         encoding="utf-8")
    (edited / "hotline.yaml").write_text(flow.replace("    speech: false", "    speech: true"),
                                         encoding="utf-8")
    code, lines = check(str(edited), flows_dir=tmp_path)
    notes = [line for line in lines if ": note: " in line]
    assert code == 0 and lines[-1].startswith("1 flow(s) OK: hotline@")
    menus = re.findall(r"menu `(\w+)` listens for speech", "\n".join(notes))
    assert menus == ["choose_language", "main_menu"]
    for note in notes:
        assert re.match(rf"{re.escape(str(edited / 'hotline.yaml'))}:\d+:13: note: privacy: ", note)
        assert "Twilio's cloud speech recogniser" in note


def test_check_uses_the_regions_of_the_folder_it_checks(tmp_path: Path) -> None:
    code, lines = check("tests/broken/region", flows_dir=tmp_path)
    assert code == 1
    assert lines[:-1] == expected([BROKEN / "region" / "flow.yaml"])


# --- a clean flow becomes the model -----------------------------------------------------


def test_the_mini_flow_becomes_the_model() -> None:
    result = load_set(flow_files([TEST_FLOWS]))
    assert result.problems == [] and result.broken == set()
    flow = result.flows["hotline"]
    assert flow.source == str(TEST_FLOWS / "mini.yaml")
    assert (flow.id, flow.start, flow.default_language) == ("hotline", "hello", "ru")
    assert {c: (lang.voice, lang.locale) for c, lang in flow.languages.items()} == {
        "ru": ("Polly.Tatyana", "ru-RU"),
        "uk": ("Google.uk-UA-Standard-A", "uk-UA"),
        "en": ("Polly.Joanna", "en-US"),
    }
    assert list(flow.steps) == [
        "hello", "lang", "set_uk", "set_en", "main", "operator", "voicemail", "bye",
    ]
    assert flow.steps["hello"] == Say(
        "hello", {"ru": Text("Здравствуйте"), "uk": Text("Добрий день"), "en": Text("Hello")},
        "lang",
    )
    menu = flow.steps["lang"]
    assert isinstance(menu, Menu)
    assert menu.options == (
        Option("1", "main"), Option("2", "set_uk"), Option("3", "set_en", {"en": ("english",)}),
    )
    assert (menu.on_failure, menu.repeat_key, menu.timeout, menu.retries, menu.speech) == (
        "main", "*", 5, 2, False,
    )
    assert menu.num_digits == 1
    assert menu.no_input is not None and menu.no_input["uk"] == Text("Не чую")
    assert flow.steps["set_uk"] == SetLanguage("set_uk", "uk", "main")
    assert flow.steps["main"] == Branch(
        "main",
        (Condition("withheld", ("true",), "voicemail"), Condition("open", ("office",), "operator")),
        "voicemail",
    )
    assert flow.steps["operator"] == Transfer(
        "operator", None, "bye", "voicemail", out_of_hours="voicemail", hours="office",
    )
    record = flow.steps["voicemail"]
    assert isinstance(record, Record)
    assert (record.next, record.max_length, record.finish_key, record.on_empty) == (
        "bye", 120, "#", None,
    )
    assert isinstance(flow.steps["bye"], Hangup)
    assert flow.hours == {
        "office": Hours("Europe/Kyiv", {d: ((9 * 60, 18 * 60),) for d in range(5)}),
    }


def test_opening_hours_are_read_as_written() -> None:
    text = """\
id: hours
languages: {en: {voice: Polly.Joanna}}
hours:
  night:
    timezone: Europe/Moscow
    open: {Daily: "22:00-06:00", sat-mon: ["08:00-09:00", "12:00-24:00"]}
    holidays: [2027-01-01, 2027-01-07]
  one: {timezone: UTC, open: {fri: "9:30-10:00"}, holidays: 2027-05-09}
steps:
  vm: {type: record, prompt: Speak, next: bye}
  bye: {type: hangup}
"""
    parsed = parse_flow(text, "hours.yaml")
    assert parsed.problems == [] and parsed.flow is not None
    night, one = parsed.flow.hours["night"], parsed.flow.hours["one"]
    overnight, extra = (22 * 60, 6 * 60), ((8 * 60, 9 * 60), (12 * 60, 24 * 60))
    assert night.weekly == {d: (overnight, *(extra if d in (5, 6, 0) else ())) for d in range(7)}
    assert night.holidays == {date(2027, 1, 1), date(2027, 1, 7)}
    assert one == Hours("UTC", {4: ((570, 600),)}, frozenset({date(2027, 5, 9)}))


KYIV = ZoneInfo("Europe/Kyiv")
OFFICE = Hours("Europe/Kyiv", {d: ((9 * 60, 18 * 60),) for d in range(5)},
               frozenset({date(2027, 1, 1)}))
MOSCOW_OFFICE = Hours("Europe/Moscow", OFFICE.weekly)
NIGHT = Hours("Europe/Kyiv", {d: ((22 * 60, 6 * 60),) for d in range(7)},
              frozenset({date(2027, 1, 1)}))
FRIDAY_NIGHT = Hours("Europe/Kyiv", {4: ((22 * 60, 6 * 60),)})
TO_MIDNIGHT = Hours("Europe/Kyiv", {0: ((18 * 60, 24 * 60),)})


def kyiv(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=KYIV)


@pytest.mark.parametrize(("hours", "now", "is_open", "why"), [
    (OFFICE, kyiv(2026, 11, 23, 9, 0), True, "Monday, opening minute"),
    (OFFICE, kyiv(2026, 11, 23, 8, 59), False, "Monday, a minute before opening"),
    (OFFICE, kyiv(2026, 11, 23, 17, 59), True, "Monday, last minute"),
    (OFFICE, kyiv(2026, 11, 23, 18, 0), False, "Monday, closing minute"),
    (OFFICE, kyiv(2026, 11, 22, 12, 0), False, "Sunday"),
    (OFFICE, datetime(2026, 11, 23, 7, 30, tzinfo=UTC), True, "07:30 UTC is 09:30 in Kyiv (winter)"),
    (OFFICE, datetime(2026, 11, 23, 6, 30, tzinfo=UTC), False, "06:30 UTC is 08:30 in Kyiv"),
    (MOSCOW_OFFICE, datetime(2026, 11, 23, 6, 30, tzinfo=UTC), True, "…but 09:30 in Moscow"),
    (OFFICE, datetime(2027, 7, 5, 6, 30, tzinfo=UTC), True, "06:30 UTC is 09:30 in Kyiv (summer)"),
    (OFFICE, datetime(2027, 7, 5, 15, 30, tzinfo=UTC), False, "15:30 UTC is 18:30 in Kyiv (summer)"),
    (OFFICE, datetime(2026, 11, 23, 2, 0, tzinfo=ZoneInfo("America/New_York")), True,
     "02:00 in New York is 09:00 in Kyiv"),
    (OFFICE, kyiv(2027, 1, 1, 12, 0), False, "a Friday that is a holiday"),
    (OFFICE, kyiv(2026, 12, 31, 12, 0), True, "the Thursday before it"),
    (NIGHT, kyiv(2026, 11, 27, 23, 0), True, "overnight, before midnight"),
    (NIGHT, kyiv(2026, 11, 28, 3, 0), True, "overnight, after midnight"),
    (NIGHT, kyiv(2026, 11, 28, 6, 0), False, "overnight, closing minute"),
    (NIGHT, kyiv(2026, 11, 28, 21, 59), False, "overnight, before opening"),
    (NIGHT, kyiv(2027, 1, 1, 3, 0), True, "holiday morning: the night began the day before"),
    (NIGHT, kyiv(2027, 1, 1, 23, 0), False, "holiday evening: no night begins"),
    (NIGHT, kyiv(2027, 1, 2, 3, 0), False, "the morning after: the night never began"),
    (FRIDAY_NIGHT, kyiv(2026, 11, 28, 3, 0), True, "Saturday morning, Friday's night"),
    (FRIDAY_NIGHT, kyiv(2026, 11, 29, 3, 0), False, "Sunday morning: no Saturday night"),
    (FRIDAY_NIGHT, kyiv(2026, 11, 27, 3, 0), False, "Friday morning: no Thursday night"),
    (TO_MIDNIGHT, kyiv(2026, 11, 23, 23, 59), True, "until 24:00, last minute"),
    (TO_MIDNIGHT, kyiv(2026, 11, 24, 0, 0), False, "until 24:00 does not run past midnight"),
])
def test_hours_is_open(hours: Hours, now: datetime, is_open: bool, why: str) -> None:
    assert hours.is_open(now) is is_open, why
