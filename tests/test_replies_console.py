"""Replies from the hotline in the console, through Flask's test client: the form says which
language the caller speaks (in the reader's language), a reply is saved sealed and listed with
its author and whether it was heard, refusals are said next to the form with the words kept,
only those who may see the case may reply, and a closed case takes one until it is purged."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.casebook import close_case
from ivr.replies import MAX_LENGTH, mark_heard
from ivr.storage import AuditEntry, Case, Reply
from ivr.voicemail import purge
from tests import test_console
from tests.conftest import SUNDAY
from tests.test_console import Team, sign_in, token

team = test_console.team  # the fixture: operators of two regions, a supervisor, an admin, two cases


def page_of(client: FlaskClient, case_id: int) -> str:
    r = client.get(f"/console/cases/{case_id}")
    assert r.status_code == 200, r.status_code
    return r.get_data(as_text=True)


def write(client: FlaskClient, case_id: int, text: str) -> tuple[int, str]:
    csrf = token(client.get("/console/").get_data(as_text=True))
    r = client.post(f"/console/cases/{case_id}/reply", data={"text": text, "csrf_token": csrf},
                    follow_redirects=True)
    return r.status_code, r.get_data(as_text=True)


def replies_shown(page: str) -> list[str]:
    """Each reply as the page lists it, tags out, spaces collapsed."""
    block = page.split('id="replies"')[1].split("</ul>")[0]
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", li)).split())
            for li in re.findall(r"(?s)<li>(.*?)</li>", block)]


def stored(team: Team) -> list[Reply]:
    with team.db.session() as s:
        return list(s.scalars(select(Reply).order_by(Reply.id)))


def test_a_reply_is_written_in_the_callers_language_and_listed_until_heard(team: Team) -> None:
    case = team.cases["crimea"]  # the caller chose Russian
    olena = sign_in(team, "olena")
    page = page_of(olena, case)
    assert 'id="reply-language"><b>Абонент говорить російською: пишіть російською.</b>' in page
    assert f'maxlength="{MAX_LENGTH}" required lang="ru"' in page
    assert replies_shown(page) == ["Відповідей ще немає."]
    status, page = write(olena, case, 'Мы перезвоним завтра в 10:00. "Не" волнуйтесь <b>& ждите</b>')
    assert status == 200 and "Відповідь збережено: абонент почує її, коли зателефонує зі своїм кодом." in page
    assert replies_shown(page) == ["22.11.2026 14:00 olena · ще не прослухано "
                                   'Мы перезвоним завтра в 10:00. "Не" волнуйтесь <b>& ждите</b>']
    assert "&lt;b&gt;&amp; ждите&lt;/b&gt;" in page  # the operator's words, escaped
    (reply,) = stored(team)
    assert reply.text is not None and "перезвоним".encode() not in reply.text  # sealed
    mark_heard(team.db, reply.id, SUNDAY + timedelta(minutes=5))
    heard = replies_shown(page_of(olena, case))[0]
    assert heard.startswith("22.11.2026 14:00 olena · прослухано 22.11.2026 14:05 ")
    mark_heard(team.db, reply.id, SUNDAY + timedelta(minutes=9))
    again = page_of(olena, case)
    assert "уперше прослухано 22.11.2026 14:05; прослухано 2 рази" in replies_shown(again)[0]
    timeline = " ".join(re.sub(r"<[^>]+>", " ", again.split('class="timeline"')[1]).split())
    assert "відповідь абонентові написано — olena" in timeline
    assert timeline.count("абонент прослухав відповідь — абонент") == 2
    olena.post("/console/language", data={"locale": "en", "csrf_token": token(again)})
    english = page_of(olena, case)
    assert 'id="reply-language"><b>The caller speaks Russian: write in Russian.</b>' in english
    assert "first heard 22.11.2026 14:05; heard 2 times" in replies_shown(english)[0]
    assert "reply to the caller written — olena" in " ".join(re.sub(r"<[^>]+>", " ", english).split())


def test_an_empty_or_too_long_reply_is_said_next_to_the_form_with_the_words_kept(team: Team) -> None:
    case = team.cases["crimea"]
    olena = sign_in(team, "olena")
    status, page = write(olena, case, "  \n ")
    assert status == 400 and 'id="reply-error">відповідь порожня: нічого не збережено<' in page
    long = "Слово " * 200
    status, page = write(olena, case, long)
    assert status == 400
    assert 'id="reply-error">у відповіді символів: 1199; абонентові читають щонайбільше 1000<' in page
    assert long.strip() in html.unescape(page.split('id="reply-text"')[1].split("</textarea>")[0])
    assert stored(team) == []


def test_only_those_who_may_see_the_case_reply_and_only_with_the_forms_token(team: Team) -> None:
    case = team.cases["crimea"]
    petro = sign_in(team, "petro")  # another region's operator: no such case for him
    status, _page = write(petro, case, "Здравствуйте")
    assert status == 404
    olena = sign_in(team, "olena")
    assert olena.post(f"/console/cases/{case}/reply", data={"text": "Здравствуйте"}).status_code == 400
    assert stored(team) == []
    status, _page = write(sign_in(team, "sofia"), case, "Здравствуйте")  # a supervisor sees every case
    assert status == 200 and [r.actor for r in stored(team)] == [f"operator:{team.ids['sofia']}"]
    with team.db.session() as s:
        assert s.scalars(select(AuditEntry.actor).where(AuditEntry.action == "reply-written")).all() == [
            f"operator:{team.ids['sofia']}"]


def test_a_closed_case_takes_a_reply_until_its_data_is_destroyed(team: Team) -> None:
    case = team.cases["occupied"]
    close_case(team.db, case, "cli:root", "helped")
    petro = sign_in(team, "petro")
    assert 'id="reply-form"' in page_of(petro, case)
    status, page = write(petro, case, "Дело закрыто, но вы можете позвонить снова.")
    assert status == 200 and len(stored(team)) == 1
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.status == "closed"  # a reply does not reopen it
        found.closed_at = SUNDAY - timedelta(days=60)
    assert purge(team.db, team.vault, timedelta(days=30)) == 1
    page = page_of(petro, case)
    assert 'id="reply-form"' not in page and "Дело закрыто" not in page
    assert replies_shown(page)[0].endswith("ще не прослухано —")  # it was there; its words are not
    csrf = token(petro.get("/console/").get_data(as_text=True))
    r = petro.post(f"/console/cases/{case}/reply", data={"text": "ещё", "csrf_token": csrf})
    assert r.status_code == 409
    said = f'id="reply-error">справа #{case}: її дані знищено, відповідь залишити не можна<'
    assert said in r.get_data(as_text=True)
