"""The operator console on a phone: every page at 360, 390 and 400 px wide (and still on a
tablet's 840 and a laptop's 1280), in Ukrainian and English, in Debian's Chromium (the fixtures of
tests/test_console_browser.py).

On each page and width: the page does not scroll sideways (`scrollWidth <= innerWidth`), no
element sticks out to the right (the outermost offenders are named), the top bar spans the
width, and on a phone every button, field and menu link is at least 40 px high (a finger, not a
mouse). A full-page screenshot of each goes to test-output/console/PAGE-LOCALE-WIDTH.png.

The case shown is a heavy one (a long transcript with unsure words, notes, callback attempts, a
long timeline, a long time zone and engine name), so the test sees what an operator sees.
Each page is loaded once per language and measured at every width by resizing the window.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyotp

import tests.test_console_browser as browser_tests
from ivr.console.auth import reset_second_factor
from ivr.reasons import Said, said
from ivr.storage import AuditEntry, CallbackAttempt, Case, Note, Operator
from tests.test_console import new_case
from tests.test_console_browser import Site, Tab, give_password, press, submit

# The browser tests' fixtures, reused: the app over HTTP with four operators, and a fresh page.
site, tab = browser_tests.site, browser_tests.tab

PHONES = (360, 390, 400)
WIDTHS = (*PHONES, 840, 1280)  # and a tablet's, and a laptop's

# What the page measures: its width, the top bar, the outermost elements that stick out to the
# right (an element inside one that already sticks out is not named again), and the controls a
# finger cannot hit.
MEASURE = """(phone) => {
    const width = window.innerWidth;
    const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
        + [...e.classList].map(c => '.' + c).join('')
        + ' "' + (e.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 40) + '"';
    const sticks = e => {
        const r = e.getBoundingClientRect();
        return (r.width > 0 || r.height > 0) && r.right > width + 1;
    };
    // Hidden from the eye for screen readers only (the stacked tables' header row): a 1 px box.
    const unseen = e => {
        for (let a = e; a; a = a.parentElement) {
            const r = a.getBoundingClientRect();
            if (r.width <= 1 && r.height <= 1 && getComputedStyle(a).overflow !== 'visible') return true;
        }
        return false;
    };
    const out = [];
    for (const e of document.body.querySelectorAll('*')) {
        if (sticks(e) && !(e.parentElement && sticks(e.parentElement)) && !unseen(e)) {
            out.push(name(e) + ' to ' + Math.round(e.getBoundingClientRect().right) + ' px');
        }
    }
    const small = [];
    if (phone) {
        const controls = 'button, select, textarea, input:not([type=hidden]):not([type=checkbox]), '
            + 'header nav a, header a.brand, summary';
        for (const e of document.querySelectorAll(controls)) {
            const r = e.getBoundingClientRect();
            if (r.width > 0 && r.height < 39.5) {
                small.push(name(e) + ' ' + Math.round(r.height) + ' px high');
            }
        }
    }
    const top = document.querySelector('header.top').getBoundingClientRect();
    return {scroll: document.documentElement.scrollWidth, width, out, small,
            header: [top.left, top.right]};
}"""


def fits(tab: Tab, page: str, locale: str) -> list[str]:
    """Measure the open page at every width and screenshot it; what is wrong, one line each."""
    problems = []
    tab.page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    for width in WIDTHS:
        tab.page.set_viewport_size({"width": width, "height": 800})
        found: dict[str, Any] = tab.page.evaluate(MEASURE, width in PHONES)
        where = f"{page}-{locale}-{width}"
        tab.shot(where)
        if found["scroll"] > found["width"]:
            problems.append(f"{where}: the page is {found['scroll']} px wide in a {width} px window")
        problems += [f"{where}: {e} sticks out" for e in found["out"][:6]]
        left, right = found["header"]
        if left > 0.5 or right < max(width, found["scroll"]) - 0.5:  # stops short of the page's edge
            problems.append(f"{where}: the top bar spans {left:.0f}-{right:.0f} px of {found['scroll']}")
        problems += [f"{where}: {e}, too small to tap" for e in found["small"][:6]]
    tab.page.set_viewport_size({"width": 1280, "height": 800})
    return problems


def visit(tab: Tab, url: str, status: int = 200) -> None:
    response = tab.page.goto(url)
    assert response is not None and response.status == status, url


TRANSCRIPT = (
    "Добрий день. Я телефоную з Джанкоя, мій син зараз на позиціях під Роботиним, і він хоче "
    "здатися, але не знає, як це зробити безпечно. Він боїться, що його командир дізнається. "
    "Він казав, що у них забирають телефони щовечора, тож дзвонити він може лише вранці, "
    "приблизно з шостої до сьомої. Наш номер телефону ви бачите, але краще писати в Telegram: "
    "@ochen_dlinnoe_imya_polzovatelya_bez_probelov_1234567890. Будь ласка, передзвоніть мені "
    "вдень, увечері вдома чоловік, він не знає, що я дзвоню. Дякую вам. "
) * 3


def fill(site: Site, case_id: int, operator: str) -> None:
    """Make a case what a busy night leaves: a long transcript with unsure words and flags,
    notes, three callback attempts, a long timeline, a long time zone and engine name."""
    words = [[f" {w}" if i else w, 0.3 if i % 7 == 3 else 0.92] for i, w in enumerate(TRANSCRIPT.split())]
    with site.db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.transcript = site.vault.seal(case, "transcript", TRANSCRIPT.encode())
        case.transcript_words = site.vault.seal(case, "transcript_words", json.dumps(words).encode())
        case.transcript_engine = "faster-whisper:large-v3-turbo/int8_float16@cpu-avx512"
        case.language, case.transcript_language, case.transcript_confidence = "ru", "uk", 0.71
        case.transcript_flags = "stock-phrase,repeated"
        case.consent, case.caller_tz = "day", "America/Argentina/ComodRivadavia"
        why = Said("route-region", {"region": "crimea", "language": "ru", "candidates": 2, "on_duty": 2,
                                    "with_room": 2, "name": operator, "open": 0},
                   ((" → ", "route-candidates"), (", ", "route-on-duty"), (", ", "route-with-room"),
                    ("; ", "route-chose-tie"), ("; ", "route-urgent")))
        case.route_reason, case.route_reason_data = why.english(), why.dumps()
        case.operator_id = site.ids[operator]
        case.callback_status, case.callback_attempts = "scheduled", 3
        case.created_at = site.clock.at - timedelta(hours=6)  # last night's message
        at = case.created_at + timedelta(minutes=25)
        for i, outcome in enumerate(("operator-no-answer", "no-answer", "answered")):
            s.add(CallbackAttempt(case_id=case_id, operator_id=site.ids[operator],
                                  call_sid=f"CA{case_id:04d}{i:028d}", outcome=outcome,
                                  started_at=at + timedelta(minutes=40 * i),
                                  seconds=312 if outcome == "answered" else None))
        texts = ("Мати телефонувала вдруге. Просить дзвонити лише вдень.",
                 "Передала контакти; див. https://example.org/a/very/long/link/without/any/spaces/"
                 "at/all/0123456789abcdef0123456789abcdef",
                 "Syn-perebuvaye-na-pozytsiyakh-pid-Robotynym-bez-zvyazku-do-ranku " * 4)
        for i, text in enumerate(texts):
            note = Note(case_id=case_id, operator_id=site.ids[operator], at=at + timedelta(minutes=10 * i))
            s.add(note)
            s.flush()
            note.text = site.vault.seal_note(case, note, text)
        for i in range(12):
            s.add(AuditEntry(actor=f"operator:{site.ids[operator]}", action=("callback-started", "note-added",
                             "transcript-read")[i % 3], case_id=case_id, at=at + timedelta(minutes=7 * i),
                             **said("outside-window", window="daytime 09:00-21:00 "
                                    "America/Argentina/ComodRivadavia", consent="day",
                                    zone="America/Argentina/ComodRivadavia").entry()))


def heavy_site(site: Site, crimea_cases: int = 6) -> None:
    """More cases in Crimea (a queue of several rows), the Crimea case filled, an operator in a
    long time zone (the operators page)."""
    for n in range(3, 3 + crimea_cases):
        new_case(site.db, site.vault, n, "crimea", f"+7978123450{n}")
    fill(site, site.cases["crimea"], "olena")
    with site.db.session() as s:
        petro = s.get(Operator, site.ids["petro"])
        assert petro is not None
        petro.timezone = "America/Argentina/ComodRivadavia"
        petro.hours = "mon-fri 09:00-18:00; sat 10:00-14:00"


def stacked_queue_is_still_a_table(tab: Tab) -> None:
    """Cards to the eye, a table to a screen reader: Chromium's accessibility tree still has
    the table's rows, its column headers and each cell under its header."""
    page = tab.page
    page.set_viewport_size({"width": 390, "height": 800})
    rows = page.locator("table.queue tbody tr").count()
    first = page.locator("table.queue tbody tr").first
    assert first.evaluate("e => getComputedStyle(e).display") == "block"  # a card indeed
    table = page.get_by_role("table")
    assert table.get_by_role("row").count() == rows + 1
    columns = page.locator("table.queue thead th").count()  # the caller's answers among them
    assert columns == 10 and table.get_by_role("columnheader").count() == columns
    assert table.get_by_role("cell").count() == rows * columns
    page.set_viewport_size({"width": 1280, "height": 800})


