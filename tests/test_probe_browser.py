"""The probe flag in a real browser (the fixtures of tests/test_console_browser.py): an
operator marks a case, it leaves her queue, a supervisor finds it among the possible probes
and confirms it; in Ukrainian and in English."""

from __future__ import annotations

import pytest

from ivr.storage import Case
from tests import test_console_browser
from tests.test_console_browser import Tab, press, sign_in, to_english

site, tab = test_console_browser.site, test_console_browser.tab  # the fixtures

WORDS = {
    "uk": {"went": "Справу #{case} позначено як можливе зондування й передано супервізорам: у вашій "
                   "черзі її більше немає.",
           "no-tick": "Поставте позначку: справу буде закрито остаточно. Справу не закрито.",
           "confirmed": "Зондування підтверджено: справу закрито.",
           "state": "Зондування підтверджено: справу закрито остаточно",
           "probes": "Можливі зондування"},
    "en": {"went": "Case #{case} was marked as a possible probe and went to the supervisors: it is "
                   "no longer in your queue.",
           "no-tick": "Tick the box: the case will be closed for good. It was not closed.",
           "confirmed": "Confirmed as a probe: the case is closed.",
           "state": "Confirmed as a probe: the case is closed for good",
           "probes": "Possible probes"},
}
REASON = "asked where the operators sit"


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_an_operator_flags_a_case_and_a_supervisor_confirms_it(tab: Tab, locale: str) -> None:
    page, words, case = tab.page, WORDS[locale], tab.site.cases["crimea"]
    sign_in(tab, "olena")
    page.goto(f"/console/cases/{case}")
    if locale == "en":
        to_english(tab)
    page.fill("#flag-reason", REASON)
    press(tab, "#flag-case")
    assert page.url.endswith("/console/")
    assert page.locator("p.flash").inner_text() == words["went"].format(case=case)
    assert page.locator(f'a[href="/console/cases/{case}"]').count() == 0  # out of her queue
    tab.shot(f"probe-flagged-{locale}")
    assert page.goto(f"/console/cases/{case}").status == 404  # type: ignore[union-attr]

    page.context.clear_cookies()
    sign_in(tab, "sofia")
    if locale == "en":
        to_english(tab)
    assert page.locator("#count-flagged").inner_text() == "1"
    with page.expect_navigation():
        page.click(f"text={words['probes']}")
    assert page.url.endswith("show=flagged")
    with page.expect_navigation():
        page.click(f'a[href="/console/cases/{case}"]')
    assert page.locator("#flag-why").inner_text() == REASON
    assert page.locator("#flagged-by").inner_text() == "olena"
    assert page.locator("#call-back").count() == 0
    tab.shot(f"probe-to-decide-{locale}")
    assert press(tab, "#confirm-probe").status == 400  # the box is not ticked
    assert page.locator("#action-error").inner_text() == words["no-tick"]
    page.check("#confirm-tick")
    press(tab, "#confirm-probe")
    assert page.locator("p.flash").inner_text() == words["confirmed"]
    assert page.locator("#flag-state").inner_text().startswith(words["state"])
    assert page.locator("#reopen-case").count() == 0
    tab.shot(f"probe-confirmed-{locale}")
    with tab.site.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and (found.status, found.flag) == ("closed", "confirmed")
