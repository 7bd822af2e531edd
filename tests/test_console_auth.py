"""Attacks on the console's sign-in and sessions, and the roles' rules (issue 10): nobody can
lock an operator out, wrong answers read alike in words and time, sessions end on the
server, a code is good once under a race, supervisors do not touch admins, a phone number
change is an admin's and told to the old number, and no input gives a 5xx."""

from __future__ import annotations

import html
import re
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from ivr import create_app
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.console.auth import (
    ATTACK_FAILURES,
    FREE_TRIES,
    FREE_TRIES_UNDER_ATTACK,
    MAX_WAIT,
    WINDOW_MINUTES,
    Guard,
    check_code,
    reset_second_factor,
    set_password,
    wait_after,
)
from ivr.operators import add_operator
from ivr.standin import TwilioApi
from ivr.storage import AuditEntry, ConsoleSession, Database, Operator, Vault, upgrade
from tests.conftest import BASE, ROOT, SUNDAY, TEST_KEYS, TOKEN
from tests.test_console import PASSWORD, enroll, new_case, token

HOTLINE = "+15005550006"  # settings.hotline_number in conftest
NUMBERS = {"olena": "+380501110000", "sofia": "+380501110001", "sam": "+380501110002",
           "adam": "+380501110003"}


class Clock:
    """The app's time, moved by the test (waits, idle sessions, TOTP steps)."""

    def __init__(self) -> None:
        self.at = SUNDAY

    def __call__(self) -> datetime:
        return self.at

    def move(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


@dataclass
class Crew:
    app: Flask
    db: Database
    vault: Vault
    api: TwilioApi
    clock: Clock
    settings: Settings
    ids: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    case: int = 0

    def client(self, address: str = "127.0.0.1", forwarded: str | None = None) -> FlaskClient:
        c = self.app.test_client()
        c.environ_base["REMOTE_ADDR"] = address
        if forwarded is not None:  # as the TLS proxy says it: the browser spoke https to it
            c.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded
            c.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
        return c

    def password(self, c: FlaskClient, name: str, password: str = PASSWORD) -> tuple[int, str]:
        page = c.get("/console/login").get_data(as_text=True)
        r = c.post("/console/login", data={"name": name, "password": password, "csrf_token": token(page)})
        return r.status_code, html.unescape(r.get_data(as_text=True))

    def code(self, c: FlaskClient, name: str) -> int:
        page = c.get("/console/login/code").get_data(as_text=True)
        r = c.post("/console/login/code", data={"code": pyotp.TOTP(self.secrets[name]).at(self.clock()),
                                                "csrf_token": token(page)})
        return r.status_code if r.status_code != 302 or r.headers["Location"].endswith("/console/") else 303

    def sign_in(self, name: str, address: str = "127.0.0.1", forwarded: str | None = None) -> FlaskClient:
        c = self.client(address, forwarded)
        assert self.password(c, name)[0] == 302
        self.clock.move(30)  # a code is good once per step
        assert self.code(c, name) == 302
        return c


def error_of(page: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', page)
    return found.group(1) if found else ""


def make_crew(settings: Settings, tmp_path: Path, trusted_proxies: int = 0) -> Iterator[Crew]:
    shutil.copy(ROOT / "flows" / "regions.yaml", settings.flows_dir / "regions.yaml")
    upgrade(settings.database_url, settings.keystore_url)
    api = TwilioApi(settings.twilio_account_sid, TOKEN, numbers=(HOTLINE,))
    settings = settings.replace(twilio_api_base=api.start(), trusted_proxies=trusted_proxies)
    clock = Clock()
    app = create_app(settings, clock=clock)
    crew = Crew(app, app.extensions["ivr.db"], app.extensions["ivr.vault"], api, clock, settings)
    roles = {"olena": "operator", "sofia": "supervisor", "sam": "supervisor", "adam": "admin"}
    for name, role in roles.items():
        crew.ids[name] = add_operator(crew.db, crew.vault, name=name, number=NUMBERS[name], languages="ru,uk",
                                      regions="crimea", timezone="Europe/Kyiv", hours="always", role=role)
        set_password(crew.db, crew.ids[name], PASSWORD)
        crew.secrets[name] = enroll(crew.db, crew.vault, crew.ids[name])
    crew.case = new_case(crew.db, crew.vault, 1, "crimea", "+79781234567")
    yield crew
    crew.db.engine.dispose()
    api.stop()


@pytest.fixture
def crew(settings: Settings, tmp_path: Path) -> Iterator[Crew]:
    yield from make_crew(settings, tmp_path)


@pytest.fixture
def crew_on_both(settings: Settings, tmp_path: Path, database_url: str, keystore_url: str) -> Iterator[Crew]:
    """The crew on SQLite and on PostgreSQL."""
    yield from make_crew(settings.replace(database_url=database_url, keystore_url=keystore_url), tmp_path)


@pytest.fixture
def proxied(settings: Settings, tmp_path: Path, database_url: str, keystore_url: str) -> Iterator[Crew]:
    """Behind one TLS proxy (TRUSTED_PROXIES=1), on SQLite and on PostgreSQL."""
    yield from make_crew(settings.replace(database_url=database_url, keystore_url=keystore_url), tmp_path,
                         trusted_proxies=1)


# --- throttling, not locking ------------------------------------------------------------------------


def test_an_attack_on_a_name_behind_the_proxy_does_not_keep_its_operator_out(proxied: Crew) -> None:
    """The issue's attack: every operator comes through one proxy; an attacker tries olena's
    name from one address, then from a hundred. Olena, from her own address, gets in."""
    proxy = "10.0.0.2"  # every request comes from the proxy; its X-Forwarded-For names the client
    attacker = proxied.client(proxy, "198.51.100.66, 203.0.113.9")  # a forged entry, then the real one
    said = [proxied.password(attacker, "olena", "guessing the password") for _ in range(FREE_TRIES + 30)]
    assert [s for s, _ in said[:FREE_TRIES]] == [401] * FREE_TRIES
    assert {s for s, _ in said[FREE_TRIES:]} == {429}  # not even checked: no more guesses
    # The forged first entry does not make a new client: it is the proxy's last entry that counts.
    other = proxied.client(proxy, "192.0.2.1, 203.0.113.9")
    assert proxied.password(other, "olena", "guessing again")[0] == 429
    for n in range(ATTACK_FAILURES):  # a botnet: one guess from each of many addresses
        assert proxied.password(proxied.client(proxy, f"203.0.114.{n}"), "olena", "guessing")[0] == 401
    with proxied.db.session() as s:
        attack = s.scalars(select(AuditEntry.detail).where(AuditEntry.action == "sign-in-attack")).all()
        assert attack == [f"operator {proxied.ids['olena']}: {ATTACK_FAILURES} failed sign-ins within "
                          f"{WINDOW_MINUTES} minutes"]
    # Under attack, a client that failed has fewer free tries; one that did not is not slowed.
    bot = proxied.client(proxy, "203.0.115.1")
    statuses = [proxied.password(bot, "olena", "guessing")[0] for _ in range(FREE_TRIES_UNDER_ATTACK + 1)]
    assert statuses == [401] * FREE_TRIES_UNDER_ATTACK + [429]
    olena = proxied.sign_in("olena", proxy, "198.51.100.4")  # her password and her code
    assert olena.get("/console/").status_code == 200
    # The other operators behind the same proxy were never slowed either.
    assert proxied.sign_in("sofia", proxy, "198.51.100.5").get("/console/").status_code == 200


def test_twilios_signatures_still_hold_behind_the_trusted_proxy(proxied: Crew) -> None:
    """They are checked against PUBLIC_BASE_URL, whatever the proxy says of host and scheme."""
    from tests.conftest import call_params, signed

    client = proxied.client("10.0.0.2", "54.172.60.1")
    headers = {"X-Forwarded-Host": "internal.example:8080", "X-Forwarded-Proto": "http"}
    r = signed(client, "/twilio/voice", call_params(), headers=headers)
    assert r.status_code == 200 and "<Response>" in r.get_data(as_text=True)
    forged = client.post("/twilio/voice", data=call_params(), headers={"X-Twilio-Signature": "x", **headers})
    assert forged.status_code == 403


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(crew: Crew) -> None:
    for n in range(FREE_TRIES):
        assert crew.password(crew.client("192.0.2.7", f"203.0.113.{n}"), "olena", "guess")[0] == 401
    assert crew.password(crew.client("192.0.2.7", "203.0.113.99"), "olena", PASSWORD)[0] == 429
    assert crew.password(crew.client("192.0.2.8"), "olena", PASSWORD)[0] == 302  # another client


def test_the_waits_grow_to_a_cap_and_are_forgotten(crew: Crew) -> None:
    assert [wait_after(n, FREE_TRIES) for n in range(FREE_TRIES + 11)] == \
        [0] * FREE_TRIES + [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    guard = Guard(crew.db, crew.settings.redis_url, "k")  # Redis is down: the database counts
    now = SUNDAY
    seen = []
    for _ in range(FREE_TRIES + 10):
        wait = guard.wait("olena", "192.0.2.1", now)
        seen.append(wait)
        now += timedelta(seconds=wait)
        assert guard.wait("olena", "192.0.2.1", now) == 0
        guard.failed("olena", "192.0.2.1", now)
    assert seen == [0] * FREE_TRIES + [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert guard.wait("olena", "192.0.2.1", now) == MAX_WAIT
    assert guard.wait("olena", "192.0.2.2", now) == 0  # another client
    later = now + timedelta(minutes=WINDOW_MINUTES, seconds=1)
    assert guard.wait("olena", "192.0.2.1", later) == 0
    guard.failed("olena", "192.0.2.1", later)  # counted from one again
    assert guard.wait("olena", "192.0.2.1", later) == 0


def test_a_right_password_does_not_reset_the_count_only_a_right_code_does(crew: Crew) -> None:
    """Else one who knows the password could guess codes forever, resetting between tries."""
    c = crew.client("192.0.2.3")
    for _ in range(FREE_TRIES):
        assert crew.password(c, "olena")[0] == 302
        page = c.get("/console/login/code").get_data(as_text=True)
        r = c.post("/console/login/code", data={"code": "000000", "csrf_token": token(page)})
        assert r.status_code == 401
    assert crew.password(c, "olena")[0] == 429
    crew.clock.move(30)
    assert crew.password(c, "olena")[0] == 302 and crew.code(c, "olena") == 302
    assert crew.password(crew.client("192.0.2.3"), "olena", "wrong one")[0] == 401  # counting anew


def _timed(crew: Crew, name: str, password: str, address: str) -> tuple[float, int, str]:
    c = crew.client(address)
    page = c.get("/console/login").get_data(as_text=True)
    data = {"name": name, "password": password, "csrf_token": token(page)}
    start = time.perf_counter()
    r = c.post("/console/login", data=data)
    took = time.perf_counter() - start
    return took, r.status_code, error_of(html.unescape(r.get_data(as_text=True)))


def test_wrong_unknown_disabled_and_throttled_answers_are_alike_in_words_and_time(crew: Crew) -> None:
    with crew.db.session() as s:
        sam = s.get(Operator, crew.ids["sam"])
        assert sam is not None
        sam.active = False
    cases = {"wrong password": ("olena", "not the password"), "unknown name": ("nobody", PASSWORD),
             "disabled account": ("sam", PASSWORD)}
    runs: dict[str, list[float]] = {k: [] for k in cases}
    answers: set[tuple[int, str]] = set()
    for n in range(7):  # interleaved, each from an address of its own (no throttling here)
        for i, (what, (name, password)) in enumerate(cases.items()):
            took, status, said = _timed(crew, name, password, f"192.0.2.{n * 3 + i + 1}")
            runs[what].append(took)
            answers.add((status, said))
    assert answers == {(401, "неправильне ім'я або пароль")}
    medians = {k: statistics.median(v) for k, v in runs.items()}
    assert max(medians.values()) / min(medians.values()) < 1.5, medians
    # Throttled: a real name and an unknown one read alike, and take alike.
    for name in ("olena", "nobody"):
        for _ in range(FREE_TRIES):
            _timed(crew, name, "guessing", "198.51.100.1")
    throttled: dict[str, list[float]] = {"olena": [], "nobody": []}
    texts = set()
    for _ in range(7):
        for name in throttled:
            took, status, said = _timed(crew, name, PASSWORD, "198.51.100.1")
            throttled[name].append(took)
            texts.add((status, said))
    assert texts == {(429, "забагато невдалих спроб: зачекайте 1 с і спробуйте знову")}
    real, unknown = (statistics.median(v) for v in throttled.values())
    # A few milliseconds each, so a ratio alone would be noise on a busy machine; the issue's
    # difference was 0.01 s against 0.25 s (one argon2 verification more for one of them).
    assert abs(real - unknown) < 0.02 + 0.5 * min(real, unknown), throttled


# --- sessions on the server ------------------------------------------------------------------------


def _cookie(c: FlaskClient) -> str:
    found = c.get_cookie("__Host-console")  # PUBLIC_BASE_URL is https
    assert found is not None
    return found.value


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(crew_on_both: Crew) -> None:
    crew = crew_on_both
    olena = crew.sign_in("olena")
    copy = crew.client()
    cookie = _cookie(olena)
    copy.set_cookie("__Host-console", cookie)
    assert copy.get("/console/").status_code == 200  # a copied cookie works while the session lives
    page = olena.get("/console/").get_data(as_text=True)
    assert olena.post("/console/logout", data={"csrf_token": token(page)}).status_code == 302
    assert copy.get("/console/").status_code == 302
    assert copy.get("/console/api/cases").status_code == 401
    with crew.db.session() as s:
        rows = s.scalars(select(ConsoleSession).where(ConsoleSession.operator_id == crew.ids["olena"])).all()
        assert rows and all(r.ended_at is not None for r in rows)
        sid = crew.app.session_interface.get_signing_serializer(crew.app).loads(cookie)["sid"]  # type: ignore[attr-defined]
        assert sid not in str([(r.id, r.stage) for r in rows])  # only its hash is stored


def test_a_password_change_ends_the_half_way_sign_in_and_every_session(crew_on_both: Crew) -> None:
    crew = crew_on_both
    signed_in = crew.sign_in("olena")
    half_way = crew.client()
    assert crew.password(half_way, "olena")[0] == 302  # a stolen password, say
    page = half_way.get("/console/login/code").get_data(as_text=True)
    set_password(crew.db, crew.ids["olena"], "a brand new long password")
    crew.clock.move(30)
    r = half_way.post("/console/login/code", data={
        "code": pyotp.TOTP(crew.secrets["olena"]).at(crew.clock()), "csrf_token": token(page)})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/login")
    assert half_way.get("/console/").status_code == 302
    assert signed_in.get("/console/").status_code == 302


def test_disabling_an_operator_ends_their_sessions(crew: Crew) -> None:
    olena = crew.sign_in("olena")
    adam = crew.sign_in("adam")
    page = adam.get("/console/operators").get_data(as_text=True)
    r = adam.post(f"/console/operators/{crew.ids['olena']}", data={
        "csrf_token": token(page), "regions": "crimea", "languages": "ru,uk", "hours": "always",
        "timezone": "Europe/Kyiv", "capacity": "5", "role": "operator", "number": ""})  # no `active`
    assert r.status_code == 302
    assert olena.get("/console/").status_code == 302


def test_the_enrolment_secret_stays_on_the_server(crew: Crew) -> None:
    reset_second_factor(crew.db, crew.ids["olena"])
    c = crew.client()
    status, _page = crew.password(c, "olena")
    assert status == 302
    page = c.get("/console/enroll").get_data(as_text=True)
    found = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page)
    assert found
    secret = found.group(1)
    cookie = _cookie(c)
    serializer = crew.app.session_interface.get_signing_serializer(crew.app)  # type: ignore[attr-defined]
    content = serializer.loads(cookie)
    assert set(content) <= {"sid", "locale", "csrf_token", "_flashes", "_permanent"}, content
    assert secret not in str(content) and secret not in cookie
    with crew.db.session() as s:
        row = s.scalars(select(ConsoleSession).where(ConsoleSession.operator_id == crew.ids["olena"],
                                                     ConsoleSession.ended_at.is_(None))).one()
        assert row.enroll_secret is not None and secret.encode() not in row.enroll_secret  # sealed
    again = c.get("/console/enroll").get_data(as_text=True)
    assert f'<code id="totp-secret">{secret}</code>' in again  # the same one, kept on the server
    r = c.post("/console/enroll", data={"code": pyotp.TOTP(secret).at(crew.clock()),
                                        "csrf_token": token(again)})
    assert r.status_code == 302 and c.get("/console/").status_code == 200
    assert secret not in _cookie(c)


def test_one_code_signs_in_once_even_when_two_requests_race(crew_on_both: Crew) -> None:
    crew = crew_on_both
    for _round in range(3):
        crew.clock.move(30)
        clients = [crew.client(f"192.0.2.{n + 1}") for n in range(2)]
        pages = []
        for c in clients:
            assert crew.password(c, "olena")[0] == 302
            pages.append(c.get("/console/login/code").get_data(as_text=True))
        code = pyotp.TOTP(crew.secrets["olena"]).at(crew.clock())
        start = threading.Barrier(2)
        results: list[int] = []

        def post(c: FlaskClient, page: str, start: threading.Barrier = start, code: str = code,
                 results: list[int] = results) -> None:
            start.wait()
            r = c.post("/console/login/code", data={"code": code, "csrf_token": token(page)})
            results.append(r.status_code)

        threads = [threading.Thread(target=post, args=(c, p)) for c, p in zip(clients, pages, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [302, 401], results
        assert sorted(c.get("/console/").status_code for c in clients) == [200, 302]


def test_the_code_step_is_taken_by_one_update_under_a_race(crew_on_both: Crew) -> None:
    """Straight at check_code: both requests have checked the code before either writes."""
    crew = crew_on_both
    guard = Guard(crew.db, crew.settings.redis_url, "k")
    code = pyotp.TOTP(crew.secrets["sofia"]).at(SUNDAY)
    start = threading.Barrier(4)
    won: list[bool] = []

    def attempt(n: int) -> None:
        start.wait()
        try:
            check_code(crew.db, crew.vault, guard, crew.ids["sofia"], code, f"192.0.2.{n}", SUNDAY)
            won.append(True)
        except Exception:
            won.append(False)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, False, False, True]


# --- roles ------------------------------------------------------------------------------------------


EDIT_NUMBER = '<input name="number" inputmode="tel" autocomplete="off">'  # in an operator's edit form


def _edit(c: FlaskClient, op_id: int, **form: str) -> int:
    page = c.get("/console/operators").get_data(as_text=True)
    data = {"csrf_token": token(page), "regions": "crimea", "languages": "ru,uk", "hours": "always",
            "timezone": "Europe/Kyiv", "capacity": "5", "number": "", "active": "1", **form}
    return c.post(f"/console/operators/{op_id}", data=data).status_code


def test_a_supervisor_cannot_change_an_admin_or_another_supervisor_or_a_number(crew: Crew) -> None:
    sofia = crew.sign_in("sofia")
    page = sofia.get("/console/operators").get_data(as_text=True)
    assert f'action="/console/operators/{crew.ids["adam"]}"' not in page  # no form she cannot use
    assert f'action="/console/operators/{crew.ids["sam"]}"' not in page
    assert f'action="/console/operators/{crew.ids["olena"]}"' in page
    assert EDIT_NUMBER not in page
    assert _edit(sofia, crew.ids["adam"], role="operator") == 403  # demote the admin
    assert _edit(sofia, crew.ids["adam"], active="") == 403  # disable the admin
    assert _edit(sofia, crew.ids["sam"], role="operator") == 403  # another supervisor
    assert _edit(sofia, crew.ids["olena"], number="+380509999999") == 403  # a number
    duty = sofia.post(f"/console/operators/{crew.ids['adam']}/duty", data={"csrf_token": token(page)})
    assert duty.status_code == 403 and "адміністраторів" in html.unescape(duty.get_data(as_text=True))
    assert _edit(sofia, crew.ids["olena"], role="admin") == 400  # no such choice for her
    assert _edit(sofia, crew.ids["olena"], capacity="7") == 302  # an operator: yes
    assert _edit(sofia, crew.ids["sofia"], capacity="6") == 302  # herself: yes
    with crew.db.session() as s:
        adam, sam, olena = (s.get(Operator, crew.ids[n]) for n in ("adam", "sam", "olena"))
        assert adam is not None and sam is not None and olena is not None
        assert (adam.role, adam.active, sam.role, olena.role, olena.capacity) == (
            "admin", True, "supervisor", "operator", 7)
        assert crew.vault.open_operator_number(olena) == NUMBERS["olena"]
    assert crew.api.messages == []
    assert adam is not None and adam.active
    assert crew.sign_in("adam").get("/console/").status_code == 200  # the admin still gets in


def test_a_number_change_is_an_admins_audited_and_told_to_the_old_number(crew: Crew) -> None:
    adam = crew.sign_in("adam")
    assert EDIT_NUMBER in adam.get("/console/operators").get_data(as_text=True)
    assert _edit(adam, crew.ids["olena"], role="operator", number="+380509999999") == 302
    with crew.db.session() as s:
        olena = s.get(Operator, crew.ids["olena"])
        assert olena is not None and crew.vault.open_operator_number(olena) == "+380509999999"
        audit = [(a.actor, a.action, a.detail) for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    who = f"operator {crew.ids['olena']}"
    assert (f"operator:{crew.ids['adam']}", "operator-number-changed", who) in audit
    assert ("system", "sms-sent", f"{who}: number change told to the old number") in audit
    assert "+380509999999" not in str(audit) and NUMBERS["olena"] not in str(audit)
    [sms] = crew.api.messages
    assert sms.params["To"] == NUMBERS["olena"] and sms.params["From"] == HOTLINE
    body = sms.params["Body"]
    assert "номер телефону" in body and "9999999" not in body and "#" not in body  # nothing of callers
    assert _edit(adam, crew.ids["adam"], role="admin", number=NUMBERS["adam"]) == 302  # same: no SMS
    assert len(crew.api.messages) == 1
    # The admin may demote and disable a supervisor.
    assert _edit(adam, crew.ids["sam"], role="operator", active="") == 302


def test_the_command_line_follows_the_same_rules_and_tells_the_old_number(crew: Crew) -> None:
    env = {"DATABASE_URL": crew.settings.database_url, "KEYSTORE_URL": crew.settings.keystore_url,
           "IVR_DATA_KEYS": TEST_KEYS, "TWILIO_API_BASE": crew.api.base_url,
           "TWILIO_ACCOUNT_SID": crew.settings.twilio_account_sid, "TWILIO_AUTH_TOKEN": TOKEN,
           "PUBLIC_BASE_URL": BASE, "HOTLINE_NUMBER": HOTLINE, "FLOWS_DIR": str(crew.settings.flows_dir),
           "INSTANCE_DIR": str(crew.settings.instance_dir), "IVR_DOTENV": "/nonexistent", "USER": "root"}
    olena = crew.sign_in("olena")
    r = CliRunner().invoke(cli, ["operators", "edit", str(crew.ids["olena"]), "--number", "+380508888888"],
                           env=env)
    assert r.exit_code == 0, r.output
    [sms] = crew.api.messages
    assert sms.params["To"] == NUMBERS["olena"] and "8888888" not in sms.params["Body"]
    with crew.db.session() as s:
        actions = set(s.scalars(select(AuditEntry.action).where(AuditEntry.actor == "cli:root")))
        assert "operator-number-changed" in actions
    r = CliRunner().invoke(cli, ["operators", "disable", str(crew.ids["olena"])], env=env)
    assert r.exit_code == 0, r.output
    assert olena.get("/console/").status_code == 302  # disabled: signed out at once


def test_an_operator_is_told_when_their_password_or_second_factor_changes(crew: Crew) -> None:
    """OWASP ASVS 2.2.3: a password set or a second factor reset is told by SMS to the
    operator's own number, in their language; if it was not their doing, they know at once."""
    env = {"DATABASE_URL": crew.settings.database_url, "KEYSTORE_URL": crew.settings.keystore_url,
           "IVR_DATA_KEYS": TEST_KEYS, "TWILIO_API_BASE": crew.api.base_url,
           "TWILIO_ACCOUNT_SID": crew.settings.twilio_account_sid, "TWILIO_AUTH_TOKEN": TOKEN,
           "PUBLIC_BASE_URL": BASE, "HOTLINE_NUMBER": HOTLINE, "FLOWS_DIR": str(crew.settings.flows_dir),
           "INSTANCE_DIR": str(crew.settings.instance_dir), "IVR_DOTENV": "/nonexistent"}
    olena = crew.ids["olena"]
    r = CliRunner().invoke(cli, ["operators", "password", str(olena), "--password-stdin"],
                           env=env, input="a long new password here\n")
    assert r.exit_code == 0 and "they were told by SMS" in r.output, r.output
    r = CliRunner().invoke(cli, ["operators", "reset-2fa", str(olena)], env=env)
    assert r.exit_code == 0 and "they were told by SMS" in r.output, r.output
    password, factor = crew.api.messages
    assert password.params["To"] == factor.params["To"] == NUMBERS["olena"]
    assert "пароль" in password.params["Body"] and "другий фактор" in factor.params["Body"]  # her uk
    crew.api.fail_next(3, status=500)  # Twilio down: the change stands, and the admin is told
    r = CliRunner().invoke(cli, ["operators", "reset-2fa", str(olena)], env=env)
    assert r.exit_code == 0 and "could not be sent" in r.output, r.output
    with crew.db.session() as s:
        told = list(s.scalars(select(AuditEntry.action).where(
            AuditEntry.detail.like(f"operator {olena}: % change told to the operator"))))
    assert told == ["sms-sent", "sms-sent", "sms-failed"]


# --- no 5xx from any console input ------------------------------------------------------------------

ODD = ["\n", "\r\nSet-Cookie: x=1", "//evil.example/", "/console//evil.example", "/console/\\evil",
       "https://evil.example/", "/console/\n", "\x00", "é", "Ω" * 300, "9" * 30, str(2**63), "-1",
       str(-(2**63) - 1), "1e9", "²", " ", "", "/console/?q=%0d%0a", "javascript:alert(1)"]
odd = st.one_of(st.sampled_from(ODD), st.text(max_size=60), st.integers().map(str))
FORM_FIELDS = ["name", "password", "code", "text", "outcome", "reason", "operator_id", "on_duty", "number",
               "languages", "regions", "timezone", "hours", "capacity", "role", "active", "locale", "next"]
HUGE_IDS = [str(2**31), str(2**63), str(2**63 - 1), "9" * 30, "0"]


def _routes(crew: Crew, ident: str) -> list[tuple[str, str]]:
    return [("GET", f"/console/cases/{ident}"), ("GET", f"/console/cases/{ident}/audio"),
            ("GET", f"/console/api/cases/{ident}"), ("POST", f"/console/cases/{ident}/note"),
            ("POST", f"/console/cases/{ident}/outcome"), ("POST", f"/console/cases/{ident}/close"),
            ("POST", f"/console/cases/{ident}/callback"), ("POST", f"/console/cases/{ident}/reassign"),
            ("POST", f"/console/operators/{ident}"), ("POST", f"/console/operators/{ident}/duty")]


def test_ids_beyond_the_databases_integers_are_404(crew_on_both: Crew) -> None:
    crew = crew_on_both
    adam = crew.sign_in("adam")
    csrf = token(adam.get("/console/").get_data(as_text=True))
    for ident in HUGE_IDS:
        for method, path in _routes(crew, ident):
            r = adam.get(path) if method == "GET" else adam.post(path, data={"csrf_token": csrf, "text": "x"})
            assert r.status_code == 404, (path, r.status_code)
    for q in ("9" * 30, str(2**63), "-5", "²"):
        assert adam.get(f"/console/?q={q}").status_code == 200
        assert adam.get(f"/console/api/cases?q={q}&region=%00&language=%00").status_code == 200
    r = adam.post(f"/console/cases/{crew.case}/reassign",
                  data={"csrf_token": csrf, "operator_id": str(2**63)})
    assert r.status_code < 500
    r = adam.post(f"/console/cases/{crew.case}/close", data={"csrf_token": csrf, "reason": "a\x00b",
                                                             "confirm": "yes"})
    assert r.status_code == 302
    added = adam.post("/console/operators", data={
        "csrf_token": csrf, "name": "x\x00y", "number": "+380501119999", "regions": "crimea," * 60,
        "languages": "uk", "hours": "always", "timezone": "Europe/Kyiv", "capacity": str(2**63),
        "role": "operator"})
    assert added.status_code == 400
    stranger = crew.client()
    for name in ("olena\x00", "\x00", "é" * 200):
        assert crew.password(stranger, name)[0] == 401


def test_the_language_switch_goes_back_only_to_a_console_page(crew: Crew) -> None:
    olena = crew.sign_in("olena")
    csrf = token(olena.get("/console/").get_data(as_text=True))
    for back in (b for b in ODD if b != "/console/?q=%0d%0a"):  # that one is a console page
        r = olena.post("/console/language", data={"csrf_token": csrf, "locale": "en", "next": back})
        assert r.status_code == 302 and r.headers["Location"] == "/console/", (back, r.headers["Location"])
    r = olena.post("/console/language", data={"csrf_token": csrf, "locale": "uk",
                                              "next": "/console/?show=all&region=crimea"})
    assert r.headers["Location"] == "/console/?show=all&region=crimea"


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.integers(0, 13), ident=st.one_of(st.sampled_from(HUGE_IDS), st.integers(-5, 10).map(str)),
       form=st.dictionaries(st.sampled_from(FORM_FIELDS), odd, max_size=8), query=odd)
def test_no_console_input_gives_a_5xx(crew_on_both: Crew, route: int, ident: str, form: dict[str, str],
                                      query: str) -> None:
    crew = crew_on_both
    if not hasattr(crew, "fuzz"):
        crew.fuzz = (crew.sign_in("adam"), crew.client())  # type: ignore[attr-defined]
    adam, stranger = crew.fuzz  # type: ignore[attr-defined]
    csrf = token(adam.get("/console/").get_data(as_text=True))
    routes = [*_routes(crew, ident), ("POST", "/console/operators"), ("POST", "/console/language"),
              ("GET", "/console/"), ("GET", "/console/api/cases")]
    method, path = routes[route]
    if path.startswith(f"/console/operators/{crew.ids['adam']}"):
        path = path.replace(f"/{crew.ids['adam']}", "/0", 1)  # not the admin's own: he stays signed in
    if method == "GET":
        r = adam.get(path, query_string={"q": query, "show": query, "region": query, "language": query})
    else:
        r = adam.post(path, data={"csrf_token": csrf, **form})
    assert r.status_code < 500, (method, path, form, r.status_code)
    for step in ("/console/login", "/console/login/code", "/console/enroll"):
        page = stranger.get("/console/login").get_data(as_text=True)
        r = stranger.post(step, data={"csrf_token": token(page), **form})
        assert r.status_code < 500, (step, form, r.status_code)