def switch(tab: Tab, locale: str) -> None:
    press(tab, f"header button[name=locale][value={locale}]")


def test_an_operators_pages_fit_a_phone_in_both_languages(tab: Tab) -> None:
    site, page = tab.site, tab.page
    heavy_site(site)
    problems = []
    visit(tab, "/console/login")
    problems += fits(tab, "login", "uk")
    give_password(tab, "olena")
    page.wait_for_url("**/console/login/code")
    problems += fits(tab, "code", "uk")
    page.fill("input[name=code]", pyotp.TOTP(site.secrets["olena"]).at(site.clock.tick()))
    submit(tab)
    page.wait_for_url("**/console/")
    case = site.cases["crimea"]
    for locale in ("uk", "en"):
        if locale != "uk":
            switch(tab, locale)
        visit(tab, "/console/")
        assert page.locator("table.queue tbody tr").count() >= 5
        problems += fits(tab, "queue", locale)
        stacked_queue_is_still_a_table(tab)
        visit(tab, f"/console/cases/{case}")
        assert page.locator("#transcript mark.unsure").count() > 10
        assert page.locator("ul.notes li").count() == 3
        problems += fits(tab, "case", locale)
        visit(tab, "/console/dashboard")
        problems += fits(tab, "dashboard", locale)
        visit(tab, f"/console/cases/{site.cases['occupied']}", 404)
        problems += fits(tab, "not-found", locale)
    # Signed out and in again: the code page in her language (English now).
    page.click("#sign-out")
    page.wait_for_url("**/console/login")
    give_password(tab, "olena")
    page.wait_for_url("**/console/login/code")
    problems += fits(tab, "code", "en")
    assert not problems, "\n".join(problems)


