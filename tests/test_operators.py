"""Operators and the assignment rule: who gets a case, and why, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import pwd
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from ivr.cli import main as cli
from ivr.engine import Caller
from ivr.keys import Keyring, parse_master_keys
from ivr.operators import Candidate, OperatorError, assign_case, choose, parse_hours
from ivr.storage import AuditEntry, Case, Database, Vault, upgrade
from ivr.voicemail import Reported, note_recording
from tests.conftest import ROOT, TEST_KEYS

# Wednesday 2026-11-25, 10:00 in Kyiv (08:00 UTC), 11:00 in Moscow.
WEDNESDAY_MORNING = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
KYIV_OFFICE = parse_hours("mon-fri 09:00-18:00", "Europe/Kyiv")


def op(id_: int, name: str, *, regions: str = "crimea", languages: str = "ru", open_cases: int = 0,
       capacity: int = 3, on_duty: bool = True, hours: str = "mon-fri 09:00-18:00",
       timezone: str = "Europe/Kyiv", last: datetime | None = None) -> Candidate:
    return Candidate(id_, name, frozenset(languages.split(",")), frozenset(regions.split(",")),
                     parse_hours(hours, timezone), capacity, on_duty, open_cases, last)


def test_the_least_loaded_matching_operator_on_duty_gets_the_case() -> None:
    team = [op(1, "Olena", open_cases=2), op(2, "Taras", open_cases=1),
            op(3, "Iryna", languages="uk"), op(4, "Petro", regions="occupied"),
            op(5, "Oksana", on_duty=False)]
    choice = choose(team, "crimea", "ru", WEDNESDAY_MORNING)
    assert choice.operator_id == 2
    assert choice.reason == ("region crimea, language ru → 3 candidate(s), 2 on duty, 2 with room; "
                             "chose Taras (1 open case(s), least loaded)")


def test_capacity_is_respected_and_no_room_is_escalated_not_dropped() -> None:
    team = [op(1, "Olena", open_cases=3, capacity=3)]
    choice = choose(team, "crimea", "ru", WEDNESDAY_MORNING)
    assert choice.operator_id is None
    assert choice.reason == ("region crimea, language ru → 1 candidate(s), 1 on duty, 0 with room: "
                             "unassigned, escalated to supervisors")
    nobody = choose([], "elsewhere", "en", WEDNESDAY_MORNING)
    assert nobody.operator_id is None and nobody.reason.endswith("unassigned, escalated to supervisors")


@pytest.mark.parametrize(("hours", "timezone", "at", "on"), [
    ("mon-fri 09:00-18:00", "Europe/Kyiv", WEDNESDAY_MORNING, True),  # 10:00 in Kyiv
    ("mon-fri 09:00-18:00", "America/New_York", WEDNESDAY_MORNING, False),  # 03:00 in New York
    ("mon-fri 09:00-18:00", "Europe/Kyiv", WEDNESDAY_MORNING - timedelta(hours=2), False),  # 08:00
    ("daily 20:00-08:00", "Europe/Moscow", WEDNESDAY_MORNING - timedelta(hours=6), True),  # 05:00 night
    ("sat 10:00-14:00", "Europe/Kyiv", WEDNESDAY_MORNING, False),
    ("always", "Asia/Tokyo", WEDNESDAY_MORNING, True),
])
def test_working_hours_are_read_in_the_operators_time_zone(
    hours: str, timezone: str, at: datetime, on: bool
) -> None:
    choice = choose([op(1, "Olena", hours=hours, timezone=timezone)], "crimea", "ru", at)
    assert (choice.operator_id == 1) is on, choice.reason


def test_ties_rotate_fairly_to_who_waited_longest() -> None:
    earlier, later = WEDNESDAY_MORNING - timedelta(hours=3), WEDNESDAY_MORNING - timedelta(hours=1)
    team = [op(1, "Olena", last=later), op(2, "Taras", last=earlier), op(3, "Iryna", open_cases=1)]
    choice = choose(team, "crimea", "ru", WEDNESDAY_MORNING)
    assert choice.operator_id == 2 and choice.reason.endswith("least loaded, longest since a case)")
    never = op(4, "Petro")
    assert choose([*team, never], "crimea", "ru", WEDNESDAY_MORNING).operator_id == 4


@pytest.mark.parametrize(("hours", "timezone", "message"), [
    ("mon-fri 9-18", "Europe/Kyiv", "write them like `mon-fri 09:00-18:00; sat 10:00-14:00`"),
    ("funday 09:00-18:00", "Europe/Kyiv", "write them like"),
    ("mon 25:00-26:00", "Europe/Kyiv", "not a time of day"),
    ("mon 09:00-18:00", "Europe/Kiev-ish", "unknown time zone 'Europe/Kiev-ish'"),
    ("", "Europe/Kyiv", "hours are empty"),
])
def test_bad_working_hours_are_named(hours: str, timezone: str, message: str) -> None:
    with pytest.raises(OperatorError, match=message.replace("(", r"\(")):
        parse_hours(hours, timezone)


# --- in the database, through the `ivr` command --------------------------------------------


def env_for(database_url: str, keystore_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "KEYSTORE_URL": keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
            "IVR_DOTENV": "/nonexistent", "USER": "supervisor", "INSTANCE_DIR": tempfile.mkdtemp()}


def new_case(db: Database, vault: Vault, n: int, number: str = "+79781234567", language: str = "ru") -> int:
    sid = f"{n:032x}"
    note_recording(db, vault, Reported(call_sid="CA" + sid, recording_sid="RE" + sid, status="completed",
                                       duration=5, number=number, caller=Caller(False, "RU", "crimea"),
                                       language=language))
    with db.session() as s:
        return max(s.scalars(select(Case.id)))


def test_operators_are_managed_from_the_terminal_and_their_numbers_sealed(
    database_url: str, keystore_url: str
) -> None:
    runner, env = CliRunner(), env_for(database_url, keystore_url)
    added = runner.invoke(cli, ["operators", "add", "--name", "Olena", "--number", "+380501112233",
                                "--languages", "ru,uk", "--regions", "crimea,occupied",
                                "--hours", "mon-fri 09:00-18:00", "--capacity", "2"], env=env)
    assert added.exit_code == 0 and "operator #1 Olena added" in added.output
    bad = runner.invoke(cli, ["operators", "add", "--name", "X", "--number", "0501112233",
                              "--languages", "ru", "--regions", "crimea"], env=env)
    assert bad.exit_code == 1 and "E.164" in bad.output
    dup = runner.invoke(cli, ["operators", "add", "--name", "Olena", "--number", "+380501112234",
                              "--languages", "ru", "--regions", "crimea"], env=env)
    assert dup.exit_code == 1 and "already an operator named 'Olena'" in dup.output

    listed = json.loads(runner.invoke(cli, ["operators", "list", "--json"], env=env).output)
    assert listed == [{"id": 1, "name": "Olena", "languages": ["ru", "uk"], "regions": ["crimea", "occupied"],
                       "timezone": "Europe/Kyiv", "hours": "mon-fri 09:00-18:00", "capacity": 2,
                       "open_cases": 0, "on_duty": True, "active": True, "role": "operator"}]
    plain = runner.invoke(cli, ["operators", "list"], env={**env, "FLOWS_DIR": str(ROOT / "flows")})
    assert "+380501112233" not in plain.output
    assert "warning: no active operator covers region russia in its language ru" in plain.output
    assert "region crimea" not in plain.output and "region ukraine in its language uk" in plain.output
    assert "+380501112233" in runner.invoke(cli, ["operators", "list", "--numbers"], env=env).output
    db = Database(database_url)
    with db.engine.connect() as c:
        assert b"380501112233" not in repr(c.execute(text("SELECT * FROM operators")).all()).encode()

    edited = runner.invoke(cli, ["operators", "edit", "1", "--off-duty", "--capacity", "4"], env=env)
    assert edited.exit_code == 0
    row = json.loads(runner.invoke(cli, ["operators", "list", "--json"], env=env).output)[0]
    assert (row["on_duty"], row["capacity"]) == (False, 4)
    assert runner.invoke(cli, ["operators", "edit", "9", "--on-duty"], env=env).exit_code == 1
    assert runner.invoke(cli, ["operators", "disable", "1"], env=env).exit_code == 0
    after = json.loads(runner.invoke(cli, ["operators", "list", "--json"], env=env).output)
    assert after[0]["active"] is False
    with db.session() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    # Decrypting the numbers is audited; listing without them is not. The actor is the
    # operating-system account, whatever $USER says ("supervisor" here).
    assert [e.action for e in entries] == ["operator-added", "operator-numbers-read",
                                           "operator-edited", "operator-edited"]
    assert entries[1].detail == "operators 1"
    me = f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"
    assert {e.actor for e in entries} == {me} and me != "cli:supervisor"
    db.engine.dispose()


def test_cases_are_assigned_fairly_within_capacity_and_say_why(database_url: str, keystore_url: str) -> None:
    upgrade(database_url, keystore_url)
    runner, env = CliRunner(), env_for(database_url, keystore_url)
    for name in ("Olena", "Taras"):
        assert runner.invoke(cli, ["operators", "add", "--name", name, "--number", "+380501112233",
                                   "--languages", "ru", "--regions", "crimea", "--capacity", "1"],
                             env=env).exit_code == 0
    db = Database(database_url)
    vault = Vault(Keyring(parse_master_keys(TEST_KEYS)), Database(keystore_url),
                  Path(env["INSTANCE_DIR"]) / "key-epochs")
    cases = [new_case(db, vault, n) for n in range(1, 4)]
    now = WEDNESDAY_MORNING
    first = assign_case(db, cases[0], now)
    second = assign_case(db, cases[1], now + timedelta(minutes=1))
    third = assign_case(db, cases[2], now + timedelta(minutes=2))
    assert {first.operator_id, second.operator_id} == {1, 2}  # one each, not both to the first
    assert third.operator_id is None and "0 with room: unassigned, escalated" in third.reason
    shown = runner.invoke(cli, ["cases", "show", str(cases[2]), "--json"], env=env)
    case = json.loads(shown.output)
    assert case["status"] == "routed" and case["operator_id"] is None
    assert case["route_reason"] == third.reason
    assert [e["action"] for e in case["timeline"]] == ["case-created", "unassigned"]
    out = runner.invoke(cli, ["cases", "assign", str(cases[0])], env=env)  # re-offered by hand
    assert out.exit_code == 0 and out.output.startswith(f"case #{cases[0]}: region crimea, language ru")
    assert runner.invoke(cli, ["cases", "assign", "999"], env=env).output.strip() == "Error: no case #999"
    db.engine.dispose()
