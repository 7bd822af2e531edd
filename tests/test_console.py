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
    assert timeline.index("дзвінок на гарячу лінію") < timeline.index("справу створено")  # the call first
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
    for path in [*folder.glob("templates/*.html"), folder / "views.py", folder / "probe.py"]:
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\("((?:[^"\\]|\\.)+)"', text))
        found |= set(re.findall(r"_\('((?:[^'\\]|\\.)+)'", text))
    from ivr.console.probe import WENT

    found |= {WENT, "any time", "daytime only", "no callback", "helped", "information given",
              "surrender arranged", "no contact", "not relevant"}
    # what the Reader says (ivr/console/wording.py) and the reasons kept as data (ivr/reasons.py)
    from ivr.console import wording
    from ivr.reasons import ENGLISH

    found |= set(ENGLISH.values()) | set(wording.ACTIONS.values()) | set(wording.OUTCOMES.values())
    found |= set(wording.LANGUAGES.values()) | set(wording.ROLES.values()) | set(wording.DAYS.values())
    found |= set(wording.FIELD_NAMES.values()) | set(wording.CONSENTS.values())
    found |= set(wording.CALLBACKS.values()) | set(wording.ACTORS.values())
    wording_text = (ROOT / "ivr" / "console" / "wording.py").read_text(encoding="utf-8")
    found |= set(re.findall(r'self\._\("((?:[^"\\]|\\.)+)"', wording_text))
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
    ("POST", "/console/cases/{crimea}/reply", 302, 404, 302, 302),
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
    # The probe flag: only a flagged case is cleared or confirmed; once flagged, supervisors only.
    ("POST", "/console/cases/{crimea}/unflag", 404, 404, 409, 409),
    ("POST", "/console/cases/{crimea}/confirm-probe", 404, 404, 409, 409),
    ("POST", "/console/cases/{occupied}/flag", 404, 302, 302, 302),
    ("GET", "/console/cases/{occupied}", 404, 404, 200, 200),
    ("POST", "/console/cases/{occupied}/note", 404, 404, 302, 302),
    ("POST", "/console/cases/{occupied}/unflag", 404, 404, 302, 302),
    ("GET", "/console/cases/{occupied}", 404, 404, 200, 200),
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
    # Regions by their names in the reader's language (regions.yaml `names`).
    assert "Крим <b>3</b>" in calls and "Україна <b>1</b>" in calls and "Інше або невідомо <b>1</b>" in calls
    cases = page.split('id="chart-regions"')[1].split("</section>")[0]
    assert "Крим <b>1</b>" in cases and "Окуповані території <b>1</b>" in cases
    own = sign_in(team, "olena").get("/console/dashboard").get_data(as_text=True)
    assert "Окуповані території <b>" not in own and "Україна <b>" not in own  # their regions only
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


# --- one language, local time: every page in uk and in en ----------------------------------------

# Words of the other script a page may show: people's and engines' names, time zone ids, the
# language switch, a brand, and the syntax an operator types (hours, language codes).
LATIN_ALLOWED = {"olena", "petro", "sofia", "adam", "english", "twilio", "sms", "europe", "kyiv",
                 "moscow", "simferopol", "utc", "whisper", "base", "mon", "fri", "sat", "always",
                 "ru", "uk", "svg"}
CYRILLIC_ALLOWED = {"українська"}


def shown_words(page: str) -> str:
    """What a reader sees: the text and the placeholders, labels and titles, without the
    callers' and operators' own words (the transcript, notes, replies) and code (<code>)."""
    page = re.sub(r'(?s)<blockquote id="transcript".*?</blockquote>', " ", page)
    page = re.sub(r'(?s)<ul class="notes">.*?</ul>', " ", page)
    page = re.sub(r'(?s)<blockquote class="reply".*?</blockquote>', " ", page)  # the replies' words
    page = re.sub(r"(?s)<code\b.*?</code>|<svg\b.*?</svg>|<script\b.*?</script>", " ", page)
    attrs = " ".join(re.findall(r'(?:placeholder|aria-label|title|alt)="([^"]*)"', page))
    return html.unescape(re.sub(r"<[^>]+>", " ", page) + " " + attrs)


def foreign(page: str, locale: str) -> list[str]:
    text = shown_words(page)
    if locale == "uk":
        words = re.findall(r"[A-Za-z]+", text)
        return sorted({w for w in words if w.lower() not in LATIN_ALLOWED})
    words = re.findall(r"[А-ЯЇІЄҐа-яїієґЁЫЭЪёыэъ]+(?:['ʼ][А-ЯЇІЄҐа-яїієґ]+)*", text)
    return sorted({w for w in words if w.lower() not in CYRILLIC_ALLOWED})


