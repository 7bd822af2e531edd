"""Replies from the hotline in a real browser (Debian's Chromium, as tests/test_console_browser.py):
an operator reads which language the caller speaks, in her own, writes a reply of several lines,
sees it listed as not heard yet, and, once the caller's menu has read it, when it was heard."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ivr.replies import mark_heard
from ivr.storage import Reply
from tests import test_console_browser
from tests.test_console_browser import Tab, press, sign_in, to_english

site, tab = test_console_browser.site, test_console_browser.tab  # the fixtures: the app over HTTP

WORDS = {
    "uk": {"language": "Абонент говорить російською: пишіть російською.",
           "saved": "Відповідь збережено: абонент почує її, коли зателефонує зі своїм кодом.",
           "not-heard": "ще не прослухано", "heard": "прослухано ", "empty": "відповідь порожня"},
    "en": {"language": "The caller speaks Russian: write in Russian.",
           "saved": "Reply saved: the caller hears it when they call with their code.",
           "not-heard": "not heard yet", "heard": "heard ", "empty": "the reply is empty"},
}
REPLY = "Здравствуйте! Мы получили ваше сообщение.\nОператор перезвонит завтра после 10:00."


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_an_operator_writes_a_reply_and_sees_when_it_was_heard(tab: Tab, locale: str) -> None:
    page, site, words = tab.page, tab.site, WORDS[locale]
    sign_in(tab, "olena")
    case = site.cases["crimea"]
    page.goto(f"/console/cases/{case}")
    if locale == "en":
        to_english(tab)
    assert page.locator("#reply-language b").inner_text() == words["language"]
    assert page.locator("#reply-text").get_attribute("maxlength") == "1000"
    assert page.locator("#reply-text").get_attribute("lang") == "ru"
    page.fill("#reply-text", "   ")  # spaces pass the browser's `required`; the server refuses
    assert press(tab, "#save-reply").status == 400
    assert page.locator("#reply-error").inner_text().startswith(words["empty"])
    page.fill("#reply-text", REPLY)
    press(tab, "#save-reply")
    assert page.locator("p.flash").inner_text() == words["saved"]
    assert page.locator("#replies blockquote.reply").inner_text() == REPLY  # its lines kept
    assert page.locator("#replies .heard").inner_text() == words["not-heard"]
    assert page.locator("#replies b").inner_text() == "olena"
    tab.shot(f"reply-{locale}")
    with site.db.session() as s:
        (reply,) = s.scalars(select(Reply)).all()
        assert reply.text is not None and "Оператор".encode() not in reply.text
    heard_at = site.clock() + timedelta(minutes=3)
    mark_heard(site.db, reply.id, heard_at)
    page.reload()
    local = heard_at.astimezone(ZoneInfo("Europe/Kyiv")).strftime("%d.%m.%Y %H:%M")  # olena's zone
    assert page.locator("#replies .heard").inner_text() == words["heard"] + local
