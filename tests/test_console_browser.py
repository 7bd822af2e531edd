"""The operator console in a real browser: Debian's Chromium driven by Playwright, the real app
served over real HTTP on 127.0.0.1 (werkzeug, threaded), the Twilio REST stand-in taking the
callbacks, SQLite. Signing in with a password and a TOTP code (and enrolling one by QR code),
the queue, a case and its recording, the callback, region isolation, CSRF, lock-out and
signing out, with no Content Security Policy violation on any page.

Chromium comes from Debian (tests/browser.py installs it when missing; never a download), one
for the whole run (the `browser` fixture in tests/conftest.py). Screenshots of the main pages go
to test-output/console/ (gitignored); tests/test_console_phone.py adds each page at phone widths.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response
from sqlalchemy import select
from werkzeug.serving import WSGIRequestHandler, make_server

from ivr import create_app
from ivr.config import Settings
from ivr.console.auth import FREE_TRIES, hash_password, reset_second_factor
from ivr.operators import add_operator
from ivr.standin import TwilioApi
from ivr.storage import AuditEntry, Case, Database, Note, Operator, Vault
from tests.browser import SHOTS
from tests.conftest import ROOT, TOKEN, create_schema
from tests.servers import free_port
from tests.test_console import PASSWORD, enroll, new_case

HOTLINE = "+15005550006"  # settings.hotline_number in conftest
PEOPLE = {"olena": ("crimea", "operator"), "petro": ("occupied", "operator"),
          "sofia": ("elsewhere", "supervisor"), "adam": ("elsewhere", "admin")}


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)  # argon2: a tenth of a second or more each time


class Clock:
    """The app's time: now when the test starts (the cases are made now, so their ages and the
    dashboard read true), moved on a TOTP step (30 s) before each code is given, since a code
    is good once per step."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def tick(self) -> datetime:
        self.at += timedelta(seconds=30)
        return self.at


class Quiet(WSGIRequestHandler):
    """No line per request in the test's output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Site:
    url: str
    db: Database
    vault: Vault
    api: TwilioApi
    clock: Clock
    ids: dict[str, int]
    numbers: dict[str, str]
    secrets: dict[str, str]
    cases: dict[str, int]


@dataclass
class Tab:
    """A page of a fresh browser context (no cookies), and what its console said."""

    page: Page
    site: Site
    csp: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def site(settings: Settings) -> Iterator[Site]:
    """The app over HTTP on a free loopback port, four operators (Crimea, the occupied region,
    a supervisor, an admin) with passwords and enrolled codes, and a case in each region."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shutil.copy(ROOT / "flows" / "regions.yaml", settings.flows_dir / "regions.yaml")
    with TwilioApi(settings.twilio_account_sid, TOKEN, numbers=(HOTLINE,)) as api:
        s = settings.replace(public_base_url=url, twilio_api_base=api.base_url)
        create_schema(s.database_url, s.keystore_url)
        clock = Clock()
        app = create_app(s, clock=clock)
        db, vault = app.extensions["ivr.db"], app.extensions["ivr.vault"]
        ids, numbers, secrets_ = {}, {}, {}
        for i, (name, (region, role)) in enumerate(PEOPLE.items()):
            numbers[name] = f"+38050111000{i}"
            ids[name] = add_operator(db, vault, name=name, number=numbers[name], languages="ru,uk",
                                     regions=region, timezone="Europe/Kyiv", hours="always", role=role)
            with db.session() as session:  # what set_password stores, hashed once per run
                found = session.get(Operator, ids[name])
                assert found is not None
                found.password_hash = password_hash()
            secrets_[name] = enroll(db, vault, ids[name])
        cases = {"crimea": new_case(db, vault, 1, "crimea", "+79781234567"),
                 "occupied": new_case(db, vault, 2, "occupied", "+79491234567")}
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="console-http", daemon=True)
        thread.start()
        try:
            yield Site(url, db, vault, api, clock, ids, numbers, secrets_, cases)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            db.engine.dispose()


