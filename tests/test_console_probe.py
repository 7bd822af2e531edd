"""The probe flag in the console (Flask's test client): who may mark a case a possible probe,
who sees it then (a 404 for everyone but supervisors and admins), who clears or confirms it,
"same number as a flagged case" for supervisors only, and the audit log of it all."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.probes import code_accepted
from ivr.storage import AuditEntry, Case, Operator
from tests import test_console
from tests.test_console import Team, new_case, sign_in, token

team = test_console.team  # the fixture: operators of two regions, a supervisor, an admin, two cases

ROLES = ("olena", "petro", "sofia", "adam")  # Crimea's operator, another region's, supervisor, admin
REASON = "asked where our operators sit and for names"


def status(client: FlaskClient, path: str, data: dict[str, str] | None = None) -> int:
    """GET `path`, or POST `data` to it with the CSRF token of the case's page (or the queue's)."""
    if data is None:
        return client.get(path).status_code
    page = client.get("/console/").get_data(as_text=True)
    return client.post(path, data={"csrf_token": token(page), **data}).status_code


def flash(client: FlaskClient, path: str) -> list[str]:
    return re.findall(r'class="flash"[^>]*>([^<]*)<', client.get(path).get_data(as_text=True))


def english(team: Team, *names: str) -> dict[str, FlaskClient]:
    with team.db.session() as s:
        for op in s.scalars(select(Operator)):
            op.locale = "en"
    return {name: sign_in(team, name) for name in names}


def test_who_may_flag_see_clear_and_confirm(team: Team) -> None:
    c = english(team, *ROLES)
    case = team.cases["crimea"]
    page = f"/console/cases/{case}"
    # Before: the region's operator and the supervisors see it; another region's does not.
    assert {n: status(c[n], page) for n in ROLES} == {"olena": 200, "petro": 404, "sofia": 200, "adam": 200}
    assert status(c["petro"], page + "/flag", {"reason": REASON}) == 404
    assert status(c["olena"], page + "/flag", {"reason": "  "}) == 400  # a reason is needed
    assert status(c["olena"], page + "/unflag", {}) == 404  # supervisors' own
    assert status(c["olena"], page + "/flag", {"reason": REASON}) == 302
    assert flash(c["olena"], "/console/") == [
        f"Case #{case} was marked as a possible probe and went to the supervisors: it is no longer "
        "in your queue."]
    # After: supervisors only, in the page, the audio, the JSON and the queue.
    assert {n: status(c[n], page) for n in ROLES} == {"olena": 404, "petro": 404, "sofia": 200, "adam": 200}
    for path in (page + "/audio", f"/console/api/cases/{case}"):
        assert status(c["olena"], path) == 404
    assert case not in [r["id"] for r in c["olena"].get("/console/api/cases?show=all").get_json()]
    assert f"/console/cases/{case}\"" not in c["olena"].get("/console/?show=all").get_data(as_text=True)
    for name in ("olena", "petro"):
        assert status(c[name], page + "/unflag", {}) == 404
        assert status(c[name], page + "/confirm-probe", {"confirm": "yes"}) == 404
        assert status(c[name], page + "/note", {"text": "x"}) == 404
    listed = {r["id"]: r["flag"] for r in c["sofia"].get("/console/api/cases?show=flagged").get_json()}
    assert listed == {case: "probe"}
    queue = c["sofia"].get("/console/").get_data(as_text=True)
    assert re.search(r'id="count-flagged">1<', queue) and "possible probe" in queue
    shown = c["sofia"].get(page).get_data(as_text=True)
    assert REASON in shown and 'id="flagged-by">olena<' in shown and 'id="call-back"' not in shown
    assert c["sofia"].get(f"/console/api/cases/{case}").get_json()["flag"] == "probe"
    # The reason is sealed under the case's key, like a note.
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.flag_reason is not None
        assert REASON.encode() not in found.flag_reason and found.operator_id is None

    # A supervisor clears it: back to normal, by the rule (it had no operator): to olena.
    assert status(c["sofia"], page + "/unflag", {}) == 302
    assert {n: status(c[n], page) for n in ROLES} == {"olena": 200, "petro": 404, "sofia": 200, "adam": 200}
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and (found.flag, found.flag_reason, found.operator_id) == (
            None, None, team.ids["olena"])

    # Marked again; the admin confirms it, once the box is ticked: closed as a probe.
    assert status(c["olena"], page + "/flag", {"reason": REASON}) == 302
    assert status(c["adam"], page + "/confirm-probe", {}) == 400
    assert status(c["adam"], page + "/confirm-probe", {"confirm": "yes"}) == 302
    assert {n: status(c[n], page) for n in ROLES} == {"olena": 404, "petro": 404, "sofia": 200, "adam": 200}
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and (found.status, found.flag) == ("closed", "confirmed")
        assert found.closed_at is not None and not code_accepted(found)  # its code stops working
    assert status(c["sofia"], page + "/reopen", {"reason": "again"}) == 302  # refused: back to the page
    assert flash(c["sofia"], page) == ["This case was confirmed as a probe and is closed for good."]
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.status == "closed"
        entries = [(e.actor, e.action) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.case_id == case,
                                     AuditEntry.action.in_(("flagged", "flag-cleared", "probe-confirmed",
                                                            "closed")))
            .order_by(AuditEntry.id))]
        assert REASON not in " ".join(str(e.detail) for e in s.scalars(select(AuditEntry)))
    olena, sofia, adam = (f"operator:{team.ids[n]}" for n in ("olena", "sofia", "adam"))
    assert entries == [(olena, "flagged"), (sofia, "flag-cleared"), (olena, "flagged"),
                       (adam, "probe-confirmed"), (adam, "closed")]
    timeline = c["sofia"].get(page).get_data(as_text=True)
    for words in ("marked as a possible probe", "probe flag cleared", "confirmed as a probe",
                  "closed as a probe"):
        assert words in timeline


def test_a_flagged_case_waits_for_the_supervisors_decision(team: Team) -> None:
    c = english(team, "olena", "sofia")
    case = team.cases["crimea"]
    page = f"/console/cases/{case}"
    assert status(c["sofia"], page + "/flag", {"reason": REASON}) == 302  # a supervisor may too
    assert flash(c["sofia"], page) == ["Marked as a possible probe: clear the flag or confirm it."]
    for action, data in (("callback", {}), ("take", {}), ("close", {"reason": "x", "confirm": "yes"}),
                         ("reassign", {"operator_id": str(team.ids["olena"])}),
                         ("outcome", {"outcome": "helped"})):
        assert status(c["sofia"], f"{page}/{action}", data) == 302, action
        assert flash(c["sofia"], page) == [
            "This case is marked as a possible probe: a supervisor clears or confirms it first."], action
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        assert (found.status, found.operator_id, found.outcome) == ("routed", None, None)
    assert status(c["sofia"], page + "/flag", {"reason": REASON}) == 409  # once is enough


def test_same_number_as_a_flagged_case_is_shown_to_supervisors_only(team: Team) -> None:
    again = new_case(team.db, team.vault, 7, "crimea", "+79781234567")  # the crimea case's number
    other = new_case(team.db, team.vault, 8, "crimea", "+79780000000")
    c = english(team, "olena", "sofia")
    assert status(c["olena"], f"/console/cases/{team.cases['crimea']}/flag", {"reason": REASON}) == 302
    for case_id, shown in ((again, True), (other, False)):
        page = c["sofia"].get(f"/console/cases/{case_id}").get_data(as_text=True)
        assert ('id="same-number-flagged"' in page) is shown
        assert (f'href="/console/cases/{team.cases["crimea"]}"' in page) is shown
        assert c["sofia"].get(f"/console/api/cases/{case_id}").get_json()["same_number_as_flagged"] == (
            [team.cases["crimea"]] if shown else [])
    mine = c["olena"].get(f"/console/cases/{again}").get_data(as_text=True)
    assert 'id="same-number-flagged"' not in mine and "Same number as a flagged case" not in mine
    assert f'href="/console/cases/{team.cases["crimea"]}"' not in mine  # nor a link to it
    assert 'id="earlier-hidden"' not in mine  # nor "1 in regions that are not yours": it is hers
    assert "same_number_as_flagged" not in c["olena"].get(f"/console/api/cases/{again}").get_json()


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_the_flag_speaks_the_readers_language(team: Team, locale: str) -> None:
    with team.db.session() as s:
        for op in s.scalars(select(Operator)):
            op.locale = locale
    olena = sign_in(team, "olena")
    page = f"/console/cases/{team.cases['crimea']}"
    form = olena.get(page).get_data(as_text=True)
    assert {"uk": "Позначити як можливе зондування", "en": "Mark as a possible probe"}[locale] in form
    olena.post(page + "/flag", data={"csrf_token": token(form), "reason": REASON})
    assert flash(olena, "/console/") == [{
        "uk": f"Справу #{team.cases['crimea']} позначено як можливе зондування й передано "
              "супервізорам: у вашій черзі її більше немає.",
        "en": f"Case #{team.cases['crimea']} was marked as a possible probe and went to the "
              "supervisors: it is no longer in your queue."}[locale]]
