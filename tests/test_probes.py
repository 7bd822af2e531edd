"""The probe flag in the worker and on the command line (SQLite and PostgreSQL): a flagged case
is never notified, re-offered, routed or called back by any path, a callback ringing when it
is flagged is not bridged; clearing gives it back, confirming closes it for good; `ivr cases
flag / unflag / confirm-probe`, with `flag` in `show --json` and `list --json`."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ivr import callbacks, jobs
from ivr.callbacks import CallbackError, Policy, notify, reoffer_due, start_callback
from ivr.cli import main as cli
from ivr.cli import os_account
from ivr.operators import OperatorError, assign_case, edit_operator, recount
from ivr.probes import code_accepted, flagged_siblings
from ivr.storage import AuditEntry, Case
from ivr.voicemail import purge
from tests import test_callbacks
from tests.conftest import BASE, SUNDAY
from tests.test_callbacks import OLENA, SOFIA, TARAS, Desk, Person

desk = test_callbacks.desk  # the fixture: the production flow, the stand-in, SQLite and PostgreSQL

REASON = "asked for the operators' names and where they sit"


def run(desk: Desk, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=desk.env())
    assert result.exit_code == 0, result.output
    return result.output


def refused(desk: Desk, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=desk.env())
    assert result.exit_code == 1, result.output
    return result.output


def actions(desk: Desk, case_id: int) -> list[tuple[str, str]]:
    with desk.db.session() as s:
        return [(e.actor, e.action) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(AuditEntry.id))]


def test_nothing_notifies_routes_or_calls_back_a_flagged_case(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    desk.add("Taras", TARAS)
    desk.add("Sofia", SOFIA, regions="elsewhere", role="supervisor")
    case_id = desk.voicemail("1")  # "any time": a callback waits for Olena
    assert [m.params["To"] for m in desk.api.messages] == [OLENA]
    assert "marked as a possible probe" in run(desk, "cases", "flag", str(case_id), "--reason", REASON)
    case = desk.case(case_id)
    assert (case.flag, case.operator_id, case.flagged_from, case.callback_status) == (
        "probe", None, olena, "none")
    assert recount(desk.db) == 0  # out of Olena's load
    assert actions(desk, case_id)[-1] == (f"cli:{os_account()}", "flagged")

    # Every path that could reach the caller or an operator about it, at any later time.
    later = SUNDAY + timedelta(hours=3)
    with pytest.raises(OperatorError):
        assign_case(desk.db, case_id, later)
    assert reoffer_due(desk.db, Policy(), later) == []
    assert callbacks.route(desk.db, case_id, later) is None
    with desk.db.session() as s:  # as if it had never been told, and a callback were due
        found = s.get(Case, case_id)
        assert found is not None
        found.notified_at, found.assigned_at = None, SUNDAY
        found.callback_status, found.next_callback_at = "scheduled", SUNDAY
    assert callbacks.unnotified(desk.db, later) == []
    assert callbacks.due_callbacks(desk.db, Policy(), later) == []
    assert notify(desk.db, desk.vault, jobs.telephony_for(desk.settings), BASE, case_id, later) == 0
    assert jobs.notify_case(case_id) == 0
    assert jobs.callback_case(case_id) is None
    with pytest.raises(CallbackError) as refusal:
        start_callback(desk.db, desk.vault, jobs.telephony_for(desk.settings), BASE, Policy(), case_id)
    assert refusal.value.said.code == "flagged-case"
    assert "marked as a possible probe" in refused(desk, "cases", "callback", str(case_id))
    desk.app.extensions["ivr.outbox"].run_here()
    assert [m.params["To"] for m in desk.api.messages] == [OLENA] and desk.api.calls == []
    assert desk.case(case_id).operator_id is None

    shown = json.loads(run(desk, "cases", "show", str(case_id), "--json"))
    assert shown["flag"] == "probe" and REASON not in json.dumps(shown)
    listed = json.loads(run(desk, "cases", "list", "--json"))
    assert [(r["id"], r["flag"]) for r in listed] == [(case_id, "probe")]
    assert f"#{case_id}" in run(desk, "cases", "list") and "[probe]" in run(desk, "cases", "list")


def test_a_callback_ringing_when_the_case_is_flagged_is_not_bridged(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    run(desk, "cases", "callback", str(case_id))
    [call] = desk.api.calls
    run(desk, "cases", "flag", str(case_id), "--reason", REASON)  # while Olena's phone rings
    olena_phone = Person(["1", "answer"])
    desk.phone().answer(call, olena_phone)
    assert olena_phone.dialled == []  # the caller was not dialled
    [attempt] = desk.attempts(case_id)
    assert attempt.confirmed_at is None and attempt.outcome is not None
    case = desk.case(case_id)
    assert (case.callback_status, case.next_callback_at) == ("none", None)  # no next try
    assert callbacks.due_callbacks(desk.db, Policy(), SUNDAY + timedelta(days=1)) == []


def test_clearing_gives_it_back_and_confirming_closes_it_for_good(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    taras = desk.add("Taras", TARAS)
    case_id = desk.voicemail("1")
    assert desk.case(case_id).operator_id == olena
    run(desk, "cases", "flag", str(case_id), "--reason", REASON)
    assert "supervisors decide" in refused(desk, "cases", "flag", str(case_id), "--reason", "again")
    # Cleared: back to Olena, whose callback waits again; she is told by SMS.
    assert f"operator {olena}" in run(desk, "cases", "unflag", str(case_id))
    case = desk.case(case_id)
    assert (case.flag, case.operator_id, case.callback_status, case.notified_at) == (
        None, olena, "waiting", None)
    desk.app.extensions["ivr.outbox"].run_here()
    assert [m.params["To"] for m in desk.api.messages] == [OLENA, OLENA]
    assert "is not marked" in refused(desk, "cases", "unflag", str(case_id))
    # Flagged again while Olena is disabled: cleared, it goes by the rule (to Taras).
    run(desk, "cases", "flag", str(case_id), "--reason", REASON)
    edit_operator(desk.db, desk.vault, olena, "test", active=False)
    assert f"operator {taras}" in run(desk, "cases", "unflag", str(case_id))
    assert recount(desk.db) == 0

    # Confirmed: closed as a probe; never reopened; its code stops working; retention applies.
    run(desk, "cases", "flag", str(case_id), "--reason", REASON)
    assert "confirmed as a probe" in run(desk, "cases", "confirm-probe", str(case_id), "--yes")
    case = desk.case(case_id)
    assert (case.status, case.flag, case.status_reason) == ("closed", "confirmed", "closed as a probe")
    assert not code_accepted(case)
    assert "cannot be reopened" in refused(desk, "cases", "reopen", str(case_id), "--reason", "x")
    assert json.loads(run(desk, "cases", "show", str(case_id), "--json"))["flag"] == "confirmed"
    me = f"cli:{os_account()}"
    assert [a for a in actions(desk, case_id) if a[1] in (
        "flagged", "flag-cleared", "probe-confirmed", "closed")] == [
        (me, "flagged"), (me, "flag-cleared"), (me, "flagged"), (me, "flag-cleared"),
        (me, "flagged"), (me, "probe-confirmed"), (me, "closed")]
    assert purge(desk.db, desk.vault, timedelta(0)) == 1
    case = desk.case(case_id)
    assert (case.flag, case.flag_reason, case.purged_at is not None) == ("confirmed", None, True)


def test_other_cases_from_the_same_number_know_of_the_flag(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    first = desk.voicemail("1")
    second = desk.voicemail("1")
    third = desk.voicemail("1", number="+79781110000")
    assert flagged_siblings(desk.db, second) == []
    run(desk, "cases", "flag", str(first), "--reason", REASON)
    assert (flagged_siblings(desk.db, second), flagged_siblings(desk.db, third)) == ([first], [])
    # The number-hash key is renewed at a purge: the live cases are hashed again, still alike.
    with desk.db.session() as s:
        hashed = s.get(Case, second)
        assert hashed is not None
        before = hashed.caller_hash
    run(desk, "cases", "close", str(third), "--reason", "done", "--yes")
    assert purge(desk.db, desk.vault, timedelta(0)) == 1
    assert desk.case(second).caller_hash != before
    assert flagged_siblings(desk.db, second) == [first]