@pytest.fixture
def tab(browser: Browser, site: Site) -> Iterator[Tab]:
    context = browser.new_context(base_url=site.url, locale="uk-UA", viewport={"width": 1280, "height": 800})
    found = Tab(context.new_page(), site)

    def heard(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            found.csp.append(message.text)

    found.page.on("console", heard)
    found.page.on("pageerror", lambda exc: found.csp.append(f"page error: {exc}"))
    yield found
    context.close()
    if found.csp:
        pytest.fail("the browser reported:\n" + "\n".join(found.csp))


def submit(tab: Tab) -> None:
    """Press the submit button of the page's (only) form in <main>."""
    tab.page.locator("main form button[type=submit]").click()


def give_password(tab: Tab, name: str, password: str = PASSWORD) -> None:
    page = tab.page
    page.goto("/console/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    submit(tab)


def sign_in(tab: Tab, name: str) -> None:
    give_password(tab, name)
    tab.page.wait_for_url("**/console/login/code")
    tab.page.fill("input[name=code]", pyotp.TOTP(tab.site.secrets[name]).at(tab.site.clock.tick()))
    submit(tab)
    tab.page.wait_for_url("**/console/")


def press(tab: Tab, selector: str) -> Response:
    """Click a form's button and wait for the page it leads to, often at the same URL (a POST
    answered by a redirect back), so waiting for a URL would not do."""
    with tab.page.expect_navigation() as went:
        tab.page.click(selector)
    response = went.value
    assert response is not None
    return response


def path(tab: Tab, template: str) -> str:
    return template.format(crimea=tab.site.cases["crimea"], occupied=tab.site.cases["occupied"])


# --- signing in ---------------------------------------------------------------------------------


def test_sign_in_with_password_and_code_then_the_queue_with_counts(tab: Tab) -> None:
    page = tab.page
    page.goto("/console/")
    assert page.url.endswith("/console/login")  # nobody signed in yet
    tab.shot("login")
    give_password(tab, "olena")
    page.wait_for_url("**/console/login/code")
    tab.shot("code")
    page.fill("input[name=code]", "000000")
    submit(tab)
    assert "неправильний код" in page.locator("p.error").inner_text()
    page.fill("input[name=code]", pyotp.TOTP(tab.site.secrets["olena"]).at(tab.site.clock.tick()))
    submit(tab)
    page.wait_for_url("**/console/")
    assert page.locator("header .who").inner_text().startswith("olena")
    crimea, occupied = tab.site.cases["crimea"], tab.site.cases["occupied"]
    assert page.locator(f'a[href="/console/cases/{crimea}"]').inner_text() == f"#{crimea}"
    assert page.locator(f'a[href="/console/cases/{occupied}"]').count() == 0
    assert page.locator("#count-regions").inner_text() == "1"
    assert page.locator("#count-unassigned").inner_text() == "1"
    assert page.locator("#count-mine").inner_text() == "0"
    assert page.locator("table.queue tbody tr").count() == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "console")
    assert cookie.get("httpOnly") and cookie.get("sameSite") == "Strict" and not cookie.get("secure")
    tab.shot("queue")


def test_first_sign_in_enrolls_the_code_by_qr(tab: Tab) -> None:
    site, page = tab.site, tab.page
    reset_second_factor(site.db, site.ids["petro"])
    give_password(tab, "petro")
    page.wait_for_url("**/console/enroll")
    qr = page.locator(".qr svg")
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 200 and box["height"] >= 200  # styled by console.css
    assert qr.locator("path").count() >= 1
    secret = page.locator("code#totp-secret").inner_text()
    assert len(secret) >= 16 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    tab.shot("enroll")
    page.fill("input[name=code]", pyotp.TOTP(secret).at(site.clock.tick()))
    submit(tab)
    page.wait_for_url("**/console/")
    assert page.locator(f'a[href="/console/cases/{site.cases["occupied"]}"]').count() == 1
    # The new secret works from now on, in a browser of its own.
    page.context.clear_cookies()
    site.secrets["petro"] = secret
    sign_in(tab, "petro")


def test_repeated_wrong_passwords_slow_down_and_never_lock_the_account(tab: Tab) -> None:
    page = tab.page
    for _ in range(FREE_TRIES):
        give_password(tab, "olena", "not the password at all")
        assert page.locator("p.error").inner_text() == "неправильне ім'я або пароль"
    give_password(tab, "olena")
    message = page.locator("p.error").inner_text()
    assert "зачекайте 1 с і спробуйте знову" in message, message
    assert page.url.endswith("/console/login")
    tab.shot("throttled")
    tab.site.clock.tick()  # half a minute later the wait is over: the account was never locked
    sign_in(tab, "olena")


def test_sign_out_ends_the_session(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "olena")
    page.click("#sign-out")
    page.wait_for_url("**/console/login")
    page.goto("/console/")
    assert page.url.endswith("/console/login")
    assert page.request.get("/console/api/cases").status == 401


# --- the queue and a case -----------------------------------------------------------------------


def test_a_case_opens_and_its_recording_plays(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "olena")
    case = tab.site.cases["crimea"]
    page.click(f'a[href="/console/cases/{case}"]')
    page.wait_for_url(f"**/console/cases/{case}")
    assert page.locator("#transcript").inner_text().startswith("words of case 1")
    assert "79781234567" not in page.content()  # the caller's number is never shown
    with page.expect_response(lambda r: r.url.endswith(f"/cases/{case}/audio")) as heard:
        state = page.evaluate("""async () => {
            const audio = document.getElementById('recording');
            const ready = new Promise((resolve, reject) => {
                audio.addEventListener('canplay', resolve, {once: true});
                audio.addEventListener('error', () => reject(new Error('audio error ' + audio.error.code)),
                                       {once: true});
            });
            await audio.play();
            await ready;
            const start = audio.currentTime;
            await new Promise(resolve => setTimeout(resolve, 300));
            const played = {ready: audio.readyState, duration: audio.duration,
                            moved: audio.currentTime > start, paused: audio.paused};
            audio.pause();
            const seeked = new Promise(resolve => audio.addEventListener('seeked', resolve, {once: true}));
            audio.currentTime = 0.75;  // an operator going back to a word
            await seeked;
            return {...played, at: audio.currentTime,
                    seekable: audio.seekable.length ? audio.seekable.end(0) : 0};
        }""")
    response = heard.value  # Chromium asks for a byte range (bytes=0-): it can seek then
    assert response.status == 206 and response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["cache-control"] == "no-store"
    whole = page.request.get(f"/console/cases/{case}/audio")
    assert whole.status == 200 and whole.headers["content-type"] == "audio/wav"
    assert whole.headers["cache-control"] == "no-store" and whole.body()[:4] == b"RIFF"
    assert state["ready"] >= 2 and abs(state["duration"] - 1.0) < 0.05, state
    assert state["moved"] and not state["paused"], state
    assert abs(state["seekable"] - 1.0) < 0.05 and abs(state["at"] - 0.75) < 0.01, state
    # Playing, seeking and the whole file again: several requests, one listen, one entry.
    with tab.site.db.session() as s:
        played = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case,
                                                    AuditEntry.action == "audio-played")).all()
    assert len(played) == 1
    tab.shot("case")


