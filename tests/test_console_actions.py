"""The console's actions that cannot go wrong by one click, and the whole story of a case on
one screen, through Flask's test client: the outcome that starts empty, closing with a reason
and a confirmation, reopening until the data is destroyed (console and `ivr cases`), "Take this
case", callback refusals in words, the caller's path, earlier cases from the same number, one
listen one audit entry."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr import create_app
from ivr.callbacks import CallbackError
from ivr.cli import main as cli
from ivr.console.i18n import UK
from ivr.console.story import OPERATOR, TOPICS, story
from ivr.engine import Caller
from ivr.operators import add_operator, recount
from ivr.reasons import ENGLISH
from ivr.standin import FlaskTransport, Phone, ScriptedCaller
from ivr.storage import AuditEntry, CallbackAttempt, Case, OutboxJob, Recording
from ivr.voicemail import Reported, note_recording, purge
from tests import test_console
from tests.conftest import ROOT, SUNDAY, TEST_KEYS, TOKEN
from tests.test_console import PASSWORD, Team, enroll, sign_in, token

team = test_console.team  # the fixture: operators of two regions, a supervisor, an admin, two cases


def page_of(client: FlaskClient, case_id: int) -> str:
    r = client.get(f"/console/cases/{case_id}")
    assert r.status_code == 200, r.status_code
    return r.get_data(as_text=True)


def post(client: FlaskClient, case_id: int, action: str, **data: str) -> tuple[int, str]:
    csrf = token(page_of(client, case_id))
    r = client.post(f"/console/cases/{case_id}/{action}", data={"csrf_token": csrf, **data})
    return r.status_code, r.get_data(as_text=True)


def english(client: FlaskClient) -> FlaskClient:
    client.post("/console/language", data={"locale": "en", "csrf_token": token(
        client.get("/console/").get_data(as_text=True))})
    return client


def case_row(team: Team, case_id: int) -> Case:
    with team.db.session() as s:
        found = s.get(Case, case_id)
        assert found is not None
        return found


def actions(team: Team, case_id: int) -> list[tuple[str, str | None]]:
    with team.db.session() as s:
        return [(e.action, e.detail) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(AuditEntry.id))]


# --- the outcome --------------------------------------------------------------------------------


def test_the_outcome_starts_empty_and_nothing_chosen_is_refused_with_words(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    page = page_of(client, case)
    select_html = page.split('id="outcome-choice"')[1].split("</select>")[0]
    assert re.search(r'<option value="" selected>— оберіть —</option>', select_html)
    assert select_html.index('value=""') < select_html.index('value="helped"')  # first, chosen
    status, body = post(client, case, "outcome", outcome="")
    assert status == 400 and "Спершу оберіть результат: нічого не збережено." in body
    assert case_row(team, case).outcome is None and ("outcome", "helped") not in actions(team, case)
    status, body = post(english(client), case, "outcome")  # no field at all
    assert status == 400 and "Choose an outcome first: nothing was saved." in body
    status, _body = post(client, case, "outcome", outcome="helped")
    assert status == 302 and case_row(team, case).outcome == "helped"


# --- closing and reopening ----------------------------------------------------------------------


def test_closing_asks_for_a_reason_and_a_confirmation_that_names_the_days(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    days = team.app.extensions["ivr.console"].settings.retention_days
    page = page_of(client, case)
    label = page.split('id="close-confirm"')[1].split("</label>")[0]
    assert f"через {days} дн. після закриття запис, розшифровку, нотатки й номер абонента" in label
    status, body = post(client, case, "close", reason="", confirm="yes")
    assert status == 400 and "Напишіть, чому справу закрито: її не закрито." in body
    status, body = post(client, case, "close", reason="допомогли, більше не треба")
    assert status == 400 and "Поставте позначку: дані справи буде знищено. Справу не закрито." in body
    assert 'value="допомогли, більше не треба"' in body  # what was typed stays in the form
    assert case_row(team, case).status == "routed" and case_row(team, case).closed_at is None
    status, _body = post(client, case, "close", reason="допомогли, більше не треба", confirm="yes")
    assert status == 302
    closed = case_row(team, case)
    assert closed.status == "closed" and closed.closed_at is not None
    assert ("closed", "допомогли, більше не треба") in actions(team, case)
    page = page_of(english(client), case)
    assert f"Closed: its data is destroyed {days} days after closing." in page
    assert 'id="reopen-case"' in page and 'id="close-case"' not in page


def test_a_reopened_case_goes_back_into_the_queue_and_its_retention_clock_stops(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    post(client, case, "take")
    post(client, case, "close", reason="done", confirm="yes")
    assert recount(team.db) == 0
    status, body = post(client, case, "reopen", reason="")
    assert status == 400 and "Напишіть, чому справу відкрито знову: її не відкрито." in body
    assert case_row(team, case).status == "closed"
    status, _body = post(client, case, "reopen", reason="the caller called again")
    assert status == 302
    found = case_row(team, case)
    # An operator who reopens a case of her regions and languages keeps it, acting on it.
    assert (found.status, found.closed_at, found.operator_id) == ("routed", None, team.ids["olena"])
    assert found.acted_at is not None and found.notified_at is not None  # no SMS, no re-offer
    assert found.callback_status == "waiting"
    assert ("reopened", "the caller called again") in actions(team, case)
    assert recount(team.db) == 0  # she has one open case again, counted
    page = page_of(client, case)
    assert "Справу знову відкрито." in page and 'id="close-case"' in page
    # The retention clock stopped: a purge of everything closed does not touch it.
    assert purge(team.db, team.vault, timedelta(0)) == 0
    assert case_row(team, case).purged_at is None and "words of case 1" in page_of(client, case)


def test_a_supervisor_reopens_a_case_back_to_its_operator_who_is_told(team: Team) -> None:
    case = team.cases["crimea"]
    olena = sign_in(team, "olena")
    post(olena, case, "take")
    post(olena, case, "close", reason="done", confirm="yes")
    status, _body = post(sign_in(team, "sofia"), case, "reopen", reason="a second message came")
    assert status == 302
    found = case_row(team, case)
    assert found.operator_id == team.ids["olena"] and found.acted_at is None  # a new offer
    assert found.notified_at is None
    with team.db.session() as s:
        told = s.scalars(select(OutboxJob.job).where(OutboxJob.target_id == case)).all()
    assert "notify_case" in told


def test_reopening_is_refused_once_the_data_is_destroyed(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    post(client, case, "close", reason="done", confirm="yes")
    assert purge(team.db, team.vault, timedelta(0)) == 1
    page = page_of(client, case)
    assert "Закрита, і її дані вже знищено: відкрити її знову не можна." in page
    assert 'id="reopen-case"' not in page
    status, body = post(client, case, "reopen", reason="too late")
    assert status == 409 and "Дані справи вже знищено: відкрити її знову не можна." in body
    assert case_row(team, case).status == "closed"
    assert not any(a == "reopened" for a, _d in actions(team, case))


def test_another_regions_operator_can_neither_close_nor_reopen_nor_take(team: Team) -> None:
    case = team.cases["crimea"]
    petro = sign_in(team, "petro")
    csrf = token(petro.get("/console/").get_data(as_text=True))
    for action in ("close", "reopen", "take"):
        r = petro.post(f"/console/cases/{case}/{action}",
                       data={"csrf_token": csrf, "reason": "r", "confirm": "yes"})
        assert r.status_code == 404, action
    assert case_row(team, case).status == "routed" and case_row(team, case).operator_id is None


def test_the_cli_closes_with_a_reason_and_a_confirmation_and_reopens(team: Team) -> None:
    s = team.app.extensions["ivr.console"].settings
    env = {"DATABASE_URL": s.database_url, "KEYSTORE_URL": s.keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
           "INSTANCE_DIR": str(s.instance_dir), "IVR_DOTENV": "/nonexistent", "RETENTION_DAYS": "21",
           "TWILIO_AUTH_TOKEN": TOKEN}
    case = str(team.cases["crimea"])
    runner = CliRunner()
    said = runner.invoke(cli, ["cases", "close", case], input="\nhelped\nn\n", env=env)
    assert "Why is it closed" in said.output and "21 days after closing" in said.output
    assert said.exit_code == 1 and case_row(team, int(case)).status == "routed"  # said no
    done = runner.invoke(cli, ["cases", "close", case, "--reason", "helped"], input="y\n", env=env)
    assert done.exit_code == 0 and "destroyed in 21 days" in done.output, done.output
    again = runner.invoke(cli, ["cases", "close", case, "--reason", "x", "--yes"], env=env)
    assert again.exit_code == 1 and "already closed" in again.output
    opened = runner.invoke(cli, ["cases", "reopen", case, "--reason", "called again"], env=env)
    assert opened.exit_code == 0 and "reopened" in opened.output, opened.output
    assert case_row(team, int(case)).status == "routed"
    assert ("reopened", "called again") in actions(team, int(case))
    runner.invoke(cli, ["cases", "close", case, "--reason", "helped", "--yes"], env=env)
    assert purge(team.db, team.vault, timedelta(0)) == 1
    late = runner.invoke(cli, ["cases", "reopen", case, "--reason", "too late"], env=env)
    assert late.exit_code == 1 and "its data was destroyed" in late.output
    unassigned = runner.invoke(cli, ["cases", "callback", str(team.cases["occupied"])], env={
        **env, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32})
    assert "take it or assign it first (`ivr cases assign" in unassigned.output  # a shell, a command


# --- taking a case, and a callback on one nobody has ----------------------------------------------


def test_take_this_case_for_an_unassigned_case_of_my_regions_and_languages(team: Team) -> None:
    case = team.cases["crimea"]
    client = sign_in(team, "olena")
    page = page_of(client, case)
    assert 'id="take-case"' in page and "Взяти справу" in page
    assert "Зворотний дзвінок робить справу вашою." in page  # calling back would take it too
    status, _body = post(client, case, "take")
    assert status == 302
    found = case_row(team, case)
    assert found.operator_id == team.ids["olena"] and found.acted_at is not None
    assert ("taken", f"operator {team.ids['olena']}") in actions(team, case)
    page = page_of(client, case)
    assert "Тепер це ваша справа." in page and 'id="call-back"' in page and 'id="take-case"' not in page
    assert recount(team.db) == 0
    # Taken already: a second operator of the region is told so, in words.
    ivan = add_operator(team.db, team.vault, name="ivan", number="+380501110099", languages="ru",
                        regions="crimea", timezone="Europe/Kyiv", hours="always")
    from ivr.console.auth import set_password

    set_password(team.db, ivan, PASSWORD)
    team.secrets["ivan"] = enroll(team.db, team.vault, ivan)
    status, body = post(sign_in(team, "ivan"), case, "take")
    assert status == 409 and "Цю справу щойно взяв хтось інший." in body
    assert case_row(team, case).operator_id == team.ids["olena"]


def test_an_operator_who_does_not_speak_the_language_is_offered_no_take(team: Team) -> None:
    case = team.cases["crimea"]  # Russian
    mark = add_operator(team.db, team.vault, name="mark", number="+380501110098", languages="en",
                        regions="crimea", timezone="Europe/Kyiv", hours="always")
    from ivr.console.auth import set_password

    set_password(team.db, mark, PASSWORD)
    team.secrets["mark"] = enroll(team.db, team.vault, mark)
    client = sign_in(team, "mark")
    page = page_of(client, case)
    assert 'id="take-case"' not in page and 'id="call-back"' not in page
    for action in ("take", "callback"):
        status, body = post(client, case, action)
        assert status == 403, action
        assert "Ця справа не з ваших регіонів і мов: її може призначити супервізор." in body
    assert case_row(team, case).operator_id is None
    with team.db.session() as s:
        assert s.scalars(select(CallbackAttempt)).all() == []


def test_a_supervisors_call_back_on_an_unassigned_case_offers_take_or_assign(team: Team) -> None:
    case = team.cases["crimea"]
    sofia = sign_in(team, "sofia")
    page = page_of(sofia, case)
    assert 'id="take-case"' in page and 'id="assign"' in page and ">Призначити<" in page
    assert 'id="call-back"' not in page
    r = sofia.post(f"/console/cases/{case}/callback", data={"csrf_token": token(page)},
                   follow_redirects=True)
    body = r.get_data(as_text=True)
    assert "У справи ще немає оператора: візьміть її собі або призначте комусь, тоді передзвоніть." in body
    assert "ivr cases" not in body and "assign it first" not in body
    with team.db.session() as s:
        assert s.scalars(select(CallbackAttempt)).all() == []
    status, _body = post(sofia, case, "take")  # the supervisor takes it herself
    assert status == 302 and case_row(team, case).operator_id == team.ids["sofia"]


def test_callback_refusals_are_words_for_operators(team: Team) -> None:
    case = team.cases["crimea"]
    client = sign_in(team, "olena")
    post(client, case, "take")
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        found.consent = "none"
    r = client.post(f"/console/cases/{case}/callback", data={"csrf_token": token(page_of(client, case))},
                    follow_redirects=True)
    body = r.get_data(as_text=True)
    assert "абонент не погодився на зворотний дзвінок" in body and f"case {case}:" not in body


def test_every_callback_refusal_has_its_ukrainian_and_no_shell_command() -> None:
    source = (ROOT / "ivr" / "callbacks.py").read_text(encoding="utf-8")
    codes = re.findall(r'raise CallbackError\("([a-z-]+)"', source)
    assert len(codes) >= 8
    english = [ENGLISH[code] for code in codes]
    assert [text for text in english if text not in UK] == []
    assert [text for text in english if "ivr " in text or "`" in text] == []
    refused = CallbackError("gave-up-already", case=3, attempts=3)
    assert str(refused) == "case 3: gave up after 3 attempts"
    assert refused.said.render(lambda m: UK[m], lambda _k, v: str(v)) == \
        "справа #3: спроби вичерпано (усього спроб: 3)"


# --- the whole story ---------------------------------------------------------------------------


def story_case(team: Team, path: tuple[str, ...] | None, n: int = 7, number: str = "+79781230000",
               region: str = "crimea") -> int:
    sid = f"{n:032x}"
    note_recording(team.db, team.vault, Reported(
        call_sid="CA" + sid, recording_sid="RE" + sid, status="completed", duration=42, number=number,
        caller=Caller(False, "RU", region), language="uk", consent="day", timezone="Europe/Moscow",
        path=path))
    with team.db.session() as s:
        return s.scalars(select(Case.id).join(Recording, Recording.id == Case.recording_id)
                         .where(Recording.recording_sid == "RE" + sid)).one()


def test_the_callers_path_is_told_in_the_readers_language_and_kept_sealed(team: Team) -> None:
    case = story_case(team, ("language:uk", "topic:surrender", "operator:nobody"))
    with team.db.session() as s:
        sealed = s.scalars(select(Case.path).where(Case.id == case)).one()
    assert sealed is not None and b"surrender" not in sealed and b"uk" not in sealed
    client = sign_in(team, "olena")
    story = page_of(client, case).split('id="story"')[1].split("</ol>")[0]
    assert [re.sub(r"<[^>]+>", "", li).strip() for li in story.split("<li>")[1:]] == [
        "Обрано мову: українська.", "Тема: як безпечно здатися в полон.",
        "Спроба з&#39;єднатися з оператором: на зміні нікого не було.",
        "Залишено повідомлення тривалістю 42 с."]
    story = page_of(english(client), case).split('id="story"')[1].split("</ol>")[0]
    assert "Chose the language: Ukrainian." in story and "Topic: how to surrender safely." in story
    assert "Asked for an operator: nobody was on duty." in story and "Left a message of 42 s." in story
    shown = client.get(f"/console/api/cases/{case}").get_json()
    assert shown["path"] == ["language:uk", "topic:surrender", "operator:nobody"]
    # A call from before paths were kept says so; one who never chose hears the default.
    old = page_of(client, team.cases["crimea"]).split('id="story"')[1].split("</ol>")[0]
    assert "This call&#39;s path through the menus was not kept" in old
    quiet = story_case(team, ("topic:mobilised",), n=8, number="+79781230001")
    said = page_of(client, quiet).split('id="story"')[1].split("</ol>")[0]
    assert "Did not choose a language; the menus spoke Ukrainian." in said
    assert "Topic: called up or mobilised." in said and "Did not ask for an operator." in said
    nothing = story_case(team, (), n=9, number="+79781230002")  # straight to the message
    said = page_of(client, nothing).split('id="story"')[1].split("</ol>")[0]
    assert [re.sub(r"<[^>]+>", "", li).strip() for li in said.split("<li>")[1:]] == [
        "Did not choose a language; the menus spoke Ukrainian.", "Did not ask for an operator.",
        "Left a message of 42 s."]


def test_every_sentence_of_the_story_has_its_ukrainian() -> None:
    said: list[str] = []

    def record(message: str) -> str:
        said.append(message)
        return message

    every = [f"operator:{k}" for k in OPERATOR] + [f"topic:{k}" for k in TOPICS] + ["menu:failed"]
    for path in (every, [*every, "language:ru"], None):
        for seconds in (0, 12):
            story(path, "ru", seconds, record, {})
    assert len(set(said)) >= 12 and sorted(set(said) - set(UK)) == []


def test_a_real_call_through_the_shipped_hotline_leaves_its_path(team: Team) -> None:
    """Ukrainian, surrender, the operator is rung and busy, a message: the case says all that."""
    settings = team.app.extensions["ivr.console"].settings.replace(flows_dir=ROOT / "flows")
    hotline = create_app(settings, clock=lambda: SUNDAY)  # 14:00 in Kyiv: operators' hours
    phone = Phone(FlaskTransport(hotline), settings.public_base_url, TOKEN, settings.twilio_account_sid,
                  settings.hotline_number)
    log = phone.call("+79781234000", ScriptedCaller(["2", "2", "4", "busy", "#", "#", "#", "3"]))
    assert not log.errors, log.errors
    with team.db.session() as s:
        case = s.scalars(select(Case.id).order_by(Case.id.desc())).first()
    assert case is not None
    client = english(sign_in(team, "olena"))
    found = client.get(f"/console/api/cases/{case}").get_json()
    assert found.get("path") == [
        "language:uk", "topic:surrender", "operator:unanswered"]
    story = page_of(client, case).split('id="story"')[1].split("</ol>")[0]
    assert "Asked for an operator: operators were rung, nobody answered (busy)." in story


def test_earlier_cases_from_the_same_number_link_only_where_the_reader_may_go(team: Team) -> None:
    number = "+79781235555"
    first = story_case(team, (), n=11, number=number, region="crimea")
    later = story_case(team, (), n=12, number=number, region="occupied")
    petro = sign_in(team, "petro")  # occupied: sees `later`, not `first`
    earlier = page_of(petro, later).split('id="earlier"')[1].split("</ul>")[0]
    assert f"/console/cases/{first}" not in earlier and f"#{first}" not in earlier
    assert "1 — у регіонах, які не ваші" in earlier
    assert petro.get(f"/console/cases/{first}").status_code == 404
    sofia = sign_in(team, "sofia")
    earlier = page_of(sofia, later).split('id="earlier"')[1].split("</ul>")[0]
    assert f'href="/console/cases/{first}"' in earlier and "у регіонах" not in earlier
    assert sofia.get(f"/console/cases/{first}").status_code == 200
    none = page_of(sofia, first).split('id="earlier"')[1].split("</ul>")[0]
    assert "Немає" in none


# --- one listen, one entry ------------------------------------------------------------------------


def test_one_listen_is_one_audit_entry_however_many_byte_ranges(team: Team) -> None:
    case = team.cases["crimea"]
    client = sign_in(team, "olena")
    for ranges in ("bytes=0-", "bytes=0-1023", "bytes=2000-", None, "bytes=100-"):
        r = client.get(f"/console/cases/{case}/audio", headers={"Range": ranges} if ranges else {})
        assert r.status_code in (200, 206)
    played = [a for a, _d in actions(team, case) if a == "audio-played"]
    assert len(played) == 1
    sign_in(team, "sofia").get(f"/console/cases/{case}/audio")  # someone else's listen
    assert len([a for a, _d in actions(team, case) if a == "audio-played"]) == 2
    team.app.config["IVR_CLOCK"] = lambda: SUNDAY + timedelta(minutes=11)  # a later listen
    client.get(f"/console/cases/{case}/audio", headers={"Range": "bytes=0-"})
    assert len([a for a, _d in actions(team, case) if a == "audio-played"]) == 3


def test_a_transcript_says_it_is_machine_made_with_its_engine_and_language(team: Team) -> None:
    case = team.cases["crimea"]
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        found.transcript_engine, found.transcript_language = "whisper-small", "ru"
    page = page_of(english(sign_in(team, "olena")), case)
    about = page.split('id="transcript-about"')[1].split("</p>")[0]
    assert "Machine transcription: it can be wrong; the recording is what counts." in about
    assert "Engine: whisper-small" in about and "Language: Russian" in about


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_no_refusal_shows_a_shell_command(team: Team, locale: str) -> None:
    client = sign_in(team, "sofia")
    if locale == "en":
        english(client)
    for case in team.cases.values():
        body = page_of(client, case)
        assert "ivr cases" not in body and "`" not in body


def test_a_spooled_report_keeps_the_callers_path(tmp_path: Path) -> None:
    """A message the database could not take at once (the spool) keeps its path too."""
    from ivr.keys import Keyring, parse_master_keys
    from ivr.spool import Spool

    spool = Spool(tmp_path / "spool", Keyring(parse_master_keys(TEST_KEYS)).derived("spool"))
    for path in (("language:uk", "topic:surrender"), (), None):
        report = Reported("CA" + "b" * 32, "RE" + "b" * 32, "completed", 5, "+79781234567",
                          Caller(False, "RU", "crimea"), language="uk", path=path)
        spool.put(report)
        [kept] = spool.folder.glob("*.report")
        assert spool.read(kept) == report and spool.read(kept).path == path
        kept.unlink()
