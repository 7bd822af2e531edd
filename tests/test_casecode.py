"""Case codes and PINs: said after the message, chosen twice, found again from any phone, and
never anywhere in clear; guessing locked out per case and slowed down for all.

The flow scenarios (flows/tests/hotline.yaml, "calling again") walk the `case_code` step's
branches with a planted case; here the real app, database and key store do the work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import func, select

from ivr import create_app
from ivr.casecode import (
    CODE_BURST,
    CODE_DIGITS,
    LOCK,
    PIN_TRIES,
    SLOW_AFTER,
    SLOW_SECONDS,
    STOP_AFTER,
    WINDOW,
    Codes,
    tell_supervisors,
)
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.standin import FlaskTransport, Phone, ScriptedCaller
from ivr.standin.phone import HttpReply
from ivr.storage import Case, CodeEntry, CodeMiss, Database, OutboxJob, Vault, upgrade, utcnow
from tests.conftest import ROOT, SUNDAY, TEST_KEYS, TOKEN, RedisServer

UKRAINE = "+380501234567"
ELSEWHERE = "+441234567890"
# flows/hotline.yaml: Ukrainian, main menu 3 (a message), both intake questions skipped, the
# message ended with #; then the PIN prompts; then 3: do not call back.
MESSAGE_UK = ["2", "3", "#", "#", "#"]


class SeeingTransport(FlaskTransport):
    """The stand-in's side of the wire, kept: every URL and form it sent, every TwiML it got."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.urls: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.answers: list[str] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        self.urls.append(url)
        self.forms.append(dict(params))
        reply = super().post(url, params, headers)
        self.answers.append(reply.body)
        return reply


@dataclass
class Line:
    settings: Settings
    app: Flask
    db: Database
    vault: Vault
    wire: list[SeeingTransport] = field(default_factory=list)

    def call(self, presses: list[str], from_: str = UKRAINE) -> str:
        """One call; what the caller heard."""
        transport = SeeingTransport(self.app)
        self.wire.append(transport)
        phone = Phone(transport, self.settings.public_base_url, TOKEN,
                      self.settings.twilio_account_sid, self.settings.hotline_number)
        log = phone.call(from_, ScriptedCaller(presses))
        assert not log.errors, log.errors
        return log.text()

    def case(self) -> Case:
        with self.db.session() as s:
            found = s.scalars(select(Case).order_by(Case.id.desc())).first()
            assert found is not None
            return found


@pytest.fixture
def line(settings: Settings, redis_server: RedisServer) -> Iterator[Line]:
    """The shipped hotline on SQLite (a file and its WAL to search) and a Redis of its own
    (the jobs go there); no worker: the case is made when the message is reported, as in
    production."""
    shutil.rmtree(settings.flows_dir)
    shutil.copytree(ROOT / "flows", settings.flows_dir, ignore=shutil.ignore_patterns("tests"))
    settings = settings.replace(redis_url=redis_server.url)
    upgrade(settings.database_url, settings.keystore_url)
    app = create_app(settings, clock=lambda: SUNDAY)
    yield Line(settings, app, app.extensions["ivr.db"], app.extensions["ivr.vault"])
    app.extensions["ivr.db"].engine.dispose()


def redis_values(url: str) -> list[bytes]:
    """Every key and value in Redis, and each value decompressed where it is (rq's job data)."""
    r = redis.Redis.from_url(url)
    found: list[bytes] = []
    for key in r.scan_iter():
        found.append(key)
        kind = r.type(key)
        values: list[Any] = []
        if kind == b"string":
            values = [r.get(key)]
        elif kind == b"hash":
            values = list(r.hgetall(key).values())
        elif kind == b"list":
            values = list(r.lrange(key, 0, -1))
        elif kind == b"set":
            values = list(r.smembers(key))
        elif kind == b"zset":
            values = list(r.zrange(key, 0, -1))
        for value in values:
            if isinstance(value, bytes):
                found.append(value)
                with contextlib.suppress(zlib.error):
                    found.append(zlib.decompress(value))
    return found