def test_call_back_rings_the_operator_from_the_hotline(tab: Tab) -> None:
    page, site = tab.page, tab.site
    sign_in(tab, "olena")
    case = site.cases["crimea"]
    page.goto(f"/console/cases/{case}")
    assert not site.api.calls
    assert press(tab, "#call-back").url.endswith(f"/console/cases/{case}")
    assert page.locator("p.flash").inner_text() == "Телефонуємо на ваш телефон."
    assert page.locator("#operator").inner_text() == "olena"  # she took the case to call back
    assert page.locator("#callback-status").inner_text().startswith("дзвонимо")
    [call] = site.api.calls
    assert call.params["To"] == site.numbers["olena"] and call.params["From"] == HOTLINE
    assert call.params["Url"].startswith(f"{site.url}/twilio/callback/answer?a=")
    assert "79781234567" not in str(call.params)  # the caller is bridged later, never named here


def test_an_operator_cannot_open_a_case_of_another_region(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "olena")
    response = page.goto(path(tab, "/console/cases/{occupied}"))
    assert response is not None and response.status == 404
    assert page.locator("main h1").inner_text() == "Не знайдено"
    assert "words of case 2" not in page.content()
    tab.shot("not-found")
    assert page.request.get(path(tab, "/console/cases/{occupied}/audio")).status == 404
    assert page.request.get(path(tab, "/console/api/cases/{occupied}")).status == 404
    response = page.goto(path(tab, "/console/cases/{crimea}"))  # her own region still opens
    assert response is not None and response.status == 200


