"""Keypad intake, end to end with real parts: a caller answers the shipped hotline's questions
before the message (the stand-in phone, the real app), the answers are kept on the case sealed
under its key, `ivr cases list/show --json` carry them, and an urgent answer ("at the front")
puts the case first in the queue and re-offers it sooner. SQLite and PostgreSQL.

The branches of the questions themselves (answered, skipped with # or silence, wrong keys, a
number out of range) are flow scenarios in flows/tests/hotline.yaml; the loader's messages for
broken declarations are files in tests/broken.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, text, update

from ivr import create_app
from ivr.callbacks import Policy, reoffer_due
from ivr.casebook import list_cases, show_case
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.console import queries
from ivr.console.auth import User
from ivr.operators import URGENT_REASON, add_operator, assign_case
from ivr.standin import FlaskTransport, Phone, ScriptedCaller
from ivr.storage import Case, Database, Vault, upgrade
from tests.conftest import ROOT, SUNDAY, TEST_KEYS, TOKEN

CRIMEA = "+79781234567"
# flows/hotline.yaml in Russian: main menu 3 (a message); then who is calling, alone or with
# others, how many; the message ended with #; # at the PIN prompt (no PIN); 3: do not call back.
AT_THE_FRONT = ["1", "3", "3", "2", "4#", "#", "#", "3"]
SKIPPED = ["1", "3", "#", "#", "#", "#", "3"]
SUPERVISOR = User(id=0, name="sofia", role="supervisor", regions=frozenset(), locale="uk")


@dataclass
class Desk:
    settings: Settings
    app: Flask
    db: Database
    vault: Vault

    def voicemail(self, presses: list[str]) -> int:
        phone = Phone(FlaskTransport(self.app), self.settings.public_base_url, TOKEN,
                      self.settings.twilio_account_sid, self.settings.hotline_number)
        log = phone.call(CRIMEA, ScriptedCaller(presses))
        assert not log.errors, log.errors
        assert "До свидания" in log.text()
        with self.db.session() as s:
            return max(s.scalars(select(Case.id)))

    def case(self, case_id: int) -> Case:
        with self.db.session() as s:
            found = s.get(Case, case_id)
            assert found is not None
            return found

    def cli(self, *args: str) -> object:
        s = self.settings
        env = {"DATABASE_URL": s.database_url, "KEYSTORE_URL": s.keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
               "FLOWS_DIR": str(s.flows_dir), "INSTANCE_DIR": str(s.instance_dir),
               "IVR_DOTENV": "/nonexistent", "USER": "olena"}
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)


@pytest.fixture
def desk(settings: Settings, database_url: str, keystore_url: str) -> Iterator[Desk]:
    """The shipped flows and regions; no worker: a case is made when the message is reported."""
    shutil.rmtree(settings.flows_dir)
    shutil.copytree(ROOT / "flows", settings.flows_dir, ignore=shutil.ignore_patterns("tests"))
    s = settings.replace(database_url=database_url, keystore_url=keystore_url)
    upgrade(database_url, keystore_url)
    app = create_app(s, clock=lambda: SUNDAY)
    yield Desk(s, app, app.extensions["ivr.db"], app.extensions["ivr.vault"])
    app.extensions["ivr.db"].engine.dispose()


def test_the_callers_answers_are_kept_on_the_case_sealed(desk: Desk) -> None:
    case_id = desk.voicemail(AT_THE_FRONT)
    answers = {"who": "front", "company": "with_others", "people": "4"}
    case = desk.case(case_id)
    assert case.urgent is True and case.intake is not None
    found = show_case(desk.db, desk.vault, case_id, actor="test:admin")
    assert found is not None and found["intake"] == answers and found["urgent"] is True
    assert [row["intake"] for row in list_cases(desk.db, vault=desk.vault)] == [answers]
    # What tools read: `ivr cases list --json` and `ivr cases show ID --json`.
    listed = desk.cli("cases", "list", "--json")
    assert isinstance(listed, list) and listed[0]["intake"] == answers
    shown = desk.cli("cases", "show", str(case_id), "--json")
    assert isinstance(shown, dict) and shown["intake"] == answers
    # A seized database holds no answer in clear: only the `urgent` flag says anything.
    with desk.db.engine.connect() as c:
        for table in ("calls", "recordings", "cases", "audit", "outbox"):
            for row in c.execute(text(f"SELECT * FROM {table}")):
                raw = repr(tuple(row)).encode()
                assert b"front" not in raw and b"with_others" not in raw, table
                assert b"At the front" not in raw and "На фронті".encode() not in raw, table


def test_questions_skipped_keep_nothing_and_the_message_is_a_case(desk: Desk) -> None:
    case_id = desk.voicemail(SKIPPED)
    case = desk.case(case_id)
    assert (case.intake, case.urgent, case.step) == (None, False, "voicemail")
    shown = desk.cli("cases", "show", str(case_id), "--json")
    assert isinstance(shown, dict) and (shown["intake"], shown["urgent"]) == ({}, False)


def test_an_answer_no_longer_allowed_is_not_kept(desk: Desk) -> None:
    """Only values the call's flow declares are kept (a call state is data from a URL)."""
    from ivr.engine import CallState

    handler = desk.app.extensions["ivr"]
    state = CallState("hotline", handler.registry.current("hotline").version, "voicemail", "ru", 0,
                      (("people", "500"), ("topic", "surrender"), ("who", "front")))
    assert handler._intake(state) == {"intake": {"who": "front"}, "urgent": True}