@pytest.fixture
def desk(team: Team) -> Team:
    """Cases in every state a page can show, and the audit entries that come with them."""
    from ivr.callbacks import Policy, finish
    from ivr.casebook import close_case
    from ivr.console.auth import reset_second_factor
    from ivr.operators import assign_case, edit_operator
    from ivr.storage import CallbackAttempt

    db, vault = team.db, team.vault
    assign_case(db, team.cases["crimea"], SUNDAY - timedelta(minutes=19))  # to olena
    waiting = new_case(db, vault, 3, "crimea", "+79781234569")  # nobody covers it in its language
    with db.session() as s:
        case = s.get(Case, waiting)
        assert case is not None
        case.language, case.created_at = "en", SUNDAY - timedelta(hours=3)
    assign_case(db, waiting, SUNDAY - timedelta(hours=3))
    failed = new_case(db, vault, 4, "crimea", "+79781234570")
    with db.session() as s:
        case = s.get(Case, failed)
        assert case is not None
        case.status, case.transcript, case.created_at = "new", None, SUNDAY - timedelta(days=2)
    from ivr.reasons import said

    with db.session() as s:
        case = s.get(Case, failed)
        assert case is not None
        why = said("no-model", language="ru")
        case.status, case.status_reason, case.status_reason_data = ("transcription_failed",
                                                                    why.english(), why.dumps())
        s.add(AuditEntry(actor="system", action="transcription_failed", case_id=failed,
                         detail=why.english(), data=why.dumps()))
    called = new_case(db, vault, 5, "crimea", "+79781234571")
    assign_case(db, called, SUNDAY - timedelta(hours=1))
    for n, outcome in enumerate(("operator-no-answer", "busy", "answered")):
        with db.session() as s:
            attempt = CallbackAttempt(case_id=called, operator_id=team.ids["olena"],
                                      started_at=SUNDAY - timedelta(minutes=50 - n))
            s.add(attempt)
            s.flush()
            case = s.get(Case, called)
            assert case is not None
            case.callback_attempts += 1
            attempt_id = attempt.id
        finish(db, Policy(retry_minutes=(15,)), attempt_id, outcome,  # two attempts, then no more
               SUNDAY - timedelta(minutes=49 - n), 42 if outcome == "answered" else None)
    with db.session() as s:
        s.add(Note(case_id=called, operator_id=team.ids["olena"], at=SUNDAY))
    from ivr.replies import add_reply, mark_heard  # replies: one heard twice, one not yet

    heard = add_reply(db, vault, called, "Перезвоним завтра.", actor=f"operator:{team.ids['olena']}",
                      operator_id=team.ids["olena"], now=SUNDAY - timedelta(minutes=30))
    mark_heard(db, heard, SUNDAY - timedelta(minutes=20))
    mark_heard(db, heard, SUNDAY - timedelta(minutes=10))
    add_reply(db, vault, called, "Ждите звонка.", actor="cli:root", now=SUNDAY - timedelta(minutes=5))
    closed = new_case(db, vault, 6, "occupied", "+79491234599")
    assign_case(db, closed, SUNDAY - timedelta(hours=5))
    close_case(db, closed, f"operator:{team.ids['sofia']}", "12345")
    edit_operator(db, vault, team.ids["petro"], f"operator:{team.ids['sofia']}", capacity=4,
                  hours="mon-fri 09:00-18:00")
    reset_second_factor(db, team.ids["petro"], actor="cli:root")
    team.secrets["petro"] = enroll(db, vault, team.ids["petro"])
    from ivr.probes import confirm_probe, flag_case

    flagged = new_case(db, vault, 9, "crimea", "+79781234567")  # the crimea case's number
    assign_case(db, flagged, SUNDAY - timedelta(hours=2))
    flag_case(db, vault, flagged, f"operator:{team.ids['olena']}", "12345", SUNDAY - timedelta(hours=1))
    probe = new_case(db, vault, 10, "occupied", "+79491234500")
    flag_case(db, vault, probe, f"operator:{team.ids['petro']}", "12345", SUNDAY - timedelta(hours=1))
    confirm_probe(db, probe, f"operator:{team.ids['sofia']}", SUNDAY)
    team.cases.update(waiting=waiting, failed=failed, called=called, closed=closed, flagged=flagged,
                      probe=probe)
    return team


def pages(team: Team) -> list[str]:
    queue = [f"/console/?show={show}" for show in ("open", "mine", "closed", "all", "flagged")]
    queue += ["/console/?show=all&region=crimea", "/console/?show=all&language=ru",
              f"/console/?show=all&q={team.cases['called']}"]
    cases = [f"/console/cases/{case_id}" for case_id in team.cases.values()]
    return [*queue, *cases, "/console/dashboard", "/console/operators", "/console/audit",
            "/console/flows", "/console/cases/999999", "/console/nothing-here"]