def test_forms_without_the_csrf_token_are_refused(tab: Tab) -> None:
    page, site = tab.page, tab.site
    sign_in(tab, "olena")
    case = site.cases["crimea"]
    refused = page.request.post(f"/console/cases/{case}/note", form={"text": "no token"})
    assert refused.status == 400
    page.goto(f"/console/cases/{case}")
    page.fill("textarea[name=text]", "sent with the token")
    assert press(tab, "#add-note").url.endswith(f"/console/cases/{case}")
    assert page.locator("p.flash").inner_text() == "Збережено."
    page.evaluate("document.querySelector('form[action$=\"/note\"] input[name=csrf_token]').remove()")
    page.fill("textarea[name=text]", "sent without the token")
    assert press(tab, "#add-note").status == 400
    assert page.locator("main h1").inner_text() == "Заборонено"
    with site.db.session() as s:
        assert len(s.scalars(select(Note).where(Note.case_id == case)).all()) == 1  # the first only


def test_the_language_changes_on_the_page_it_is_changed_on(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "olena")
    case = path(tab, "/console/cases/{crimea}")
    page.goto(case)
    assert press(tab, "header button[name=locale][value=en]").url.endswith(case)
    assert page.locator("main h1").inner_text().startswith("Case #")
    assert page.locator("header nav").inner_text().split() == ["Queue", "Dashboard"]
    token = page.locator("header input[name=csrf_token]").first.get_attribute("value")
    assert token
    for elsewhere in ("https://example.org/console/", "//example.org/console/", "/\\example.org/"):
        went = page.request.post("/console/language", form={"locale": "en", "next": elsewhere,
                                                             "csrf_token": token}, max_redirects=0)
        assert went.status == 302 and went.headers["location"] == "/console/", elsewhere


def test_a_case_reads_in_one_language_and_the_readers_time(tab: Tab) -> None:
    """State, reason, timeline and times in Ukrainian, then in English: the same case, the same
    facts, no word of the other language, and the time in Kyiv (the operator's zone)."""
    from zoneinfo import ZoneInfo

    from ivr.operators import assign_case
    from ivr.storage import Case

    page, site = tab.page, tab.site
    case = site.cases["crimea"]
    assign_case(site.db, case, site.clock())
    with site.db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        received = found.created_at.astimezone(ZoneInfo("Europe/Kyiv")).strftime("%d.%m.%Y %H:%M")
    sign_in(tab, "olena")
    page.goto(f"/console/cases/{case}")
    assert page.locator("#case-state").inner_text() == "призначена: olena"
    assert page.locator("#route-reason").inner_text().startswith("регіон: Крим, мова: російська → ")
    assert page.locator("#received").inner_text() == received
    timeline = page.locator("ol.timeline").inner_text()
    assert "справу створено — система" in timeline and "призначено операторові: регіон: Крим" in timeline
    assert "case-created" not in timeline and "system" not in timeline
    assert "Europe/Kyiv" in page.locator("#time-zone").inner_text()
    tab.shot("case-uk")
    press(tab, "header button[name=locale][value=en]")
    assert page.locator("#case-state").inner_text() == "assigned to olena"
    assert page.locator("#route-reason").inner_text().startswith("region Crimea, language Russian → ")
    assert page.locator("#received").inner_text() == received
    timeline = page.locator("ol.timeline").inner_text()
    assert "case created — system" in timeline and "транскрипц" not in timeline
    assert "розшифровку" not in timeline and "transcript read, 2 times, last" in timeline
    assert page.locator("#time-zone").inner_text().startswith("Times are shown in the time zone Europe/Kyiv")
    tab.shot("case-en")


# --- the other pages ----------------------------------------------------------------------------


def test_the_dashboard_draws_its_charts(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "olena")
    page.click("header nav a[href='/console/dashboard']")
    page.wait_for_url("**/console/dashboard")
    for chart in ("hours", "days", "regions", "languages"):
        box = page.locator(f"#chart-{chart}").bounding_box()
        assert box is not None and box["height"] > 100, chart
    assert page.locator("#chart-regions rect").count() == 1  # her region only
    tab.shot("dashboard")