def heard_code(heard: str) -> str:
    """The digits said after "the code is" and again after "once more" (or the uk words)."""
    found = re.findall(r"(?:Код:|Повторюю код:)\n((?:\d(?:, \d)*\n?)+)", heard)
    codes = ["".join(re.findall(r"\d", block)) for block in found]
    assert len(codes) == 2 and codes[0] == codes[1], heard
    assert len(codes[0]) == CODE_DIGITS
    return codes[0]


def test_a_caller_hears_a_code_chooses_a_pin_and_reaches_the_case_from_another_phone(
        line: Line, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    heard = line.call([*MESSAGE_UK, "73915#", "73915#", "3"])
    code = heard_code(heard)
    assert "нікому не показуйте" in heard  # why to keep it secret
    assert "PIN-код збережено" in heard and "натисніть 5" in heard
    assert "Дякуємо, ваше повідомлення отримано" in heard  # the flow went on: no callback
    case = line.case()
    assert case.code_hash is not None and case.pin_hash is not None and case.language == "uk"
    # Another phone, in English: the case answers in the language it was left in.
    again = line.call(["3", "5", f"{code}#", "73915#"], from_=ELSEWHERE)
    assert "Enter your 12-digit case code" in again and "Enter your PIN" in again
    assert "Вашу справу знайдено" in again and "поки що цього зробити не можна" in again
    assert again.rindex("Головне меню") > again.index("Вашу справу знайдено")

    # Nowhere in clear: the database file and its WAL, the key store, the logs, every URL and
    # form the stand-in sent, every TwiML answer but the one that said the code.
    pin = "73915"
    stores = [Path(line.settings.database_url.removeprefix("sqlite:///")),
              Path(line.settings.keystore_url.removeprefix("sqlite:///"))]
    for db_file in stores:
        for path in (db_file, db_file.with_name(db_file.name + "-wal")):
            if path.exists():
                raw = path.read_bytes()
                assert code.encode() not in raw and pin.encode() not in raw, path
    kept = redis_values(line.settings.redis_url)
    assert any(b"process_recording" in v for v in kept)  # the job is there: the search is real
    assert not any(code.encode() in v or pin.encode() in v for v in kept)
    logged = caplog.text
    assert code not in logged and code not in str([r.args for r in caplog.records])
    urls = [u for t in line.wire for u in t.urls]
    assert not any(code in u or pin in u for u in urls)
    answers = [a for t in line.wire for a in t.answers]
    spoken = [a for a in answers if "Повторюю код" in a]
    assert len(spoken) == 1  # the recording webhook's answer, and nothing else
    assert not any(code in re.sub(r"\D", "", a) for a in answers if a not in spoken)
    assert not any(pin in a for a in answers)
    # The PIN travels only as Twilio's Digits, in a request body (Twilio's own logs: README).
    assert [f["Digits"] for t in line.wire for f in t.forms
            if f.get("Digits", "").rstrip("#") == pin] == [f"{pin}#"] * 3
    # What tools and the console read: whether it has one, never the code.
    env = {"DATABASE_URL": line.settings.database_url, "KEYSTORE_URL": line.settings.keystore_url,
           "IVR_DATA_KEYS": TEST_KEYS, "FLOWS_DIR": str(line.settings.flows_dir),
           "INSTANCE_DIR": str(line.settings.instance_dir), "IVR_DOTENV": "/nonexistent"}
    result = CliRunner().invoke(cli, ["cases", "show", str(case.id), "--json"], env=env)
    shown = json.loads(result.output)
    assert shown["has_code"] is True and shown["code_locked_until"] is None
    assert code not in result.output and case.code_hash not in result.output


def test_hash_at_the_pin_prompt_means_no_pin_and_nobody_can_reach_the_case(line: Line) -> None:
    heard = line.call([*MESSAGE_UK, "#", "3"])
    code = heard_code(heard)
    assert "не зможе звернутися ніхто, навіть ви" in heard
    assert "Дякуємо, ваше повідомлення отримано" in heard
    case = line.case()
    assert case.code_hash is None and case.pin_hash is None
    again = line.call(["3", "5", f"{code}#", "#"], from_=ELSEWHERE)
    assert "did not match" in again and "We could not find a case" in again
    assert "Enter your PIN" not in again


@pytest.mark.parametrize(("pins", "said", "kept"), [
    (["12#", "2468#", "2468#"], "має складатися з 4–8 цифр", True),  # too short, then right
    (["123456789#", "2468#", "2468#"], "має складатися з 4–8 цифр", True),  # too long (9)
    (["2468#", "1357#", "2468#", "2468#"], "не збіглися", True),  # differ, then again
    (["2468#", "1357#", "2468#", "1357#", "1#"], "не збіглися", False),  # three misses: none
    (["2468#", "wait"], "Наберіть цей PIN-код ще раз", False),  # silence at the second: none
])
def test_choosing_a_pin(line: Line, pins: list[str], said: str, kept: bool) -> None:
    heard = line.call([*MESSAGE_UK, *pins, "3"])
    assert said in heard
    case = line.case()
    assert (case.pin_hash is not None) is kept and (case.code_hash is not None) is kept
    assert ("PIN-код збережено" in heard) is kept
    assert "Чи можна вам передзвонити" in heard  # the flow goes on either way


def test_a_retried_recording_webhook_gives_a_new_code_the_old_one_is_dead(line: Line) -> None:
    first = heard_code(line.call([*MESSAGE_UK, "2468#", "2468#", "3"]))
    codes = Codes(line.db, line.vault)
    with line.db.session() as s:
        call_sid = s.scalars(select(CodeEntry.call_sid)).first()
    assert call_sid is None  # the link between call and case is gone once the PIN is set
    case = line.case()
    from ivr.storage import Call
    with line.db.session() as s:
        sid = s.scalars(select(Call.call_sid).where(Call.id == case.call_id)).one()
    assert sid is not None
    second = codes.issue(sid)  # Twilio asked the recording webhook again
    assert second is not None and second != first
    assert codes.find("CAother", first).outcome == "wrong"


# --- guessing: the tables -----------------------------------------------------------------


@pytest.fixture
def desk(settings: Settings, database_url: str, keystore_url: str) -> Iterator[tuple[Codes, Database]]:
    """Codes on SQLite and PostgreSQL: the counts and locks live in the database, so every
    gunicorn worker sees the same ones."""
    upgrade(database_url, keystore_url)
    s = settings.replace(database_url=database_url, keystore_url=keystore_url)
    app = create_app(s, clock=lambda: SUNDAY)
    db, vault = app.extensions["ivr.db"], app.extensions["ivr.vault"]
    yield Codes(db, vault), db
    db.engine.dispose()


def planted(codes: Codes, db: Database, pin: str = "2468", language: str = "ru") -> str:
    """A case with a code and PIN, made the way the recording webhook makes them."""
    from ivr.storage import Call, Recording
    with db.session() as s:
        call = Call(call_sid=f"CA{utcnow().timestamp()}", language=language)
        s.add(call)
        s.flush()
        rec = Recording(recording_sid=f"RE{call.id:032x}", call_id=call.id)
        s.add(rec)
        s.flush()
        s.add(Case(call_id=call.id, recording_id=rec.id, data_key_id=codes.vault.new_key(),
                   language=language))
        sid = call.call_sid
    assert sid is not None
    code = codes.issue(sid)
    assert code is not None
    assert codes.choose_pin(sid, pin, second=False) == "again"
    assert codes.choose_pin(sid, pin, second=True) == "set"
    return code


@pytest.mark.parametrize(("entered", "outcome"), [
    ("", "wrong"), ("12345", "wrong"), ("abc", "wrong"), ("0" * 12, "wrong"),
    ("1" * 13, "wrong"), ("right", "found"),
])
def test_codes_that_are_right_and_wrong(desk: tuple[Codes, Database], entered: str,
                                        outcome: str) -> None:
    codes, db = desk
    code = planted(codes, db)
    assert codes.find("CAcaller", code if entered == "right" else entered).outcome == outcome
    with db.session() as s:
        misses = s.scalar(select(func.count(CodeMiss.id)))
    assert misses == (0 if outcome == "found" else 1)


def test_wrong_pins_lock_the_case_then_the_lock_passes(desk: tuple[Codes, Database]) -> None:
    codes, db = desk
    code = planted(codes, db, language="uk")
    now = utcnow()
    outcomes = []
    for pin in ["1111", "2222", "3333"]:
        assert codes.find("CAx", code, now).outcome == "found"
        outcomes.append(codes.check_pin("CAx", pin, now).outcome)
    assert outcomes == ["wrong"] * (PIN_TRIES - 1) + ["locked"]
    # Locked: even the right PIN cannot be tried; the console and the CLI say until when.
    assert codes.find("CAx", code, now + LOCK - timedelta(minutes=1)).outcome == "locked"
    with db.session() as s:
        case = s.scalars(select(Case)).one()
        assert case.code_locked_until is not None
    # The next PIN_TRIES wrong ones lock it for twice as long; a right PIN starts afresh.
    later = now + LOCK + timedelta(minutes=1)
    for pin in ["4444", "5555", "6666"]:
        assert codes.find("CAx", code, later).outcome == "found"
        codes.check_pin("CAx", pin, later)
    assert codes.find("CAx", code, later + LOCK * 2 - timedelta(minutes=1)).outcome == "locked"
    latest = later + LOCK * 2 + timedelta(minutes=1)
    assert codes.find("CAx", code, latest).outcome == "found"
    right = codes.check_pin("CAx", "2468", latest)
    assert (right.outcome, right.language) == ("right", "uk")
    with db.session() as s:
        assert s.scalars(select(Case.pin_failures)).one() == 0


@pytest.mark.parametrize(("failures", "hours"), [(3, 1), (6, 2), (9, 4), (12, 8), (33, 1024),
                                                 (300, 1024)])
def test_each_lock_after_the_first_is_twice_as_long(failures: int, hours: int) -> None:
    from ivr.casecode import lock_after
    assert lock_after(failures) == LOCK * hours


def test_a_right_pin_resets_the_count_of_wrong_ones(desk: tuple[Codes, Database]) -> None:
    codes, db = desk
    code = planted(codes, db)
    for pin in ["1111", "2222", "2468", "1111", "2222", "2468"]:
        assert codes.find("CAx", code).outcome == "found"
        assert codes.check_pin("CAx", pin).outcome == ("right" if pin == "2468" else "wrong")


def test_a_pin_without_a_code_found_first_is_never_checked(desk: tuple[Codes, Database]) -> None:
    codes, db = desk
    planted(codes, db)
    assert codes.check_pin("CAnever-entered-a-code", "2468").outcome == "gone"


def test_a_burst_of_wrong_codes_slows_every_entry_then_refuses_and_tells_once(
        desk: tuple[Codes, Database]) -> None:
    codes, db = desk
    code = planted(codes, db)
    now = utcnow()
    seen = [codes.find(f"CA{i}", f"{i:012d}", now) for i in range(SLOW_AFTER + 5)]
    assert [f.slow for f in seen] == [False] * SLOW_AFTER + [True] * 5
    # The right code still works under the burst, after the wait.
    found = codes.find("CAowner", code, now)
    assert (found.outcome, found.slow) == ("found", True)
    with db.session() as s:
        alarms = list(s.scalars(select(OutboxJob).where(OutboxJob.job == CODE_BURST)))
    assert len(alarms) == 1  # told once, not once per wrong code
    for i in range(STOP_AFTER):
        codes.find(f"CB{i}", f"{i:012d}", now)
    assert codes.find("CAowner", code, now).outcome == "busy"
    # The burst ages out.
    assert codes.find("CAowner", code, now + WINDOW + timedelta(seconds=1)).outcome == "found"


def test_the_supervisors_sms_names_no_caller(desk: tuple[Codes, Database]) -> None:
    codes, db = desk
    from ivr.operators import add_operator
    add_operator(db, codes.vault, name="sofia", number="+380501110003", languages="uk",
                 regions="ukraine", timezone="Europe/Kyiv", hours="mon-fri 09:00-18:00", role="supervisor")
    now = utcnow()
    for i in range(SLOW_AFTER):
        codes.find(f"CA{i}", f"{i:012d}", now)
    with db.session() as s:
        job = s.scalars(select(OutboxJob).where(OutboxJob.job == CODE_BURST)).one()
    sent: list[tuple[str, str]] = []

    def send_sms(to: str, body: str) -> str:
        sent.append((to, body))
        return "SM1"

    assert tell_supervisors(db, codes.vault, send_sms, "https://hotline.example.org",
                            job.target_id) == 1
    assert sent[0][0] == "+380501110003"
    assert "wrong case codes" in sent[0][1] and "CA" not in sent[0][1]


def test_a_hotline_under_a_burst_makes_the_caller_wait_before_each_answer(line: Line) -> None:
    codes = Codes(line.db, line.vault)
    for i in range(SLOW_AFTER):
        codes.find(f"CA{i}", f"{i:012d}", SUNDAY)
    line.call(["3", "5", "111111111111#"], from_=ELSEWHERE)
    answers = line.wire[-1].answers
    assert any(f'<Response><Pause length="{SLOW_SECONDS}" />' in a for a in answers)


def test_a_message_found_empty_while_its_pin_is_being_chosen_is_dropped_cleanly(
        desk: tuple[Codes, Database]) -> None:
    """The worker drops a short recording with no speech even if the caller is at the PIN
    prompt: the link between call and case goes with the case, and the flow goes on."""
    from ivr.storage import Call, Recording
    from ivr.voicemail import EMPTY, Tools, process_recording
    codes, db = desk
    with db.session() as s:
        call = Call(call_sid="CAsilent")
        s.add(call)
        s.flush()
        rec = Recording(recording_sid="RE" + "0" * 32, call_id=call.id, duration=1)
        s.add(rec)
        s.flush()
        s.add(Case(call_id=call.id, recording_id=rec.id, data_key_id=codes.vault.new_key()))
        rec_id = rec.id
    assert codes.issue("CAsilent") is not None
    tools = Tools(fetch=lambda _sid: b"RIFF", delete=lambda _sid: None,
                  check_audio=lambda _wav: None, transcribe=lambda *_a: None,  # type: ignore[arg-type]
                  speech=lambda _wav: False)
    assert process_recording(db, codes.vault, tools, rec_id) == EMPTY
    with db.session() as s:
        assert s.scalar(select(func.count(Case.id))) == 0
        assert s.scalar(select(func.count(CodeEntry.call_sid))) == 0
    assert codes.choose_pin("CAsilent", "2468", second=False) == "gone"


def test_a_hotline_flooded_with_wrong_codes_asks_callers_to_call_later(line: Line) -> None:
    codes = Codes(line.db, line.vault)
    for i in range(STOP_AFTER):
        codes.find(f"CA{i}", f"{i:012d}", SUNDAY)
    heard = line.call(["3", "5", "111111111111#"], from_=ELSEWHERE)
    assert "Entering codes is not possible right now" in heard
    assert "We could not find a case" in heard and "did not match" not in heard


def test_a_closed_case_keeps_its_code_a_confirmed_probe_loses_it(desk: tuple[Codes, Database]) -> None:
    """Closing is not the end of the caller's line (until the purge); a supervisor's confirmed
    probe is: its code and PIN hashes are dropped and the code finds nothing."""
    from ivr.casebook import close_case
    from ivr.probes import confirm_probe, flag_case

    codes, db = desk
    code = planted(codes, db)
    with db.session() as s:
        case_id = s.scalars(select(Case.id).where(Case.code_hash.is_not(None))).one()
    close_case(db, case_id, "operator:1", "helped")
    assert codes.find("CAagain", code).outcome == "found"
    other = planted(codes, db)
    with db.session() as s:
        probe = s.scalars(select(Case.id).where(Case.id != case_id)).one()
    flag_case(db, codes.vault, probe, "operator:1", "asks where the unit stands")
    assert codes.find("CAprobe", other).outcome == "found"  # a prober learns nothing yet
    confirm_probe(db, probe, "operator:3")
    assert codes.find("CAprobe2", other).outcome == "wrong"
    with db.session() as s:
        found = s.get(Case, probe)
        assert found is not None and (found.code_hash, found.pin_hash) == (None, None)
