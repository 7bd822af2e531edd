"""After a voicemail: the operator is told by SMS, the case is re-offered or escalated, and the
callback rings the operator, whispers, bridges on 1 and records the outcome; nobody is called
without consent, and no number crosses to the other side. Real parts: the production flow,
the app, the Twilio REST stand-in over HTTP (through the real twilio client), the stand-in
phone playing both legs with signed webhooks, SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, update
from twilio.request_validator import RequestValidator

from ivr import callbacks, create_app, jobs
from ivr.callbacks import Policy, finish, in_window, next_in_window, reoffer_due
from ivr.casebook import close_case, show_case
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.operators import add_operator, edit_operator, recount
from ivr.standin import Created, FlaskTransport, Phone, ScriptedCaller, TwilioApi
from ivr.storage import CallbackAttempt, Case, Database, Operator, OutboxJob, Vault, upgrade, utcnow
from ivr.twiml import EMPTY
from ivr.voicemail import purge
from tests.conftest import BASE, ROOT, SUNDAY, TEST_KEYS, TOKEN, signed
from tests.servers import RedisServer

CALLER = "+79781234567"  # a Crimean mobile
HOTLINE = "+15005550006"
CRIMEA_CALLER_ID = "+15005550007"  # what callers in Crimea see (regions.yaml `caller_id`)
OLENA, TARAS, SOFIA = "+380501110001", "+380501110002", "+380501110003"
# flows/hotline.yaml: Russian, main menu 3 (a message), both intake questions skipped with #,
# the message ended with #, # at the PIN prompt (no PIN: the case code is dropped), then the
# callback question.
RUSSIAN_MESSAGE = ["1", "3", "#", "#", "#", "#"]


class Person(ScriptedCaller):
    """A scripted phone that also notes whom a <Dial> rang."""

    def __init__(self, presses: list[str]) -> None:
        super().__init__(presses)
        self.dialled: list[list[str]] = []

    def dial(self, numbers: list[str]) -> str:
        self.dialled.append(numbers)
        return super().dial(numbers)


@dataclass
class Desk:
    settings: Settings
    app: Flask
    api: TwilioApi
    db: Database
    vault: Vault

    def phone(self) -> Phone:
        return Phone(FlaskTransport(self.app), BASE, TOKEN, self.settings.twilio_account_sid, HOTLINE,
                     api=self.api)

    def voicemail(self, consent: str | None, number: str = CALLER) -> int:
        """A caller leaves a message and answers the callback question; the worker runs."""
        presses = RUSSIAN_MESSAGE + ([consent] if consent else [])
        log = self.phone().call(number, ScriptedCaller(presses))
        assert not log.errors, log.errors
        self.app.extensions["ivr.outbox"].run_here()
        with self.db.session() as s:
            return max(s.scalars(select(Case.id)))

    def case(self, case_id: int) -> Case:
        with self.db.session() as s:
            found = s.get(Case, case_id)
            assert found is not None
            return found

    def attempts(self, case_id: int) -> list[CallbackAttempt]:
        with self.db.session() as s:
            return list(s.scalars(select(CallbackAttempt).where(CallbackAttempt.case_id == case_id)
                                  .order_by(CallbackAttempt.id)))

    def env(self) -> dict[str, str]:
        s = self.settings
        return {"DATABASE_URL": s.database_url, "KEYSTORE_URL": s.keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
                "TWILIO_API_BASE": self.api.base_url, "TWILIO_ACCOUNT_SID": s.twilio_account_sid,
                "TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_BASE_URL": BASE, "HOTLINE_NUMBER": HOTLINE,
                "FLOWS_DIR": str(s.flows_dir), "INSTANCE_DIR": str(s.instance_dir),
                "IVR_DOTENV": "/nonexistent", "USER": "olena"}

    def add(self, name: str, number: str, **kw: str | int) -> int:
        args: dict[str, str | int] = {"languages": "ru,uk", "regions": "crimea", "timezone": "Europe/Kyiv",
                                      "hours": "always", **kw}
        return add_operator(self.db, self.vault, name=name, number=number, **args)  # type: ignore[arg-type]


@pytest.fixture
def desk(settings: Settings, database_url: str, keystore_url: str, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    """The production flow and regions (Crimea with a caller ID of its own)."""
    shutil.rmtree(settings.flows_dir)
    shutil.copytree(ROOT / "flows", settings.flows_dir, ignore=shutil.ignore_patterns("tests"))
    regions = settings.flows_dir / "regions.yaml"
    regions.write_text(regions.read_text(encoding="utf-8").replace(
        "    timezone: Europe/Simferopol  # Moscow time since 2014\n",
        f"    timezone: Europe/Simferopol\n    caller_id: \"{CRIMEA_CALLER_ID}\"\n"), encoding="utf-8")
    with TwilioApi(settings.twilio_account_sid, TOKEN, numbers=(HOTLINE, CRIMEA_CALLER_ID)) as api:
        s = settings.replace(twilio_api_base=api.base_url, database_url=database_url,
                             keystore_url=keystore_url, transfer_numbers=("+380441112233",),
                             transcribe_engines="en=whisper-tiny-en")  # no model for ru: routed all the same
        upgrade(database_url, keystore_url)
        jobs.use(lambda _settings: jobs.build_services(s))
        # The hotline's operators answer daily 08:00-22:00 Kyiv time: Sunday 14:00 is open.
        app = create_app(s, clock=lambda: SUNDAY, enqueue=False)
        yield Desk(s, app, api, app.extensions["ivr.db"], app.extensions["ivr.vault"])
        jobs.use(jobs.build_services)
        app.extensions["ivr.db"].engine.dispose()


def parse(twiml: str) -> ET.Element:
    return ET.fromstring(twiml)


# --- the whole callback ------------------------------------------------------------------------


def test_case_sms_callback_whisper_press_1_bridge_outcome(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    olena = desk.add("Olena", OLENA)
    desk.add("Taras", TARAS, regions="ukraine", languages="uk")
    case_id = desk.voicemail("1")  # "any time"

    case = desk.case(case_id)
    assert (case.status, case.operator_id, case.consent, case.callback_status) == (
        "routed", olena, "any", "waiting")
    assert case.route_reason is not None and case.route_reason.startswith("region crimea, language ru")
    assert case.status_reason == "not transcribed: no model for ru"  # routed all the same

    # The SMS: to Olena, from the hotline, a case number and a link, nothing of the caller.
    [sms] = desk.api.messages
    assert (sms.params["To"], sms.params["From"]) == (OLENA, HOTLINE)
    # In the language Olena reads the console in (Ukrainian, the default).
    assert sms.params["Body"] == (f"Гаряча лінія: справа {case_id} тепер ваша. Відкрийте її: "
                                  f"{BASE}/console/cases/{case_id}")

    # `ivr cases callback`: Twilio is asked to ring Olena from the hotline number.
    result = CliRunner().invoke(cli, ["cases", "callback", str(case_id)], env=desk.env())
    assert result.exit_code == 0, result.output
    assert "calling its operator" in result.output
    [call] = desk.api.calls
    assert (call.params["To"], call.params["From"]) == (OLENA, HOTLINE)
    [attempt] = desk.attempts(case_id)
    assert call.params["Url"] == f"{BASE}/twilio/callback/answer?a={attempt.id}"
    assert call.params["StatusCallback"] == f"{BASE}/twilio/callback/status?a={attempt.id}"
    assert desk.case(case_id).callback_status == "calling"

    # Olena answers, hears the whisper, presses 1; the caller picks up, hears a neutral
    # question in Russian, presses 1, and only then are the two bridged.
    olena_phone = Person(["1", "answer"])
    phone = desk.phone()
    log = phone.answer(call, olena_phone, callee=ScriptedCaller(["1"]))
    assert not log.errors and not phone.callee_log.errors, (log.errors, phone.callee_log.errors)
    heard = log.text()
    assert f"справа {case_id}" in heard and "російською" in heard and "crimea" in heard  # in Ukrainian
    assert "З'єднуємо" in heard and "Розмову завершено" in heard
    assert olena_phone.dialled == [[CALLER]]  # Twilio dials the caller; Olena hears no number
    assert phone.callee_log.text() == "\n".join(["Вам звонят. Чтобы ответить, нажмите 1."] * 2)
    assert phone.callee_log.ended == "end-of-document"  # the bridge

    [attempt] = desk.attempts(case_id)
    assert attempt.outcome == "answered" and attempt.confirmed_at is not None and attempt.seconds == 42
    case = desk.case(case_id)
    assert (case.callback_status, case.callback_attempts, case.acted_at is not None) == ("answered", 1, True)
    shown = show_case(desk.db, desk.vault, case_id, actor="test")
    assert shown is not None
    actions = [e["action"] for e in shown["timeline"]]
    for expected in ("case-created", "consent", "transcription_failed", "assigned", "sms-sent",
                     "callback-started", "callback-answered"):
        assert expected in actions, actions
    assert [c["outcome"] for c in shown["callbacks"]] == ["answered"]

    # Neither number anywhere the other side or a log could show it.
    logged = [r.getMessage() for r in caplog.records]
    everything = "\n".join([heard, sms.params["Body"], result.output, *logged])
    assert CALLER not in everything and CALLER[1:] not in everything
    assert OLENA not in heard and OLENA not in result.output

    # Purged: the operator's leg goes from Twilio's call log too, and its sid from ours.
    close_case(desk.db, case_id, "test:operator")
    assert purge(desk.db, desk.vault, timedelta(0), jobs.call_deleter(desk.settings)) == 1
    assert not desk.api.has_call(call.sid) and desk.api.was_deleted(call.sid)
    [attempt] = desk.attempts(case_id)
    assert attempt.call_sid is None and attempt.seconds == 30  # 42 s: the 30-60 s bucket


def test_the_bridge_shows_the_regions_caller_id_and_answers_on_bridge(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("2")  # daytime only: Sunday 14:00 UTC is 17:00 in Crimea
    tel = jobs.telephony_for(desk.settings)
    attempt = callbacks.start_callback(desk.db, desk.vault, tel, BASE, Policy(), case_id, now=SUNDAY)
    client = desk.app.test_client()
    params = {"CallSid": desk.api.calls[-1].sid, "AccountSid": desk.settings.twilio_account_sid,
              "From": HOTLINE, "To": OLENA, "CallStatus": "in-progress", "Direction": "outbound-api"}
    whisper = parse(signed(client, f"/twilio/callback/answer?a={attempt}", params).get_data(as_text=True))
    [gather] = whisper.iter("Gather")
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == f"{BASE}/twilio/callback/connect?a={attempt}"
    bridge = signed(client, f"/twilio/callback/connect?a={attempt}", {**params, "Digits": "1"})
    root = parse(bridge.get_data(as_text=True))
    [dial] = root.iter("Dial")
    assert dial.get("callerId") == CRIMEA_CALLER_ID and dial.get("answerOnBridge") == "true"
    assert dial.get("action") == f"{BASE}/twilio/callback/bridged?a={attempt}"
    assert [n.text for n in dial] == [CALLER]
    [number] = dial
    assert number.get("url") == f"{BASE}/twilio/callback/callee?a={attempt}"
    assert number.get("machineDetection") == "Enable"
    # A forged request to the same URL gets nothing.
    forged = client.post(f"/twilio/callback/connect?a={attempt}", data={**params, "Digits": "1"})
    assert forged.status_code == 403


class Machine(ScriptedCaller):
    """A voicemail box at the caller's number: answering-machine detection says so."""

    answered_by = "machine_start"