def test_a_supervisor_sees_the_operators_and_an_admin_the_flows(tab: Tab) -> None:
    page = tab.page
    sign_in(tab, "sofia")
    page.click("header nav a[href='/console/operators']")
    page.wait_for_url("**/console/operators")
    assert page.locator("main tbody tr[id^=operator-]").count() == len(PEOPLE)
    # Her own row and the operators' can be changed; the admin's cannot, nor any phone number.
    assert page.locator(f"form[action='/console/operators/{tab.site.ids['adam']}']").count() == 0
    assert page.locator(f"form[action='/console/operators/{tab.site.ids['olena']}']").count() == 1
    assert page.locator("tr.edit input[name=number]").count() == 0
    tab.shot("operators")
    page.goto("/console/audit")
    assert page.locator("main tbody tr").count() > 0
    page.goto("/console/flows")
    assert page.locator("main h1").inner_text() == "Не знайдено"  # admins only
    page.context.clear_cookies()
    sign_in(tab, "adam")
    page.click("header nav a[href='/console/flows']")
    page.wait_for_url("**/console/flows")
    graph = page.locator(".graph svg").first
    box = graph.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50  # drawn by Graphviz
    assert page.locator("#flow-problems li").count() >= 1
    tab.shot("flows")


def test_the_pages_name_no_inline_script_or_style(tab: Tab) -> None:
    """What the CSP relies on, in every page the admin sees (the console listener checks the
    browser agrees)."""
    page = tab.page
    sign_in(tab, "adam")
    for url in ("/console/", path(tab, "/console/cases/{crimea}"), "/console/dashboard",
                "/console/operators", "/console/audit", "/console/flows"):
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        found = page.evaluate("""() => ({
            scripts: document.scripts.length,
            styled: document.querySelectorAll('[style]').length,
            styles: document.querySelectorAll('style').length,
            handlers: [...document.querySelectorAll('*')].filter(
                e => [...e.attributes].some(a => a.name.startsWith('on'))).length})""")
        assert found == {"scripts": 0, "styled": 0, "styles": 0, "handlers": 0}, (url, found)



# --- actions that cannot go wrong by one click, and the story of a case ---------------------------


def to_english(tab: Tab) -> None:
    press(tab, "header button[name=locale][value=en]")