def test_an_admins_pages_fit_a_phone_in_both_languages(tab: Tab) -> None:
    site, page = tab.site, tab.page
    heavy_site(site, crimea_cases=2)
    with site.db.session() as s:
        adam = s.get(Operator, site.ids["adam"])
        assert adam is not None
        adam.locale = "en"
    reset_second_factor(site.db, site.ids["adam"])  # a new phone: the QR code page first
    problems = []
    give_password(tab, "adam")
    page.wait_for_url("**/console/enroll")
    problems += fits(tab, "enroll", "en")
    secret = page.locator("code#totp-secret").inner_text()
    page.fill("input[name=code]", pyotp.TOTP(secret).at(site.clock.tick()))
    submit(tab)
    page.wait_for_url("**/console/")
    case = site.cases["crimea"]
    for locale in ("en", "uk"):
        if locale != "en":
            switch(tab, locale)
        for name, url in (("queue", "/console/"), ("case", f"/console/cases/{case}"),
                          ("dashboard", "/console/dashboard"), ("operators", "/console/operators"),
                          ("audit", "/console/audit"), ("flows", "/console/flows")):
            visit(tab, url)
            if name == "operators":
                assert page.locator("tr.edit form").count() == len(site.ids)  # an admin edits all
            if name == "flows":
                assert page.locator(".graph svg").count() >= 1
            problems += fits(tab, f"{name}-admin" if name in ("queue", "case", "dashboard") else name, locale)
    assert not problems, "\n".join(problems)
