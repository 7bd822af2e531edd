"""The operator console through Flask's test client: signing in (password, TOTP, lock-out),
CSRF, headers, the queue, a case, and a table of role x route x status for every route."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr import create_app
from ivr.config import Settings
from ivr.console.auth import FREE_TRIES, AuthError, Throttled, set_password
from ivr.console.i18n import UK
from ivr.engine import Caller
from ivr.operators import add_operator, recount
from ivr.standin import TwilioApi, tone_wav
from ivr.storage import AuditEntry, Case, Database, Note, Operator, Recording, Vault, upgrade, utcnow
from ivr.voicemail import Reported, note_recording
from tests.conftest import ROOT, SUNDAY, TOKEN, RedisServer, signed

PASSWORD = "correct horse battery"


@dataclass
class Team:
    app: Flask
    db: Database
    vault: Vault
    secrets: dict[str, str]
    ids: dict[str, int]
    cases: dict[str, int]


def enroll(db: Database, vault: Vault, op_id: int) -> str:
    secret = pyotp.random_base32()
    with db.session() as s:
        op = s.get(Operator, op_id)
        assert op is not None
        op.totp_secret, op.totp_enrolled_at = vault.seal_operator_secret(op, secret), utcnow()
    return secret


def new_case(db: Database, vault: Vault, n: int, region: str, number: str) -> int:
    sid = f"{n:032x}"
    note_recording(db, vault, Reported(call_sid="CA" + sid, recording_sid="RE" + sid, status="completed",
                                       duration=5, number=number, caller=Caller(False, "RU", region),
                                       language="ru", consent="any", timezone="Europe/Moscow"))
    with db.session() as s:
        case = s.scalars(select(Case).join(Recording, Recording.id == Case.recording_id)
                         .where(Recording.recording_sid == "RE" + sid)).one()
        rec = s.get(Recording, case.recording_id)
        assert rec is not None
        rec.audio = vault.seal_audio(case, tone_wav(1.0))
        case.transcript = vault.seal(case, "transcript", f"words of case {n}".encode())
        case.status = "routed"
        return case.id


@pytest.fixture
def team(settings: Settings, tmp_path: Path) -> Iterator[Team]:
    import shutil

    shutil.copy(ROOT / "flows" / "regions.yaml", settings.flows_dir / "regions.yaml")
    upgrade(settings.database_url, settings.keystore_url)
    api = TwilioApi(settings.twilio_account_sid, TOKEN)
    settings = settings.replace(twilio_api_base=api.start())  # callbacks reach the stand-in
    app = create_app(settings, clock=lambda: SUNDAY)
    db, vault = app.extensions["ivr.db"], app.extensions["ivr.vault"]
    people = {"olena": ("crimea", "operator"), "petro": ("occupied", "operator"),
              "sofia": ("elsewhere", "supervisor"), "adam": ("elsewhere", "admin")}
    ids, secrets_ = {}, {}
    for i, (name, (region, role)) in enumerate(people.items()):
        ids[name] = add_operator(db, vault, name=name, number=f"+38050111000{i}", languages="ru,uk",
                                 regions=region, timezone="Europe/Kyiv", hours="always", role=role)
        set_password(db, ids[name], PASSWORD)
        secrets_[name] = enroll(db, vault, ids[name])
    cases = {"crimea": new_case(db, vault, 1, "crimea", "+79781234567"),
             "occupied": new_case(db, vault, 2, "occupied", "+79491234567")}
    yield Team(app, db, vault, secrets_, ids, cases)
    db.engine.dispose()
    api.stop()


def token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def sign_in(team: Team, name: str, step_offset: int = 0) -> FlaskClient:
    client = team.app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    r = client.post("/console/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page)})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/login/code"), r.status_code
    page = client.get("/console/login/code").get_data(as_text=True)
    code = pyotp.TOTP(team.secrets[name]).at(SUNDAY + timedelta(seconds=30 * step_offset))
    r = client.post("/console/login/code", data={"code": code, "csrf_token": token(page)})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/"), r.get_data(as_text=True)
    return client


@pytest.mark.parametrize(("name", "details"), [("adam", True), ("sofia", False), ("olena", False)])
def test_healthz_details_need_an_admins_session_or_the_token(team: Team, name: str,
                                                             details: bool) -> None:
    client = sign_in(team, name)
    body = client.get("/healthz").get_json()
    assert ("outbox" in body and "flow_problems" in body) is details
    assert set(body) == {"status", "versions"} or details
    client.post("/console/logout", data={"csrf_token": token(client.get("/console/").get_data(
        as_text=True))})
    assert set(client.get("/healthz").get_json()) == {"status", "versions"}  # signed out


# --- signing in ---------------------------------------------------------------------------------


def test_a_password_alone_does_not_open_the_console(team: Team) -> None:
    client = team.app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    client.post("/console/login", data={"name": "olena", "password": PASSWORD, "csrf_token": token(page)})
    assert client.get("/console/").status_code == 302  # still the code to give
    page = client.get("/console/login/code").get_data(as_text=True)
    wrong = client.post("/console/login/code", data={"code": "000000", "csrf_token": token(page)})
    assert wrong.status_code == 401 and "неправильний код" in wrong.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_a_code_works_once(team: Team) -> None:
    sign_in(team, "olena")
    client = team.app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    client.post("/console/login", data={"name": "olena", "password": PASSWORD, "csrf_token": token(page)})
    page = client.get("/console/login/code").get_data(as_text=True)
    replay = client.post("/console/login/code", data={"code": pyotp.TOTP(team.secrets["olena"]).at(SUNDAY),
                                                      "csrf_token": token(page)})
    assert replay.status_code == 401


def test_enrollment_by_qr_code_on_the_first_sign_in(team: Team) -> None:
    with team.db.session() as s:
        op = s.get(Operator, team.ids["olena"])
        assert op is not None
        op.totp_secret, op.totp_enrolled_at = None, None
    client = team.app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    r = client.post("/console/login", data={"name": "olena", "password": PASSWORD, "csrf_token": token(page)})
    assert r.headers["Location"].endswith("/console/enroll")
    page = client.get("/console/enroll").get_data(as_text=True)
    assert "<svg" in page and "<script" not in page
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page)
    assert secret
    r = client.post("/console/enroll", data={"code": pyotp.TOTP(secret.group(1)).at(SUNDAY),
                                             "csrf_token": token(page)})
    assert r.status_code == 302 and client.get("/console/").status_code == 200
    with team.db.session() as s:
        op = s.get(Operator, team.ids["olena"])
        assert op is not None and op.totp_enrolled_at is not None
        assert secret.group(1).encode() not in (op.totp_secret or b"")  # sealed at rest


def test_repeated_failures_slow_that_client_down_and_never_lock_the_account(team: Team) -> None:
    client = team.app.test_client()
    for _ in range(FREE_TRIES):
        page = client.get("/console/login").get_data(as_text=True)
        r = client.post("/console/login", data={"name": "olena", "password": "wrong password!",
                                                "csrf_token": token(page)})
        said = html.unescape(r.get_data(as_text=True))
        assert r.status_code == 401 and "неправильне ім'я або пароль" in said
    page = client.get("/console/login").get_data(as_text=True)
    waiting = client.post("/console/login", data={"name": "olena", "password": PASSWORD,
                                                  "csrf_token": token(page)})
    assert waiting.status_code == 429 and waiting.headers["Retry-After"] == "1"
    assert "зачекайте 1 с і спробуйте знову" in html.unescape(waiting.get_data(as_text=True))
    unknown = client.post("/console/login", data={"name": "nobody", "password": PASSWORD,
                                                  "csrf_token": token(page)})
    assert "неправильне ім'я або пароль" in html.unescape(unknown.get_data(as_text=True))  # no probing
    team.app.config["IVR_CLOCK"] = lambda: SUNDAY + timedelta(seconds=1)  # the wait is over
    r = client.post("/console/login", data={"name": "olena", "password": PASSWORD, "csrf_token": token(page)})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/login/code")
    with team.db.session() as s:
        assert not s.scalars(select(AuditEntry.action).where(AuditEntry.action == "locked-out")).all()


def test_forms_without_a_csrf_token_are_refused(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    r = client.post(f"/console/cases/{case}/note", data={"text": "hello"})
    assert r.status_code == 400
    r = client.post("/console/login", data={"name": "olena", "password": PASSWORD})
    assert r.status_code == 400


def test_sessions_end_when_idle_and_when_the_password_changes(team: Team) -> None:
    client = sign_in(team, "olena")
    assert client.get("/console/").status_code == 200
    set_password(team.db, team.ids["olena"], "another long password")
    assert client.get("/console/").status_code == 302
    client = sign_in(team, "petro")
    team.app.config["IVR_CLOCK"] = lambda: SUNDAY + timedelta(minutes=31)
    assert client.get("/console/").status_code == 302


def test_headers_and_cookies(team: Team) -> None:
    client = sign_in(team, "olena")
    r = client.get(f"/console/cases/{team.cases['crimea']}")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    login = team.app.test_client().get("/console/login")
    assert login.headers["Cache-Control"] == "no-store"
    page = r.get_data(as_text=True)
    assert "<script" not in page and "style=" not in page and " on" + "click" not in page


def test_the_session_cookie_is_secure_on_https(settings: Settings) -> None:
    upgrade(settings.database_url, settings.keystore_url)
    app = create_app(settings.replace(public_base_url="https://hotline.example.org"))
    r = app.test_client().get("/console/login")
    cookie = r.headers.get("Set-Cookie", "")
    assert cookie.startswith("__Host-console=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_twilio_webhooks_need_no_csrf_token(team: Team) -> None:
    from tests.conftest import call_params

    r = signed(team.app.test_client(), "/twilio/voice", call_params())
    assert r.status_code == 200 and "<Response>" in r.get_data(as_text=True)


# --- the pages ---------------------------------------------------------------------------------


def test_the_queue_shows_cases_of_my_regions_with_counts(team: Team) -> None:
    page = sign_in(team, "olena").get("/console/").get_data(as_text=True)
    assert f"#{team.cases['crimea']}<" in page and f"#{team.cases['occupied']}<" not in page
    assert 'id="count-regions">1<' in page
    every = sign_in(team, "sofia").get("/console/?show=all").get_data(as_text=True)
    assert f"#{team.cases['crimea']}<" in every and f"#{team.cases['occupied']}<" in every


def test_a_case_page_shows_the_case_never_the_number_and_audits_the_reading(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    assert "words of case 1" in page and "+79781234567" not in page and "79781234567" not in page
    assert 'id="consent">будь-коли<' in page
    timeline = page.split('class="timeline"')[1]
    assert timeline.index("caller: call") < timeline.index("system: case-created")  # the call first
    audio = client.get(f"/console/cases/{case}/audio")
    assert audio.status_code == 200 and audio.mimetype == "audio/wav" and audio.data[:4] == b"RIFF"
    assert audio.headers["Cache-Control"] == "no-store"
    with team.db.session() as s:
        actor = f"operator:{team.ids['olena']}"
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.case_id == case,
                                                            AuditEntry.actor == actor))
        assert {"transcript-read", "audio-played"} <= set(actions)


def test_actions_note_outcome_close(team: Team) -> None:
    client = sign_in(team, "olena")
    case = team.cases["crimea"]
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    client.post(f"/console/cases/{case}/note",
                data={"text": "called, will call again", "csrf_token": token(page)})
    client.post(f"/console/cases/{case}/outcome", data={"outcome": "helped", "csrf_token": token(page)})
    client.post(f"/console/cases/{case}/close", data={"reason": "done", "confirm": "yes",
                                                      "csrf_token": token(page)})
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    assert "called, will call again" in page and 'id="outcome">допомогли<' in page
    assert recount(team.db) == 0  # closing kept the operators' open-case counts true
    with team.db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.status == "closed" and found.outcome == "helped"
        assert b"called, will call again" not in b"".join(n for n in s.scalars(select(Note.text)) if n)


def test_the_language_is_chosen_per_user(team: Team) -> None:
    client = sign_in(team, "olena")
    page = client.get("/console/").get_data(as_text=True)
    assert "Черга" in page
    client.post("/console/language", data={"locale": "en", "csrf_token": token(page)})
    assert "Queue" in client.get("/console/").get_data(as_text=True)
    assert "Черга" in sign_in(team, "petro").get("/console/").get_data(as_text=True)  # not for others


def test_every_message_has_its_ukrainian() -> None:
    folder = ROOT / "ivr" / "console"
    found: set[str] = set()
    for path in [*folder.glob("templates/*.html"), folder / "views.py"]:
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\("((?:[^"\\]|\\.)+)"', text))
        found |= set(re.findall(r"_\('((?:[^'\\]|\\.)+)'", text))
    found |= {"any time", "daytime only", "no callback", "helped", "information given",
              "surrender arranged", "no contact", "not relevant"}
    missing = sorted(m for m in found if m not in UK)
    assert not missing, missing


# --- who may do what: role x route x status ----------------------------------------------------

ROUTES = [
    # (method, path, olena (crimea operator), petro (occupied operator), sofia (supervisor), adam (admin))
    ("GET", "/console/", 200, 200, 200, 200),
    ("GET", "/console/dashboard", 200, 200, 200, 200),
    ("GET", "/console/cases/{crimea}", 200, 404, 200, 200),
    ("GET", "/console/cases/{crimea}/audio", 200, 404, 200, 200),
    ("GET", "/console/api/cases/{crimea}", 200, 404, 200, 200),
    ("GET", "/console/api/cases", 200, 200, 200, 200),
    ("GET", "/console/cases/999999", 404, 404, 404, 404),
    ("POST", "/console/cases/{crimea}/take", 302, 404, 302, 302),
    ("POST", "/console/cases/{crimea}/note", 302, 404, 302, 302),
    ("POST", "/console/cases/{crimea}/outcome", 302, 404, 302, 302),
    ("POST", "/console/cases/{occupied}/close", 404, 302, 302, 302),
    ("POST", "/console/cases/{occupied}/reopen", 404, 302, 302, 302),
    ("POST", "/console/cases/{crimea}/callback", 302, 404, 302, 302),
    ("POST", "/console/cases/{occupied}/reassign", 404, 302, 302, 302),
    ("POST", "/console/operators/{olena_id}", 404, 404, 302, 302),
    ("POST", "/console/operators", 404, 404, 400, 400),
    ("GET", "/console/api/cases?show=all", 200, 200, 200, 200),
    ("GET", "/console/operators", 404, 404, 200, 200),
    ("POST", "/console/operators/{olena_id}/duty", 404, 404, 302, 302),
    ("GET", "/console/audit", 404, 404, 200, 200),
    ("GET", "/console/flows", 404, 404, 404, 200),
    # Last: a supervisor cannot touch the admin (the admin demotes himself here, to operator).
    ("POST", "/console/operators/{adam_id}/duty", 404, 404, 403, 302),
    ("POST", "/console/operators/{adam_id}", 404, 404, 403, 302),
]


@pytest.mark.parametrize("who", ["olena", "petro", "sofia", "adam"])
def test_permissions_of_every_route(team: Team, who: str) -> None:
    client = sign_in(team, who)
    page = client.get("/console/").get_data(as_text=True)
    csrf = token(page)
    column = ["olena", "petro", "sofia", "adam"].index(who)
    for method, template, *expected in ROUTES:
        path = template.format(crimea=team.cases["crimea"], occupied=team.cases["occupied"],
                               olena_id=team.ids["olena"], adam_id=team.ids["adam"])
        data = {"csrf_token": csrf, "text": "n", "outcome": "helped", "reason": "r", "confirm": "yes",
                "on_duty": "1",
                "regions": "crimea", "languages": "ru,uk", "hours": "always", "timezone": "Europe/Kyiv",
                "capacity": "5", "role": "operator", "active": "1"}
        r = client.get(path) if method == "GET" else client.post(path, data=data)
        assert r.status_code == expected[column], (who, method, path, r.status_code)


def test_nobody_signed_in_is_sent_to_sign_in(team: Team) -> None:
    client = team.app.test_client()
    for method, template, *_ in ROUTES:
        path = template.format(crimea=team.cases["crimea"], occupied=team.cases["occupied"],
                               olena_id=team.ids["olena"], adam_id=team.ids["adam"])
        if method == "POST":  # no session, so no token: refused before anything is done
            assert client.post(path, data={"text": "n"}).status_code == 400, path
            continue
        r = client.get(path)
        if path.startswith("/console/api/"):
            assert r.status_code == 401
        else:
            assert r.status_code == 302 and r.headers["Location"].endswith("/console/login"), path


def test_the_dashboard_counts_every_call_and_the_cases(team: Team) -> None:
    from tests.conftest import call_params

    twilio = team.app.test_client()
    for n, number in enumerate(["+79781234567", "+79781234568", "+380441234567", "anonymous"]):
        params = call_params(CallSid=f"CA{n + 100:032x}", From=number, CallStatus="completed",
                             CallDuration="61")
        assert signed(twilio, "/twilio/status", params).status_code == 200
    signed(twilio, "/twilio/status", call_params(CallSid=f"CA{100:032x}", From="+79781234567",
                                                 CallStatus="completed", CallDuration="61"))  # twice
    page = sign_in(team, "sofia").get("/console/dashboard").get_data(as_text=True)
    calls = page.split('id="chart-call-regions"')[1].split("</section>")[0]
    # The two calls that left the cases' messages count too (crimea and occupied).
    assert "crimea <b>3</b>" in calls and "ukraine <b>1</b>" in calls and "elsewhere <b>1</b>" in calls
    cases = page.split('id="chart-regions"')[1].split("</section>")[0]
    assert "crimea <b>1</b>" in cases and "occupied <b>1</b>" in cases
    own = sign_in(team, "olena").get("/console/dashboard").get_data(as_text=True)
    assert "occupied <b>" not in own and "ukraine <b>" not in own  # an operator sees their regions
    with team.db.session() as s:
        from ivr.storage import Call

        assert "+79781234567" not in str([(c.call_sid, c.region, c.seconds) for c in s.scalars(select(Call))])


def test_supervisors_manage_operators_as_the_ivr_command_does(team: Team) -> None:
    client = sign_in(team, "sofia")
    page = client.get("/console/operators").get_data(as_text=True)
    assert "+38050111000" not in page  # numbers stay sealed, never shown
    added = client.post("/console/operators", data={
        "csrf_token": token(page), "name": "Iryna", "number": "+380501119999", "regions": "crimea",
        "languages": "uk", "hours": "mon-fri 09:00-18:00", "timezone": "Europe/Kyiv", "capacity": "4",
        "role": "operator"})
    assert added.status_code == 302
    bad = client.post("/console/operators", data={
        "csrf_token": token(page), "name": "X", "number": "0501119999", "regions": "crimea",
        "languages": "uk", "hours": "always", "timezone": "Europe/Kyiv", "capacity": "4", "role": "operator"})
    assert bad.status_code == 400 and "E.164" in bad.get_data(as_text=True)
    admin = client.post("/console/operators", data={
        "csrf_token": token(page), "name": "Y", "number": "+380501119998", "regions": "crimea",
        "languages": "uk", "hours": "always", "timezone": "Europe/Kyiv", "capacity": "4", "role": "admin"})
    assert admin.status_code == 400  # only an admin makes admins
    with team.db.session() as s:
        iryna = s.scalars(select(Operator).where(Operator.name == "Iryna")).one()
        assert b"+380501119999" not in iryna.number
    edited = client.post(f"/console/operators/{iryna.id}", data={
        "csrf_token": token(page), "regions": "crimea,occupied", "languages": "uk,ru", "hours": "always",
        "timezone": "Europe/Kyiv", "capacity": "6", "role": "operator", "number": ""})
    assert edited.status_code == 302
    with team.db.session() as s:
        after = s.get(Operator, iryna.id)
        assert after is not None
        assert (after.regions, after.languages, after.capacity, after.active) == (
            "crimea,occupied", "ru,uk", 6, False)
        assert team.vault.open_operator_number(after) == "+380501119999"  # unchanged
        actor = f"operator:{team.ids['sofia']}"
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor == actor))
        assert {"operator-added", "operator-edited"} <= set(actions)


def test_the_failures_are_counted_in_redis_for_every_web_process(
    team: Team, redis_server: RedisServer
) -> None:
    from ivr.console.auth import CLIENT_FREE_TRIES, Guard, check_password

    first, second = Guard(team.db, redis_server.url, "k"), Guard(team.db, redis_server.url, "k")
    for _ in range(FREE_TRIES):
        with pytest.raises(AuthError):
            check_password(team.db, first, "petro", "not the password", "10.0.0.1", SUNDAY)
    with pytest.raises(Throttled):  # another process, the same client: it waits too
        check_password(team.db, second, "petro", PASSWORD, "10.0.0.1", SUNDAY)
    # Another client is not slowed down: the account is not locked.
    assert check_password(team.db, second, "petro", PASSWORD, "10.0.0.2", SUNDAY) == team.ids["petro"]
    conn = redis.Redis.from_url(redis_server.url)
    keys = b" ".join(k for k in conn.keys("*") if isinstance(k, bytes))
    assert b"petro" not in keys and b"10.0.0" not in keys  # names and addresses hashed
    with team.db.session() as s:  # Redis held them: the database did not need to
        from ivr.storage import SignInFailures

        assert s.scalars(select(SignInFailures)).all() == []
    # One address trying many names is slowed down too.
    for n in range(CLIENT_FREE_TRIES):
        with pytest.raises(AuthError):
            check_password(team.db, second, f"nobody{n}", "x" * 12, "10.0.0.3", SUNDAY)
    with pytest.raises(Throttled):
        check_password(team.db, second, "olena", PASSWORD, "10.0.0.3", SUNDAY)
    assert check_password(team.db, second, "olena", PASSWORD, "10.0.0.4", SUNDAY) == team.ids["olena"]