STORY = {
    "uk": ["Обрано мову: українська.", "Тема: призов або мобілізація.",
           "Спроба з'єднатися з оператором: операторам дзвонили, ніхто не відповів (зайнято).",
           "Залишено повідомлення тривалістю 42 с."],
    "en": ["Chose the language: Ukrainian.", "Topic: called up or mobilised.",
           "Asked for an operator: operators were rung, nobody answered (busy).",
           "Left a message of 42 s."],
}
WORDS: dict[str, dict[str, str]] = {  # what the pages say, in each language
    "uk": {"no-confirm": "Поставте позначку: дані справи буде знищено. Справу не закрито.",
           "closed": "Справу закрито.", "reopened": "Справу знову відкрито.",
           "closed-note": "Закрита: її дані буде знищено через 30 дн. після закриття.",
           "taken": "Тепер це ваша справа.", "take": "Взяти справу",
           "no-outcome": "Спершу оберіть результат: нічого не збережено.",
           "hidden": "1 — у регіонах, які не ваші"},
    "en": {"no-confirm": "Tick the box: the case's data will be destroyed. It was not closed.",
           "closed": "The case is closed.", "reopened": "The case is open again.",
           "closed-note": "Closed: its data is destroyed 30 days after closing.",
           "taken": "The case is yours now.", "take": "Take this case",
           "no-outcome": "Choose an outcome first: nothing was saved.",
           "hidden": "1 in regions that are not yours"},
}


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_closing_needs_a_reason_and_the_confirmation_and_can_be_undone(tab: Tab, locale: str) -> None:
    page, words = tab.page, WORDS[locale]
    sign_in(tab, "olena")
    case = tab.site.cases["crimea"]
    page.goto(f"/console/cases/{case}")
    if locale == "en":
        to_english(tab)
    assert "30" in page.locator("label.confirm").inner_text()  # the days closing starts
    assert press(tab, "#set-outcome").status == 400  # the outcome list starts empty
    assert page.locator("#action-error").inner_text() == words["no-outcome"]
    page.fill("#close-reason", "helped")
    assert press(tab, "#close-case").status == 400  # the box is not ticked
    assert page.locator("#action-error").inner_text() == words["no-confirm"]
    assert page.locator("#close-reason").input_value() == "helped"  # kept for the second try
    tab.shot(f"close-refused-{locale}")
    page.check("#close-confirm")
    press(tab, "#close-case")
    assert page.locator("p.flash").inner_text() == words["closed"]
    assert page.locator("#closed-note").inner_text().startswith(words["closed-note"])
    assert page.locator("#close-case").count() == 0
    tab.shot(f"closed-{locale}")
    page.fill("#reopen-reason", "called again")
    press(tab, "#reopen-case")
    assert page.locator("p.flash").inner_text() == words["reopened"]
    assert page.locator("#operator").inner_text() == "olena"  # hers: she reopened it
    with tab.site.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.status == "routed" and found.closed_at is None


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_take_this_case_and_a_supervisor_assigns_instead_of_calling_back(tab: Tab, locale: str) -> None:
    page, site, words = tab.page, tab.site, WORDS[locale]
    sign_in(tab, "olena")
    case = site.cases["crimea"]
    page.goto(f"/console/cases/{case}")
    if locale == "en":
        to_english(tab)
    assert page.locator("#take-case").inner_text() == words["take"]
    press(tab, "#take-case")
    assert page.locator("p.flash").inner_text() == words["taken"]
    assert page.locator("#operator").inner_text() == "olena" and page.locator("#take-case").count() == 0
    tab.shot(f"taken-{locale}")
    page.context.clear_cookies()
    sign_in(tab, "sofia")
    other = site.cases["occupied"]
    page.goto(f"/console/cases/{other}")
    if locale == "en":
        to_english(tab)
    assert page.locator("#call-back").count() == 0 and page.locator("#take-case").count() == 1
    page.select_option("#assign-to", label="petro")
    press(tab, "#assign")
    assert page.locator("#operator").inner_text() == "petro"
    assert page.locator("#call-back").count() == 1 and "ivr cases" not in page.content()
    assert not site.api.calls


def story_case(site: Site, n: int, number: str, region: str, path: tuple[str, ...]) -> int:
    from ivr.engine import Caller
    from ivr.voicemail import Reported, note_recording

    sid = f"{n:032x}"
    note_recording(site.db, site.vault, Reported(
        call_sid="CA" + sid, recording_sid="RE" + sid, status="completed", duration=42, number=number,
        caller=Caller(False, "RU", region), language="uk", consent="any", timezone="Europe/Moscow",
        path=path))
    with site.db.session() as s:
        return s.scalars(select(Case.id).order_by(Case.id.desc())).first() or 0


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_the_whole_story_of_a_case_on_one_screen(tab: Tab, locale: str) -> None:
    page, site, words = tab.page, tab.site, WORDS[locale]
    number = "+79781239999"
    first = story_case(site, 21, number, "crimea", ())
    elsewhere = story_case(site, 22, number, "occupied", ())
    case = story_case(site, 23, number, "crimea",
                      ("language:uk", "topic:mobilised", "operator:unanswered"))
    sign_in(tab, "olena")
    page.goto(f"/console/cases/{case}")
    if locale == "en":
        to_english(tab)
    assert page.locator("ol.story li").all_inner_texts() == STORY[locale]
    earlier = page.locator("#earlier")
    assert earlier.locator("a").all_inner_texts() == [f"#{first}"]  # hers to open
    assert earlier.locator(f'a[href="/console/cases/{elsewhere}"]').count() == 0
    assert page.locator("#earlier-hidden").inner_text() == words["hidden"]
    tab.shot(f"story-{locale}")
    page.click(f'#earlier a[href="/console/cases/{first}"]')
    page.wait_for_url(f"**/console/cases/{first}")
    assert page.request.get(f"/console/cases/{elsewhere}").status == 404
