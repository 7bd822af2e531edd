"""The shipped hotline: its flows check clean, every scenario passes, regions are right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli import main
from ivr.config import Settings
from ivr.loader import flow_files, load_set
from ivr.routing import load_regions
from ivr.scenarios import run_files, scenario_files
from tests.conftest import ROOT, TEST_KEYS

FLOWS = ROOT / "flows"


def real_settings(tmp_path: Path) -> Settings:
    return Settings(flows_dir=FLOWS, instance_dir=tmp_path / "instance",
                    database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_the_shipped_flows_check_clean(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["flows", "check", str(FLOWS)],
                                env={"IVR_DOTENV": str(tmp_path / "none")})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1 flow(s) OK: hotline@")


def test_every_hotline_scenario_passes(tmp_path: Path) -> None:
    files = scenario_files([FLOWS / "tests"])
    results = run_files(real_settings(tmp_path), files)
    assert len(results) >= 60
    failed = [f"{r.where} {r.name}: {r.problems}" for r in results if not r.ok]
    assert failed == []


def test_every_step_of_the_hotline_is_walked_in_every_language(tmp_path: Path) -> None:
    """Scenarios cover every branch: each step is walked, the main ones in ru, uk and en."""
    flow = load_set(flow_files([FLOWS])).flows["hotline"]
    walked: dict[str, set[str]] = {}
    for r in run_files(real_settings(tmp_path), scenario_files([FLOWS / "tests"])):
        for steps, locales in r.turns:
            for step in steps:
                walked.setdefault(step, set()).update(locales)
    assert set(flow.steps) - set(walked) == set()
    for step in ("main_menu", "after_info", "voicemail", "operator", "surrender_info",
                 "mobilised_info", "closed_note", "busy_note", "thanks", "after_call"):
        assert {"ru-RU", "uk-UA", "en-US"} <= walked[step], step


def test_a_scenario_that_expects_the_wrong_thing_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow: hotline\nscenarios:\n"
        "  - name: expects the impossible\n    press: [1, 2]\n"
        "    hears: [Bonjour]\n    ends_at: nowhere\n    ended: hangup\n"
        "  - name: typo in a key\n    press: [1]\n    heers: [x]\n",
        encoding="utf-8",
    )
    results = run_files(real_settings(tmp_path), [bad])
    assert len(results) == 1 and not results[0].ok  # the file itself is wrong: no calls made
    assert any("unknown key `heers`" in p and "did you mean `hears`?" in p
               for p in results[0].problems)
    bad.write_text(bad.read_text().replace("heers", "hears"), encoding="utf-8")
    results = run_files(real_settings(tmp_path), [bad])
    problems = results[0].problems
    assert "did not hear 'Bonjour' at all" in problems
    assert any(p.startswith("ended at step `") and "not `nowhere`" in p for p in problems)
    assert any(p == "the call ended by caller-hangup, not hangup" for p in problems)


@pytest.mark.parametrize(
    ("number", "region", "withheld"),
    [
        ("+79781234567", "crimea", False),
        ("+73652123456", "crimea", False),
        ("+380652123456", "crimea", False),
        ("+380692123456", "crimea", False),
        ("+78692123456", "crimea", False),  # Sevastopol, Russian landline
        ("+78562123456", "occupied", False),  # Donetsk, Russian landline
        ("+78572123456", "occupied", False),  # Luhansk, Russian landline
        ("+78602123456", "occupied", False),  # Kherson region, Russian landline
        ("+79491234567", "occupied", False),
        ("+79591234567", "occupied", False),
        ("+79901234567", "occupied", False),
        ("+380621234567", "occupied", False),
        ("+380641234567", "occupied", False),
        ("+79161234567", "russia", False),
        ("+74951234567", "russia", False),
        ("+380441234567", "ukraine", False),
        ("+380612123456", "ukraine", False),  # Zaporizhzhia city: free territory
        ("+380501234567", "ukraine", False),
        ("+14155550100", "elsewhere", False),
        ("+4915123456789", "elsewhere", False),
        ("anonymous", "elsewhere", True),
        ("", "elsewhere", True),
        ("+266696687", "elsewhere", True),
        ("client:alice", "elsewhere", True),
        ("12", "elsewhere", True),
    ],
)
def test_region_of_a_number(number: str, region: str, withheld: bool) -> None:
    regions, problems = load_regions(FLOWS / "regions.yaml")
    assert problems == []
    caller, rule = regions.which(number)
    assert (caller.region, caller.withheld) == (region, withheld), rule
    assert number[1:] not in rule or not number  # the reason never repeats the number


def test_every_region_has_a_default_language() -> None:
    regions, _ = load_regions(FLOWS / "regions.yaml")
    assert {r.name: r.language for r in regions.regions} == {
        "crimea": "ru", "occupied": "ru", "russia": "ru", "ukraine": "uk", "elsewhere": "ru"}


def test_regions_yaml_problems_are_named_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(
        "regions:\n"
        "  crimea:\n"
        "    prefixes: [\"+7978\", \"+999\", \"7949\"]\n"
        "    language: russian\n"
        "  occupied:\n"
        "    prefixes:\n"
        "      - \"+7978\"\n"
        "    countries: [RU, XX]\n"
        "  russia: {countries: [RU]}\n"
        "fallback: elsewhere\n", encoding="utf-8")
    regions, problems = load_regions(path)
    f = str(path)
    assert [str(p) for p in problems] == [
        f"{f}:3:25: `+999` starts with no country calling code (like +7 (Russia) or +380 (Ukraine))",
        f"{f}:3:33: `7949` is not an E.164 prefix (write it like +7978)",
        f"{f}:4:15: `russian` is not a language code (like ru, uk or en)",
        f"{f}:7:9: `+7978` is in two regions: `crimea` and `occupied` (a number must belong to one region)",
        f"{f}:8:21: `XX` is not a country code phonenumbers knows (like RU or UA)",
        f"{f}:9:24: `RU` is in two regions: `occupied` and `russia` (a number must belong to one region)",
        f"{f}:10:11: the fallback region `elsewhere` is not declared under `regions` "
        "(add `elsewhere: {language: ru}` there: a region with no prefixes)",
    ]
    assert regions.fallback == "elsewhere" and regions.regions == ()  # nothing half-read is used


def test_regions_have_names_for_operators_checked_at_their_line(tmp_path: Path) -> None:
    regions, _ = load_regions(FLOWS / "regions.yaml")
    assert {r.name: (r.title("uk"), r.title("en")) for r in regions.regions}["crimea"] == ("Крим", "Crimea")
    path = tmp_path / "regions.yaml"
    path.write_text(
        "regions:\n"
        "  crimea:\n"
        "    names: {uk: Крим, english: Crimea, en: \"\"}\n"
        "  elsewhere:\n"
        "    names: [Elsewhere]\n"
        "fallback: elsewhere\n", encoding="utf-8")
    _, problems = load_regions(path)
    f = str(path)
    assert [str(p) for p in problems] == [
        f"{f}:3:23: `english` is not a language code (like uk or en)",
        f"{f}:3:44: the en name of region `crimea` must be a non-empty text",
        f"{f}:5:12: `names` of region `elsewhere` must be a mapping of `key: value` lines",
    ]
    path.write_text("regions:\n  crimea: {names: {en: Crimea}}\n  elsewhere: {}\nfallback: elsewhere\n",
                    encoding="utf-8")
    found, problems = load_regions(path)
    assert problems == []
    # Without a name in the reader's language: the English one, else the name in the files.
    assert [(r.title("uk"), r.title("en")) for r in found.regions] == [("Crimea", "Crimea"),
                                                                      ("elsewhere", "elsewhere")]


@pytest.mark.parametrize(("number", "answer"), [
    ("+79781234567", {"region": "crimea", "rule": "prefix +7978", "language": "ru", "country": "RU",
                      "withheld": False}),
    ("+380441234567", {"region": "ukraine", "rule": "country UA", "language": "uk", "country": "UA",
                       "withheld": False}),
    ("anonymous", {"region": "elsewhere", "rule": "withheld number", "language": "ru", "country": None,
                   "withheld": True}),
    ("+7 (junk)", {"region": "elsewhere", "rule": "not a phone number", "language": "ru",
                   "country": None, "withheld": True}),
])
def test_ivr_regions_which(number: str, answer: dict[str, object]) -> None:
    env = {"FLOWS_DIR": str(FLOWS), "IVR_DOTENV": "/nonexistent"}
    result = CliRunner().invoke(main, ["regions", "which", number, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == answer
    plain = CliRunner().invoke(main, ["regions", "which", number], env=env)
    assert plain.output == f"{answer['region']}: {answer['rule']} (language {answer['language']})\n"


def test_flows_check_names_the_problems_of_regions_yaml(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "flows"
    shutil.copytree(FLOWS, folder)
    regions = folder / "regions.yaml"
    regions.write_text(regions.read_text(encoding="utf-8").replace('- "+7990"', '- "+7978"'),
                       encoding="utf-8")
    result = CliRunner().invoke(main, ["flows", "check", str(folder)], env={"IVR_DOTENV": "/nonexistent"})
    assert result.exit_code == 1
    assert "`+7978` is in two regions: `crimea` and `occupied`" in result.output
    assert f"{regions}:" in result.output


def test_a_regions_time_zone_and_caller_id_are_checked_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(
        "regions:\n"
        "  crimea:\n"
        "    prefixes: [\"+7978\"]\n"
        "    timezone: Europe/Simferopl\n"
        "    caller_id: \"0501234567\"\n"
        "  elsewhere: {timezone: Europe/Moscow, caller_id: \"+15005550007\"}\n"
        "fallback: elsewhere\n", encoding="utf-8")
    _regions, problems = load_regions(path)
    f = str(path)
    assert [str(p) for p in problems] == [
        f"{f}:4:15: `Europe/Simferopl` is not a time zone (write it like Europe/Moscow or Europe/Kyiv)",
        f"{f}:5:16: `0501234567` is not a phone number in E.164 form (write it like +380441234567)",
    ]
    shipped, _ = load_regions(FLOWS / "regions.yaml")
    assert shipped.region("crimea").timezone == "Europe/Simferopol"
    assert shipped.region("ukraine").timezone == "Europe/Kyiv"
    assert shipped.region("russia").caller_id is None  # HOTLINE_NUMBER


def test_the_consent_variable_takes_only_its_values(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "flows"
    shutil.copytree(FLOWS, folder, ignore=shutil.ignore_patterns("tests"))
    flow = folder / "hotline.yaml"
    flow.write_text(flow.read_text(encoding="utf-8").replace(
        "variables: {callback: day}", "variables: {callback: daytime}"), encoding="utf-8")
    result = CliRunner().invoke(main, ["flows", "check", str(folder)], env={"IVR_DOTENV": "/nonexistent"})
    assert result.exit_code == 1
    assert ("`callback` is the caller's callback consent: `daytime` is not one of any, day, none"
            in result.output)


def test_flows_check_warns_of_regions_no_operator_covers(tmp_path: Path) -> None:
    from ivr.keys import Keyring, parse_master_keys
    from ivr.operators import add_operator
    from ivr.storage import Database, Vault, upgrade

    db_url, keys_url = f"sqlite:///{tmp_path / 'ivr.db'}", f"sqlite:///{tmp_path / 'keys.db'}"
    env = {"IVR_DOTENV": "/nonexistent", "DATABASE_URL": db_url, "KEYSTORE_URL": keys_url,
           "INSTANCE_DIR": str(tmp_path / "instance")}
    quiet = CliRunner().invoke(main, ["flows", "check", str(FLOWS)], env=env)
    assert quiet.exit_code == 0 and "warning" not in quiet.output  # no database yet: nothing said
    assert not (tmp_path / "ivr.db").exists()  # and none made
    upgrade(db_url, keys_url)
    vault = Vault(Keyring(parse_master_keys(TEST_KEYS)), Database(keys_url),
                  tmp_path / "instance" / "key-epochs")
    add_operator(Database(db_url), vault, name="Olena", number="+380501110001", languages="ru",
                 regions="crimea,occupied,russia,elsewhere", timezone="Europe/Kyiv", hours="always")
    result = CliRunner().invoke(main, ["flows", "check", str(FLOWS)], env=env)
    assert result.exit_code == 0, result.output
    assert ("regions.yaml: warning: no active operator covers region ukraine in its language uk: "
            "its cases go unassigned and are escalated") in result.output
    assert "region crimea" not in result.output


SPOKEN = """flow: hotline
scenarios:
  - name: "spoken: 'инглиш' at the language menu"
    from: "+380501234567"
    press: ["say:инглиш"]
    hears: ["confidential", "Main menu"]
    visits: [set_en]
    ends_at: main_menu
  - name: "spoken: 'я хочу сдаться' at the main menu"
    from: "+380501234567"
    press: [1, "say:я хочу сдаться"]
    hears: ["Главное меню", "Женевским конвенциям"]
    visits: [surrender]
  - name: "spoken: 'з'єднайте з оператором' out of hours"
    from: "+380501234567"
    at: "2026-11-25T23:30:00+02:00"
    press: [2, "say:з'єднайте з оператором", "#", "#", "#", 3]
    hears: ["оператори не на зв'язку", "Після сигналу"]
    visits: [operator, closed_note]
"""


@pytest.mark.parametrize("speech", [False, True])
def test_spoken_answers_are_heard_only_where_the_flow_says_speech(tmp_path: Path, speech: bool) -> None:
    """The shipped hotline is keypad only: spoken words go nowhere (Twilio's recogniser is not
    asked). A hotline that turns `speech: true` back on gets its kept `words` working again."""
    import shutil

    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows, ignore=shutil.ignore_patterns("tests"))
    if speech:
        hotline = flows / "hotline.yaml"
        hotline.write_text(hotline.read_text(encoding="utf-8").replace(
            "    speech: false", "    speech: true"), encoding="utf-8")
    (flows / "tests").mkdir()
    (flows / "tests" / "spoken.yaml").write_text(SPOKEN, encoding="utf-8")
    settings = Settings(flows_dir=flows, instance_dir=tmp_path / "instance",
                        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    results = run_files(settings, scenario_files([flows / "tests"]))
    assert len(results) == 3
    assert [r.ok for r in results] == [speech] * 3, [r.problems for r in results]