@pytest.mark.parametrize("locale", ["uk", "en"])
def test_every_page_speaks_only_the_readers_language(desk: Team, locale: str) -> None:
    # The signing-in pages, before anyone is known: the language the browser was last given.
    client = desk.app.test_client()
    with client.session_transaction() as session:
        session["locale"] = locale
    seen = {"/console/login": client.get("/console/login").get_data(as_text=True)}
    bad = client.post("/console/login", data={"name": "adam", "password": "wrong password",
                                              "csrf_token": token(seen["/console/login"])})
    seen["login refused"] = bad.get_data(as_text=True)
    with desk.db.session() as s:
        for op in s.scalars(select(Operator)):
            op.locale = locale
    admin = sign_in(desk, "adam")
    for path in pages(desk):
        seen[path] = admin.get(path).get_data(as_text=True)
    seen["form expired"] = admin.post("/console/language", data={"locale": locale}).get_data(as_text=True)
    refused = admin.post("/console/operators", data={
        "csrf_token": token(seen["/console/operators"]), "name": "olena", "number": "+380501119999",
        "regions": "crimea", "languages": "uk", "hours": "always", "timezone": "Europe/Kyiv",
        "capacity": "4", "role": "operator"})
    assert refused.status_code == 400
    seen["operator refused"] = refused.get_data(as_text=True)
    page = seen[f"/console/cases/{desk.cases['closed']}"]
    again = admin.post(f"/console/cases/{desk.cases['closed']}/close",
                       data={"csrf_token": token(page), "reason": "done", "confirm": "yes"},
                       follow_redirects=True)
    seen["closed twice"] = again.get_data(as_text=True)
    flashed = re.findall(r'class="flash"[^>]*>([^<]*)<', seen["closed twice"])
    assert flashed == [{"uk": "Справа вже була закрита.", "en": "The case was already closed."}[locale]]
    ring = admin.post(f"/console/cases/{desk.cases['closed']}/callback",
                      data={"csrf_token": token(page)}, follow_redirects=True)
    seen["no callback on a closed case"] = ring.get_data(as_text=True)
    assert 'class="flash"' in seen["no callback on a closed case"]
    petro = desk.app.test_client()  # enrolling anew: the second factor was reset
    page = petro.get("/console/login").get_data(as_text=True)
    petro.post("/console/login", data={"name": "petro", "password": PASSWORD, "csrf_token": token(page)})
    seen["/console/login/code"] = petro.get("/console/login/code").get_data(as_text=True)
    found = {path: words for path, text in seen.items() if (words := foreign(text, locale))}
    assert found == {}


def test_a_case_says_one_state_in_words_that_agree(desk: Team) -> None:
    client = sign_in(desk, "sofia")
    states = {name: re.search(r'id="case-state">([^<]*)<', client.get(
        f"/console/cases/{desk.cases[name]}").get_data(as_text=True)) for name in desk.cases}
    said = {name: m.group(1) if m else None for name, m in states.items()}
    assert said["crimea"] == "призначена: olena"
    assert said["waiting"] == "чекає на оператора"
    assert said["failed"] == "обробляється"
    assert said["closed"] == "закрита"
    queue = client.get("/console/?show=all").get_data(as_text=True)
    row = queue.split(f">#{desk.cases['waiting']}<")[1].split("</tr>")[0]
    assert "чекає на оператора" in row and "призначена" not in row


def test_reasons_and_the_timeline_in_the_readers_words(desk: Team) -> None:
    client = sign_in(desk, "olena")
    case = desk.cases["crimea"]
    for _ in range(3):
        page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    reason = re.search(r'id="route-reason">([^<]*)<', page)
    assert reason and reason.group(1) == (
        "регіон: Крим, мова: російська → кандидатів: 1, на зміні: 1, з вільним місцем: 1; "
        "обрано: olena (відкритих справ: 0, найменше навантаження)")
    timeline = re.sub(r"<[^>]+>", "", page.split('class="timeline"')[1].split("</ol>")[0])
    lines = [" ".join(line.split()) for line in timeline.split("\n") if line.strip()] or [timeline]
    text = " ".join(lines)
    assert text.index("дзвінок на гарячу лінію") < text.index("справу створено — система")
    # three readings, one line: who, how many times, when last (14:00 in Kyiv)
    assert text.count("розшифровку прочитано") == 1
    assert "розшифровку прочитано, 3 рази, востаннє 14:00 — olena" in text
    failed = client.get(f"/console/cases/{desk.cases['failed']}").get_data(as_text=True)
    assert 'id="status-reason">не розшифровано: немає моделі розпізнавання для мови «російська»<' in failed
    client.post("/console/language", data={"locale": "en", "csrf_token": token(page)})
    english = re.sub(r"<[^>]+>", "", client.get(f"/console/cases/{case}").get_data(as_text=True))
    assert "chose olena (0 open case(s), least loaded)" in english
    assert "transcript read, 4 times, last 14:00 — olena" in english
    api = client.get(f"/console/api/cases/{case}").get_json()
    assert api["route_reason"].startswith("region crimea, language ru → 1 candidate(s)")  # English
    assert api["route_reason_code"] == "route-chose" and api["route_reason_values"]["region"] == "crimea"
    assert api["created_at"].endswith("+00:00")  # the JSON stays in UTC