def test_a_captured_connect_request_replayed_gets_no_number(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: a signed `/twilio/callback/connect?a=N` with Digits=1, captured (a proxy log,
    a leaked capture) and sent again, answered with the caller's number each time."""
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    tel = jobs.telephony_for(desk.settings)
    attempt = callbacks.start_callback(desk.db, desk.vault, tel, BASE, Policy(), case_id, now=SUNDAY)
    params = {"CallSid": desk.api.calls[-1].sid, "AccountSid": desk.settings.twilio_account_sid,
              "From": HOTLINE, "To": OLENA, "CallStatus": "in-progress", "Direction": "outbound-api",
              "Digits": "1"}
    path = f"/twilio/callback/connect?a={attempt}"
    signature = RequestValidator(TOKEN).compute_signature(BASE + path, params)
    client = desk.app.test_client()

    def send() -> str:
        r = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        assert r.status_code == 200
        return str(r.get_data(as_text=True))

    first = send()
    assert CALLER in first and "<Dial" in first
    caplog.set_level(logging.INFO)
    for _ in range(3):  # during the call, and again and again
        again = send()
        assert CALLER not in again and "<Dial" not in again and "<Number" not in again
        assert parse(again).find("Say") is not None and "До побачення" in again
    finish(desk.db, Policy(), attempt, "answered", SUNDAY)
    after = send()  # long after the call ended
    assert CALLER not in after and "<Dial" not in after
    replays = [r.getMessage() for r in caplog.records if "asked for again" in r.getMessage()]
    assert len(replays) == 4 and all(CALLER not in m and CALLER[1:] not in m for m in replays)
    [row] = desk.attempts(case_id)
    assert row.outcome == "answered"  # the replays changed nothing


def test_the_callers_key_cannot_be_replayed_into_a_second_bridge(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    tel = jobs.telephony_for(desk.settings)
    attempt = callbacks.start_callback(desk.db, desk.vault, tel, BASE, Policy(), case_id, now=SUNDAY)
    client = desk.app.test_client()
    base = {"CallSid": "CA" + "c" * 32, "AccountSid": desk.settings.twilio_account_sid,
            "From": CRIMEA_CALLER_ID, "To": CALLER, "CallStatus": "in-progress",
            "Direction": "outbound-dial", "ParentCallSid": desk.api.calls[-1].sid}
    # Before the operator pressed 1 there is nothing to confirm.
    early = signed(client, f"/twilio/callback/callee?a={attempt}&e=key", {**base, "Digits": "1"})
    assert "<Hangup" in early.get_data(as_text=True)
    signed(client, f"/twilio/callback/connect?a={attempt}",
           {**base, "From": HOTLINE, "To": OLENA, "Digits": "1", "Direction": "outbound-api"})
    asked = signed(client, f"/twilio/callback/callee?a={attempt}", {**base, "AnsweredBy": "human"})
    root = parse(asked.get_data(as_text=True))
    [gather] = root.iter("Gather")
    assert gather.get("action") == f"{BASE}/twilio/callback/callee?a={attempt}&e=key"
    assert [say.get("language") for say in gather.iter("Say")] == ["ru-RU", "ru-RU"]
    said = " ".join(say.text or "" for say in root.iter("Say")).lower()
    assert said.startswith("вам звонят") and not any(
        word in said for word in ("hotline", "горяч", "линии", "лінії", "оператор"))
    key = {**base, "Digits": "1"}
    ok = signed(client, f"/twilio/callback/callee?a={attempt}&e=key", key)
    assert ok.get_data(as_text=True) == EMPTY  # the bridge
    again = signed(client, f"/twilio/callback/callee?a={attempt}&e=key", key)
    assert "<Hangup" in again.get_data(as_text=True)


@pytest.mark.parametrize(("pick_up", "presses", "callee", "outcome"), [
    ("busy", [], None, "operator-busy"),
    ("no-answer", [], None, "operator-no-answer"),
    ("answer", ["wait"], None, "not-confirmed"),  # the operator's voicemail took it: no key
    ("answer", ["2"], None, "not-confirmed"),
    ("answer", ["1", "busy"], None, "busy"),  # the caller's phone is busy
    ("answer", ["1", "no-answer"], None, "no-answer"),
    # Somebody answers the caller's phone but presses no key, or another key, or hangs up;
    # or a voicemail box answers: no bridge, and the try is counted as unanswered.
    ("answer", ["1", "answer"], ScriptedCaller(["wait"]), "callee-not-confirmed"),
    ("answer", ["1", "answer"], ScriptedCaller(["2"]), "callee-not-confirmed"),
    ("answer", ["1", "answer"], ScriptedCaller(["hangup"]), "callee-not-confirmed"),
    ("answer", ["1", "answer"], Machine(["1"]), "machine"),
])
def test_every_outcome_is_recorded_and_the_next_try_scheduled(
    desk: Desk, pick_up: str, presses: list[str], callee: ScriptedCaller | None, outcome: str
) -> None:
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    tel = jobs.telephony_for(desk.settings)
    callbacks.start_callback(desk.db, desk.vault, tel, BASE, Policy(), case_id, now=SUNDAY)
    phone = desk.phone()
    log = phone.answer(desk.api.calls[-1], Person(presses), pick_up=pick_up, callee=callee)
    assert not log.errors and not phone.callee_log.errors, (log.errors, phone.callee_log.errors)
    [attempt] = desk.attempts(case_id)
    assert attempt.outcome == outcome
    assert (attempt.callee_confirmed_at is None) and attempt.seconds is None
    if callee is not None:
        # Nothing was bridged; the phone heard (or a voicemail kept) nothing that names the
        # hotline, and a machine heard nothing at all.
        assert phone.callee_log.ended in ("hangup", "caller-hangup")
        said = phone.callee_log.text()
        assert said == "" if outcome == "machine" else said.startswith("Вам звонят")
        assert "Абонент не відповів" in log.text()  # what Olena hears
    case = desk.case(case_id)
    assert case.callback_status == "scheduled"
    assert case.next_callback_at == SUNDAY + timedelta(minutes=15)  # the app's clock: Sunday noon


def test_no_consent_means_nobody_is_called(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    refused = desk.voicemail("3")
    silent = desk.voicemail(None)  # hung up at the question
    for case_id in (refused, silent):
        case = desk.case(case_id)
        assert case.status == "routed" and case.callback_status == "none"
        result = CliRunner().invoke(cli, ["cases", "callback", str(case_id)], env=desk.env())
        assert result.exit_code == 1 and "did not agree to a callback" in result.output
    assert desk.case(refused).consent == "none" and desk.case(silent).consent is None
    assert desk.api.calls == []
    withheld = desk.voicemail(None, number="anonymous")  # not asked: no number to call
    result = CliRunner().invoke(cli, ["cases", "callback", str(withheld)], env=desk.env())
    assert result.exit_code == 1 and desk.api.calls == []


def test_outside_the_daytime_window_the_callback_waits_for_it(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("2")
    tel = jobs.telephony_for(desk.settings)
    night = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)  # 23:30 in Crimea
    with pytest.raises(callbacks.CallbackError, match=r"outside the caller's safe hours .* 2026-11-26 09:00"):
        callbacks.start_callback(desk.db, desk.vault, tel, BASE, Policy(), case_id, now=night)
    case = desk.case(case_id)
    assert case.callback_status == "scheduled"
    assert case.next_callback_at == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # 09:00 Moscow time
    assert desk.api.calls == []
    # The housekeeper queues it once due (and not before).
    assert callbacks.due_callbacks(desk.db, Policy(), night + timedelta(hours=1)) == []
    assert callbacks.due_callbacks(desk.db, Policy(), datetime(2026, 11, 26, 6, 1, tzinfo=UTC)) == [case_id]
    with desk.db.session() as s:
        assert [j.job for j in s.scalars(select(OutboxJob).where(OutboxJob.target_id == case_id,
                                                                 OutboxJob.job == callbacks.CALLBACK))] == [
            callbacks.CALLBACK]


# --- the schedule, the window, re-offers (on the database, without phones) -----------------


MOSCOW_EVENING = datetime(2026, 11, 25, 17, 50, tzinfo=UTC)  # 20:50 in Moscow and Crimea


@pytest.mark.parametrize(("consent", "tz", "at", "inside", "next_at"), [
    ("any", "Europe/Moscow", MOSCOW_EVENING + timedelta(hours=5), True, MOSCOW_EVENING + timedelta(hours=5)),
    ("day", "Europe/Moscow", MOSCOW_EVENING, True, MOSCOW_EVENING),
    ("day", "Europe/Moscow", MOSCOW_EVENING + timedelta(minutes=10), False,
     datetime(2026, 11, 26, 6, 0, tzinfo=UTC)),  # 21:00 is past: tomorrow 09:00
    ("day", "Europe/Moscow", datetime(2026, 11, 26, 3, 0, tzinfo=UTC), False,
     datetime(2026, 11, 26, 6, 0, tzinfo=UTC)),  # 06:00: today 09:00
    ("day", "Europe/Kyiv", MOSCOW_EVENING, True, MOSCOW_EVENING),  # 19:50 in Kyiv
    ("day", "Europe/Kyiv", datetime(2027, 3, 28, 5, 30, tzinfo=UTC), False,
     datetime(2027, 3, 28, 6, 0, tzinfo=UTC)),  # 08:30 summer time: opens 09:00 = 06:00 UTC
    ("none", "Europe/Moscow", MOSCOW_EVENING, False, None),
    (None, "Europe/Moscow", MOSCOW_EVENING, False, None),
])
def test_the_consent_window_in_the_callers_time_zone(
    consent: str | None, tz: str, at: datetime, inside: bool, next_at: datetime | None
) -> None:
    daytime = (9 * 60, 21 * 60)
    assert in_window(consent, tz, at, daytime) is inside
    assert next_in_window(consent, tz, at, daytime) == next_at


def test_attempts_follow_the_schedule_inside_the_window_then_give_up(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    case_id = desk.voicemail("2")
    policy = Policy(retry_minutes=(15, 60))
    tel = jobs.telephony_for(desk.settings)
    now = MOSCOW_EVENING - timedelta(hours=5)  # 15:50 in Crimea
    first = callbacks.start_callback(desk.db, desk.vault, tel, BASE, policy, case_id, now=now)
    finish(desk.db, policy, first, "no-answer", now)
    assert desk.case(case_id).next_callback_at == now + timedelta(minutes=15)
    now += timedelta(minutes=15)
    assert callbacks.due_callbacks(desk.db, policy, now) == [case_id]
    second = callbacks.start_callback(desk.db, desk.vault, tel, BASE, policy, case_id, now=now)
    edit_operator(desk.db, desk.vault, olena, on_duty=False)
    finish(desk.db, policy, second, "busy", now + timedelta(hours=4, minutes=30))  # 20:35 in Crimea
    # +60 min is 21:35: outside the daytime window, so tomorrow at 09:00 their time.
    assert desk.case(case_id).next_callback_at == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    later = datetime(2026, 11, 26, 6, 5, tzinfo=UTC)
    assert callbacks.due_callbacks(desk.db, policy, later) == []  # Olena is off duty: it waits
    edit_operator(desk.db, desk.vault, olena, on_duty=True)
    assert callbacks.due_callbacks(desk.db, policy, later) == [case_id]
    third = callbacks.start_callback(desk.db, desk.vault, tel, BASE, policy, case_id, now=later)
    finish(desk.db, policy, third, "failed", later)
    finish(desk.db, policy, third, "answered", later)  # a late duplicate changes nothing
    case = desk.case(case_id)
    assert (case.callback_status, case.callback_attempts, case.next_callback_at) == ("gave_up", 3, None)
    assert case.status_reason == "callback: gave up after 3 attempts"
    with pytest.raises(callbacks.CallbackError, match="gave up after 3 attempts"):
        callbacks.start_callback(desk.db, desk.vault, tel, BASE, policy, case_id, now=later)
    assert [a.outcome for a in desk.attempts(case_id)] == ["no-answer", "busy", "failed"]


def test_a_case_nobody_acts_on_goes_to_the_next_operator_then_to_supervisors(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    assert desk.case(case_id).operator_id == olena
    taras = desk.add("Taras", TARAS)  # joins after the case was given to Olena
    with desk.db.session() as s:
        found = s.get(Operator, taras)
        assert found is not None
        found.locale = "en"  # he reads the console, and his SMS, in English
    sofia = desk.add("Sofia", SOFIA, regions="elsewhere", role="supervisor")
    policy = Policy(reoffer_after=timedelta(minutes=30))
    assigned = desk.case(case_id).assigned_at
    assert assigned is not None

    assert reoffer_due(desk.db, policy, assigned + timedelta(minutes=29)) == []
    assert reoffer_due(desk.db, policy, assigned + timedelta(minutes=31)) == [case_id]
    case = desk.case(case_id)
    assert (case.operator_id, case.reoffers, case.notified_at) == (taras, 1, None)
    assert "(not 1 offered before)" in (case.route_reason or "")
    desk.app.extensions["ivr.outbox"].run_here()  # the notify job
    assert [m.params["To"] for m in desk.api.messages] == [OLENA, TARAS]
    assert desk.api.messages[-1].params["Body"] == (f"Hotline: case {case_id} is yours. Open it: "
                                                    f"{BASE}/console/cases/{case_id}")

    later = desk.case(case_id).assigned_at
    assert later is not None
    assert reoffer_due(desk.db, policy, later + timedelta(minutes=31)) == [case_id]
    case = desk.case(case_id)
    assert case.operator_id is None and case.route_reason is not None
    assert case.route_reason.endswith("unassigned, escalated to supervisors")
    desk.app.extensions["ivr.outbox"].run_here()
    last = desk.api.messages[-1]
    assert last.params["To"] == SOFIA
    assert last.params["Body"].startswith(  # Sofia reads Ukrainian; the region by its name
        f"Гаряча лінія: справу {case_id} (Крим, російська) не може взяти жоден оператор на зміні.")
    assert CALLER not in last.params["Body"]
    # Still nobody: no more messages to the supervisors every minute.
    assert reoffer_due(desk.db, policy, later + timedelta(hours=2)) == []
    assert sofia
    # Each hand-over kept the operators' open-case counts (the rule reads them) true.
    assert recount(desk.db) == 0
    with desk.db.session() as s:
        s.execute(update(Operator).where(Operator.id == olena).values(open_cases=7))  # a skew
    assert recount(desk.db) == 1 and recount(desk.db) == 0


def test_unassigned_cases_are_taken_up_at_the_next_tick_oldest_first(
        desk: Desk, redis_server: RedisServer) -> None:
    """Issue 12: cases filed while nobody was on duty waited REOFFER_MINUTES (30) after the
    operator came on duty; they go to the first operator who can take them at the next tick."""
    import redis

    olena = desk.add("Olena", OLENA, capacity=2)
    edit_operator(desk.db, desk.vault, olena, on_duty=False)
    filed = [desk.voicemail("1") for _ in range(3)]  # nobody on duty: escalated, unassigned
    assert [desk.case(i).operator_id for i in filed] == [None, None, None]
    result = CliRunner().invoke(cli, ["operators", "edit", str(olena), "--on-duty"], env=desk.env())
    assert result.exit_code == 0, result.output
    keeper = jobs.Housekeeper(desk.db, redis_server.url, policy=Policy(reoffer_after=timedelta(minutes=30)),
                              namespace=desk.settings.redis_namespace)

    def tick() -> None:
        redis.Redis.from_url(redis_server.url).delete(keeper.LOCK)
        assert keeper.tick()

    tick()  # seconds after the cases were filed, not 30 minutes
    cases = [desk.case(i) for i in filed]
    # Oldest first, up to Olena's capacity; the third stays for the next operator.
    assert [c.operator_id for c in cases] == [olena, olena, None]
    assert [c.reoffers for c in cases] == [0, 0, 0]  # taken up, not re-offered
    with desk.db.session() as s:
        told = set(s.scalars(select(OutboxJob.target_id).where(OutboxJob.job == callbacks.NOTIFY)))
        assert {filed[0], filed[1]} <= told
        assert s.get(Operator, olena).open_cases == 2  # type: ignore[union-attr]

    taras = desk.add("Taras", TARAS)
    tick()
    cases = [desk.case(i) for i in filed]
    # The third to Taras at once; Olena's two, not acted on for seconds, stay hers (the
    # re-offer clock is for assigned cases, and it has not run out).
    assert [c.operator_id for c in cases] == [olena, olena, taras]
    assert [c.reoffers for c in cases] == [0, 0, 0]
    # ... and when it has run out, the assigned case not acted on moves on as before.
    later = utcnow() + timedelta(minutes=31)
    show_case(desk.db, desk.vault, filed[0], actor=f"operator:{olena}")  # acted on: stays
    assert reoffer_due(desk.db, Policy(), later) == [filed[1], filed[2]]
    cases = [desk.case(i) for i in filed]
    # Never back to whom it was offered: Olena's second to Taras, Taras's to Olena (room again).
    assert [c.operator_id for c in cases] == [olena, taras, olena]
    assert [c.reoffers for c in cases] == [0, 1, 1]
    assert recount(desk.db) == 0


def test_an_operator_who_opens_the_case_keeps_it(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    desk.add("Taras", TARAS)
    case_id = desk.voicemail("1")
    owner = desk.case(case_id).operator_id
    assert owner in (olena, olena + 1)
    show_case(desk.db, desk.vault, case_id, actor=f"operator:{owner}")
    assigned = desk.case(case_id).assigned_at
    assert assigned is not None
    assert reoffer_due(desk.db, Policy(), assigned + timedelta(hours=3)) == []
    assert desk.case(case_id).operator_id == owner


# --- live transfer -----------------------------------------------------------------------------


def test_a_live_transfer_rings_matching_operators_on_duty_least_loaded_first(desk: Desk) -> None:
    olena = desk.add("Olena", OLENA)
    desk.add("Taras", TARAS)
    desk.add("Sofia", SOFIA, regions="ukraine", languages="uk")  # another region
    desk.add("Petro", "+380501110004", hours="mon-fri 09:00-18:00")  # not on a Sunday
    desk.voicemail("3")  # one open case for whoever got it
    with desk.db.session() as s:
        busy = s.scalars(select(Case.operator_id)).one()
    caller = Person(["1", "4", "answer"])  # Russian, main menu 4: an operator now
    log = desk.phone().call(CALLER, caller)
    assert not log.errors, log.errors
    assert "Соединяем с оператором" in log.text()
    expected = [TARAS, OLENA] if busy == olena else [OLENA, TARAS]
    assert caller.dialled == [expected]

    for op_id in (olena, olena + 1):
        edit_operator(desk.db, desk.vault, op_id, on_duty=False)
    nobody = Person(["1", "4", "answer"])
    desk.phone().call(CALLER, nobody)
    assert nobody.dialled == [["+380441112233"]]  # TRANSFER_NUMBERS, the fallback


def test_a_broken_database_rings_the_fallback_numbers_not_silence(desk: Desk) -> None:
    desk.add("Olena", OLENA)
    for name in ("ivr.db", "ivr.webhook_db"):  # the webhooks' own bounded connections too
        db = desk.app.extensions[name]
        db.engine.dispose()
        db._engine, db._sessions = None, None
        db.url = "postgresql+psycopg://nobody@127.0.0.1:1/gone"  # nothing listens there
    caller = Person(["1", "4", "answer"])
    log = desk.phone().call(CALLER, caller)
    assert not log.errors, log.errors
    assert caller.dialled == [["+380441112233"]]


def test_the_stand_in_refuses_a_caller_id_that_is_not_the_accounts() -> None:
    """Twilio refuses `from_` numbers the account does not own; so does the stand-in."""
    with TwilioApi("AC" + "1" * 32, TOKEN, numbers=(HOTLINE,)) as api:
        from ivr.providers import ProviderError, TwilioProvider

        provider = TwilioProvider("AC" + "1" * 32, TOKEN, api.base_url)
        with pytest.raises(ProviderError, match="HTTP 400"):
            provider.create_call(OLENA, "+15005550099", f"{BASE}/twilio/callback/answer?a=1",
                                 f"{BASE}/twilio/callback/status?a=1")
        assert isinstance(provider.create_call(OLENA, HOTLINE, f"{BASE}/x", f"{BASE}/y"), str)
        assert [c.params["To"] for c in api.calls] == [OLENA]
        assert isinstance(api.calls[0], Created)


def test_lost_jobs_are_queued_again_by_the_housekeeper(desk: Desk) -> None:
    """Redis restarted empty: an SMS job and a callback job are gone; the database knows."""
    desk.add("Olena", OLENA)
    case_id = desk.voicemail("1")
    with desk.db.session() as s:  # as if the SMS job had never run
        case = s.get(Case, case_id)
        assert case is not None and case.assigned_at is not None
        case.notified_at = None
        assigned = case.assigned_at
    assert callbacks.unnotified(desk.db, assigned + timedelta(minutes=4)) == []  # give it time
    assert callbacks.unnotified(desk.db, assigned + timedelta(minutes=6)) == [case_id]
    assert callbacks.unnotified(desk.db, assigned + timedelta(minutes=7)) == []  # queued already
    desk.app.extensions["ivr.outbox"].run_here()
    assert [m.params["To"] for m in desk.api.messages] == [OLENA, OLENA]
    assert callbacks.unnotified(desk.db, assigned + timedelta(hours=1)) == []

    with desk.db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.callback_status, case.next_callback_at = "scheduled", SUNDAY
    assert callbacks.due_callbacks(desk.db, Policy(), SUNDAY) == [case_id]
    assert desk.case(case_id).callback_status == "queued"
    assert callbacks.due_callbacks(desk.db, Policy(), SUNDAY + timedelta(minutes=5)) == []
    # The job never ran: after the lease it is queued again, and then placed.
    assert callbacks.due_callbacks(desk.db, Policy(), SUNDAY + timedelta(minutes=11)) == [case_id]
    desk.app.extensions["ivr.outbox"].run_here()
    assert [c.params["To"] for c in desk.api.calls] == [OLENA]
    assert desk.case(case_id).callback_status == "calling"


def test_every_ended_call_is_counted_once_without_its_number(desk: Desk) -> None:
    from ivr.storage import Call
    from tests.conftest import call_params

    client = desk.app.test_client()
    for duration in ("40", "41"):  # Twilio may deliver the callback twice
        params = call_params(CallSid="CA" + "e" * 32, From=CALLER, CallStatus="completed",
                             CallDuration=duration)
        assert signed(client, "/twilio/status", params).status_code == 200
    with desk.db.session() as s:
        [call] = s.scalars(select(Call).where(Call.call_sid == "CA" + "e" * 32))
        assert (call.region, call.seconds) == ("crimea", 41)
        assert call.started_at == SUNDAY - timedelta(seconds=40)


def test_call_counts_are_written_in_batches_and_kept_when_the_database_fails(desk: Desk) -> None:
    from ivr.storage import Call
    from ivr.voicemail import CallTally

    tally = CallTally(desk.db)
    tally.add("CA" + "1" * 32, "crimea", 30, SUNDAY)
    tally.add("CA" + "2" * 32, "russia", 20, SUNDAY)
    tally.add("CA" + "1" * 32, "crimea", 31, SUNDAY)  # twice: one row, the last length
    good = desk.db.url
    desk.db.engine.dispose()
    desk.db._engine, desk.db._sessions, desk.db.url = None, None, "postgresql+psycopg://nobody@127.0.0.1:1/gone"
    with pytest.raises(Exception):  # noqa: B017  (the driver's own error)
        tally.flush()
    desk.db._engine, desk.db._sessions, desk.db.url = None, None, good
    assert tally.flush() == 3
    with desk.db.session() as s:
        rows = sorted(((c.call_sid or "")[:3], c.region, c.seconds) for c in s.scalars(
            select(Call).where(Call.call_sid.in_(["CA" + "1" * 32, "CA" + "2" * 32]))))
    assert rows == [("CA1", "crimea", 31), ("CA2", "russia", 20)]
    assert tally.flush() == 0