def test_an_urgent_case_is_first_in_the_queue_and_offered_on_sooner(desk: Desk) -> None:
    olena = add_operator(desk.db, desk.vault, name="Olena", number="+380501110001", languages="ru",
                         regions="crimea", timezone="Europe/Kyiv", hours="always")
    taras = add_operator(desk.db, desk.vault, name="Taras", number="+380501110002", languages="ru",
                         regions="crimea", timezone="Europe/Kyiv", hours="always")
    front = desk.voicemail(AT_THE_FRONT)  # the older one
    plain = desk.voicemail(SKIPPED)
    t0 = SUNDAY + timedelta(minutes=5)
    urgent_choice, plain_choice = assign_case(desk.db, front, t0), assign_case(desk.db, plain, t0)
    assert {urgent_choice.operator_id, plain_choice.operator_id} == {olena, taras}
    # The route reason says why it is urgent; the audit entry keeps the rule's words only.
    assert (desk.case(front).route_reason or "").endswith(f"; {URGENT_REASON}")
    assert "urgent" not in (desk.case(plain).route_reason or "")

    # First in the queue although older, and its answers opened for the page.
    rows = queries.queue(desk.db, SUPERVISOR, t0, timedelta(minutes=30), vault=desk.vault,
                         urgent_after=timedelta(minutes=10))
    assert [(r.id, r.urgent) for r in rows] == [(front, True), (plain, False)]
    assert rows[0].intake == {"who": "front", "company": "with_others", "people": "4"}
    assert rows[1].intake == {}
    later = queries.queue(desk.db, SUPERVISOR, t0 + timedelta(minutes=11), timedelta(minutes=30),
                          vault=desk.vault, urgent_after=timedelta(minutes=10))
    assert [(r.id, r.overdue) for r in later] == [(front, True), (plain, False)]
    figures = queries.counts(desk.db, SUPERVISOR, t0 + timedelta(minutes=11), timedelta(minutes=30),
                             timedelta(minutes=10))
    assert figures["overdue"] == 1
    figures = queries.counts(desk.db, SUPERVISOR, t0 + timedelta(minutes=31), timedelta(minutes=30),
                             timedelta(minutes=10))
    assert figures["overdue"] == 2  # each counted once
    # The filter by an answer finds the case, and only it.
    relatives = queries.queue(desk.db, SUPERVISOR, t0, timedelta(minutes=30), vault=desk.vault,
                              intake=("who", "relative"))
    fronts = queries.queue(desk.db, SUPERVISOR, t0, timedelta(minutes=30), vault=desk.vault,
                           intake=("who", "front"))
    assert relatives == [] and [r.id for r in fronts] == [front]

    # Re-offered after URGENT_REOFFER_MINUTES, the other after REOFFER_MINUTES.
    policy = Policy(reoffer_after=timedelta(minutes=30), urgent_reoffer_after=timedelta(minutes=10))
    assert reoffer_due(desk.db, policy, t0 + timedelta(minutes=9)) == []
    assert reoffer_due(desk.db, policy, t0 + timedelta(minutes=11)) == [front]
    assert (desk.case(front).reoffers, desk.case(plain).reoffers) == (1, 0)
    # Both due: the urgent one (again, 20 minutes after its re-offer) goes first.
    assert reoffer_due(desk.db, policy, t0 + timedelta(minutes=31)) == [front, plain]


def test_the_setting_is_read_and_checked(tmp_path: Path) -> None:
    from ivr.config import load_settings
    from ivr.errors import ConfigError
    from ivr.jobs import policy_for

    base = {"INSTANCE_DIR": str(tmp_path), "FLOWS_DIR": str(ROOT / "flows")}
    found = load_settings({**base, "URGENT_REOFFER_MINUTES": "7"})
    assert policy_for(found).urgent_reoffer_after == timedelta(minutes=7)
    assert load_settings(base).urgent_reoffer_minutes == 10
    with pytest.raises(ConfigError, match=r"URGENT_REOFFER_MINUTES is '0': set it to a whole number "
                       r"from 1 to 10080"):
        load_settings({**base, "URGENT_REOFFER_MINUTES": "0"})


def test_purging_a_case_removes_its_answers(desk: Desk) -> None:
    from ivr.casebook import close_case
    from ivr.voicemail import purge

    case_id = desk.voicemail(AT_THE_FRONT)
    close_case(desk.db, case_id, actor="test")
    with desk.db.session() as s:
        s.execute(update(Case).where(Case.id == case_id).values(closed_at=SUNDAY - timedelta(days=400)))
    assert purge(desk.db, desk.vault, timedelta(days=30)) == 1
    case = desk.case(case_id)
    assert (case.intake, case.urgent) == (None, False)


def test_a_flow_test_says_which_answer_was_not_kept() -> None:
    """`keeps:` in a scenario reads the fields from the call state the hotline last gave."""
    from ivr.engine import CallState
    from ivr.scenarios import check
    from ivr.standin import CallLog
    from ivr.twiml import encode_state

    state = CallState("hotline", "v1", "ask_callback", "ru", 0, (("topic", "surrender"), ("who", "front")))
    log = CallLog(steps=["ask_callback"], last_action=f"https://h/twilio/step?s={encode_state(state)}&e=input")
    assert check({"keeps": {"who": "front", "people": None}}, log) == []
    assert check({"keeps": {"who": "relative", "company": "alone", "topic": None}}, log) == [
        "kept `who` = `front`, not `relative`", "did not keep `company` (expected `alone`)",
        "kept `topic` = `surrender`, but it was to be skipped"]