@pytest.mark.parametrize(("zone", "received", "hour"), [
    ("Europe/Kyiv", "22.11.2026 14:00", "14:00"),  # UTC+2 in November
    ("Asia/Tokyo", "22.11.2026 21:00", "21:00"),
    ("America/New_York", "22.11.2026 07:00", "07:00"),
])
def test_times_are_in_the_readers_time_zone(team: Team, zone: str, received: str, hour: str) -> None:
    from ivr.operators import edit_operator

    edit_operator(team.db, team.vault, team.ids["olena"], timezone=zone)
    with team.db.session() as s:
        case = s.get(Case, team.cases["crimea"])
        assert case is not None
        case.created_at = SUNDAY
    client = sign_in(team, "olena")
    page = client.get(f"/console/cases/{team.cases['crimea']}").get_data(as_text=True)
    assert f'id="received"><time>{received}</time>' in page
    assert page.count(zone) == 1  # the zone, said once
    # the caller's own time next to the safe hours (Crimea: Moscow time, UTC+3)
    assert 'id="caller-now">15:00<' in page
    dashboard = client.get("/console/dashboard").get_data(as_text=True)
    hours = re.findall(r"<li>(\d\d:00) <b>", dashboard.split('id="chart-hours"')[1].split("</section>")[0])
    assert len(hours) == 24 and hours[-1] == hour


def test_the_hotline_time_zone_is_for_those_without_their_own(team: Team) -> None:
    with team.db.session() as s:
        op = s.get(Operator, team.ids["olena"])
        assert op is not None
        op.timezone = ""
    console = team.app.extensions["ivr.console"]
    console.settings = console.settings.replace(hotline_timezone="Asia/Tokyo")
    page = sign_in(team, "olena").get(f"/console/cases/{team.cases['crimea']}").get_data(as_text=True)
    assert "Asia/Tokyo (UTC+09:00)" in page


def test_ages_and_roles_in_the_readers_language(desk: Team) -> None:
    client = sign_in(desk, "sofia")
    queue = client.get("/console/?show=all").get_data(as_text=True)
    ages = set(re.findall(r"<td[^>]*>(\d+ (?:хв|год|дн\.))</td>", queue))
    assert {"2 дн.", "3 год"} <= ages, ages
    assert "sofia · супервізор" in queue
    operators = client.get("/console/operators").get_data(as_text=True)
    assert ">адміністратор</td>" in operators and "пн-пт 09:00-18:00" in operators


def test_the_case_page_says_whether_a_code_reaches_it_and_the_supervisors_see_a_burst(
        team: Team) -> None:
    from ivr.casecode import PIN_TRIES, SLOW_AFTER, Codes

    codes = Codes(team.db, team.vault)
    case, sid = team.cases["crimea"], f"CA{1:032x}"
    client = sign_in(team, "olena")
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    assert 'id="case-code">немає: телефоном до неї не звернутися<' in page
    code = codes.issue(sid)
    assert code is not None
    codes.choose_pin(sid, "2468", second=False)
    codes.choose_pin(sid, "2468", second=True)
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    assert "може звернутися до неї телефоном за кодом і PIN-кодом" in page and code not in page
    for _ in range(PIN_TRIES):
        codes.find("CAguess", code)
        codes.check_pin("CAguess", "1111")
    page = client.get(f"/console/cases/{case}").get_data(as_text=True)
    assert "заблокована після неправильних PIN-кодів до" in page
    # A burst of wrong codes: a line for supervisors on every page, naming nobody.
    for i in range(SLOW_AFTER):
        codes.find(f"CA{i}", f"{i:012d}")
    burst = "багато неправильних кодів справ"
    assert burst in sign_in(team, "sofia", 1).get("/console/").get_data(as_text=True)
    assert burst not in client.get("/console/").get_data(as_text=True)  # olena: an operator
