"""Voicemail to case, end to end with real parts: a caller leaves a message through the
stand-in phone, the app answers and notes it, a real rq worker on a Redis of the test's own
fetches it from the Twilio stand-in over HTTP, seals it, deletes it there and transcribes
it with the bundled offline model. Run on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from rq import Queue, Retry, SimpleWorker
from rq.registry import StartedJobRegistry
from sqlalchemy import select, text, update

from ivr import create_app, jobs
from ivr.casebook import close_case, list_cases, show_case
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.standin import FlaskTransport, Phone, ScriptedCaller, TwilioApi
from ivr.storage import AuditEntry, Call, Case, Database, DataKey, OutboxJob, Recording, Vault, upgrade
from ivr.voicemail import LENGTHS, process_recording, purge
from tests.audio import speak
from tests.conftest import ROOT, SUNDAY, TEST_KEYS, TOKEN, RedisServer, healthz_details

NUMBER = "+79161234567"
WORDS = "I want to surrender. Please call me back tomorrow."



def sid_of(rec: Recording) -> str:
    """A recording's sid (None only once purged)."""
    assert rec.recording_sid is not None
    return rec.recording_sid

@pytest.fixture(scope="module")
def message() -> bytes:
    """What the caller says into the phone: real speech at telephone quality."""
    return speak(WORDS)


@dataclass
class Hotline:
    settings: Settings
    app: Flask
    api: TwilioApi
    redis: RedisServer
    db: Database
    vault: Vault

    def call(self, presses: list[str], audio: bytes | None, from_: str = NUMBER) -> None:
        caller = ScriptedCaller(presses, recording=audio)
        phone = Phone(FlaskTransport(self.app), self.settings.public_base_url, TOKEN,
                      self.settings.twilio_account_sid, self.settings.hotline_number, api=self.api)
        log = phone.call(from_, caller)
        assert not log.errors, log.errors
        assert "Goodbye" in log.text() or "До свидания" in log.text() or "До побачення" in log.text()

    def worker_env(self, tmp_path: Path) -> dict[str, str]:
        """The environment an `ivr worker` process of this hotline runs with."""
        s = self.settings
        return {**os.environ, "DATABASE_URL": s.database_url, "KEYSTORE_URL": s.keystore_url,
                "REDIS_URL": self.redis.url, "TWILIO_API_BASE": self.api.base_url,
                "TWILIO_ACCOUNT_SID": s.twilio_account_sid, "TWILIO_AUTH_TOKEN": TOKEN,
                "IVR_DATA_KEYS": TEST_KEYS, "INSTANCE_DIR": str(tmp_path / "instance"),
                "FLOWS_DIR": str(s.flows_dir), "IVR_DOTENV": "/nonexistent",
                "REDIS_NAMESPACE": s.redis_namespace,  # the app's (its settings are made by hand)
                "TRANSCRIBE_CACHE": str(s.model_cache)}

    def work(self) -> None:
        """A real rq worker, in this process, until the queue is empty."""
        conn = redis.Redis.from_url(self.redis.url)
        SimpleWorker([Queue(jobs.QUEUE, connection=conn)], connection=conn).work(burst=True)

    def cases(self) -> list[Case]:
        with self.db.session() as s:
            return list(s.scalars(select(Case).order_by(Case.id)))

    def recordings(self) -> list[Recording]:
        with self.db.session() as s:
            return list(s.scalars(select(Recording).order_by(Recording.id)))


# After the message, the callback question the production hotline asks (mini.yaml has none).
CONSENT_STEPS = """    next: consent
  consent:
    type: menu
    prompt: {ru: "Перезвонить?", uk: "Передзвонити?", en: "Call you back? Yes 1, daytime 2, no 3"}
    options: {1: cb_any, 2: cb_day, 3: cb_none}
    on_failure: cb_none
  cb_any: {type: set, variables: {callback: any}, next: bye}
  cb_day: {type: set, variables: {callback: day}, next: bye}
  cb_none: {type: set, variables: {callback: none}, next: bye}
"""


def with_consent(flows_dir: Path) -> None:
    mini = flows_dir / "mini.yaml"
    text = mini.read_text(encoding="utf-8")
    at = text.index("en: Speak after the tone}\n") + len("en: Speak after the tone}\n")
    assert text[at:].startswith("    next: bye\n")
    mini.write_text(text[:at] + CONSENT_STEPS + text[at + len("    next: bye\n"):], encoding="utf-8")


@pytest.fixture
def hotline(settings: Settings, database_url: str, keystore_url: str, redis_server: RedisServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Hotline]:
    monkeypatch.setattr(jobs, "RETRY", Retry(max=5))  # retries at once: the test does not wait
    with_consent(settings.flows_dir)
    shutil.copy(ROOT / "flows" / "regions.yaml", settings.flows_dir / "regions.yaml")
    with TwilioApi(settings.twilio_account_sid, TOKEN) as api:
        s = settings.replace(twilio_api_base=api.base_url, redis_url=redis_server.url,
                             database_url=database_url, keystore_url=keystore_url)
        upgrade(database_url, keystore_url)
        jobs.use(lambda _settings: jobs.build_services(s))
        app = create_app(s, clock=lambda: SUNDAY)
        db = app.extensions["ivr.db"]
        yield Hotline(s, app, api, redis_server, db, jobs.services().vault)
        jobs.use(jobs.build_services)
        db.engine.dispose()


ENGLISH_VOICEMAIL = ["3", "#", "1"]  # English, (Sunday: closed) a message ended with #, callback: any


def test_a_voicemail_becomes_a_transcribed_case_and_leaves_twilio(
    hotline: Hotline, message: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hotline.call(ENGLISH_VOICEMAIL, message)
    [case] = hotline.cases()
    assert (case.status, case.language, case.region, case.flow, case.step) == (
        "new", "en", "russia", "hotline", "voicemail")
    [rec] = hotline.recordings()
    assert hotline.api.recording(sid_of(rec)) is not None  # still at Twilio until stored

    # The job in Redis carries the recording's row id and nothing else.
    conn = redis.Redis.from_url(hotline.redis.url)
    [job] = Queue(jobs.QUEUE, connection=conn).jobs
    assert job.args == (rec.id,) and job.kwargs == {}

    hotline.work()
    [case] = hotline.cases()
    assert case.status == "routed", case.status_reason
    assert case.transcript_engine == "whisper-tiny-en"
    assert hotline.api.was_deleted(sid_of(rec))
    found = show_case(hotline.db, hotline.vault, case.id, actor="test:admin")
    assert found is not None
    assert "surrender" in found["transcript"].lower()
    assert found["recording_deleted_at_provider"] is not None
    assert [e["action"] for e in found["timeline"]] == [
        "case-created", "consent", "transcribed", "unassigned", "escalated", "transcript-read"]
    assert (found["consent"], found["callback_status"], found["transcription"]) == ("any", "waiting", "done")

    # Nothing in clear: not in the logs, not in Redis, not in the database's bytes.
    secrets_ = [NUMBER, NUMBER[1:], "surrender", "tomorrow"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [w for w in secrets_ if w in logged]
    dump = b"".join(conn.dump(k) or b"" for k in conn.keys("*"))
    assert not [w for w in secrets_ if w.encode() in dump]
    for engine, tables in ((hotline.db.engine, ("calls", "recordings", "cases", "audit", "outbox")),
                           (hotline.vault.keys.engine, ("data_keys",))):
        with engine.connect() as c:
            for table in tables:
                for row in c.execute(text(f"SELECT * FROM {table}")):
                    raw = repr(tuple(row)).encode()
                    assert not [w for w in secrets_ if w.encode() in raw], table
                    assert message[44:1044] not in b"".join(v for v in row if isinstance(v, bytes))


def test_twilio_delivering_a_recording_twice_makes_one_case(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    [rec] = hotline.recordings()
    with hotline.app.test_client() as client:
        from tests.conftest import call_params, signed

        for _ in range(2):  # the status callback again, as a retry would bring it
            params = call_params(RecordingSid=sid_of(rec), RecordingStatus="completed",
                                 RecordingDuration="4",
                                 RecordingUrl=hotline.api.recording_url(sid_of(rec)))
            with hotline.db.session() as s:
                params["CallSid"] = str(s.get(Call, rec.call_id).call_sid)  # type: ignore[union-attr]
            assert signed(client, "/twilio/recording?l=en", params).status_code == 200
    assert len(hotline.cases()) == 1 and len(hotline.recordings()) == 1
    with hotline.db.session() as s:
        assert len(s.scalars(select(OutboxJob)).all()) == 1
    hotline.work()
    assert [c.status for c in hotline.cases()] == ["routed"]


def test_an_empty_message_is_noted_on_the_call_not_made_a_case(hotline: Hotline) -> None:
    hotline.call(["3", "wait", "3"], None)  # the caller says nothing at the tone
    assert hotline.cases() == [] and hotline.recordings() == []
    with hotline.db.session() as s:
        [call] = s.scalars(select(Call)).all()
        assert call.note is not None and "empty or absent" in call.note


def test_no_model_for_the_callers_language_says_so_on_the_case(hotline: Hotline) -> None:
    english_only = hotline.settings.replace(transcribe_engines="en=whisper-tiny-en")
    jobs.use(lambda _settings: jobs.build_services(english_only))
    hotline.call(["2", "#", "1"], speak("Я хочу здатися в полон", voice="uk"))
    hotline.work()
    [case] = hotline.cases()
    # Routed all the same (an operator can listen), and the reason stays on the case.
    assert (case.language, case.status, case.transcript_engine) == ("uk", "routed", None)
    assert case.status_reason == "not transcribed: no model for uk"
    [rec] = hotline.recordings()
    assert rec.audio is not None and hotline.api.was_deleted(sid_of(rec))  # kept, sealed


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda api, sid: api.truncate_recording(sid, 2000), "unreadable recording: truncated WAV"),
    (lambda api, sid: api.add_recording(sid, b"<html>Service Unavailable</html>"),
     "unreadable recording: not a WAV file"),
])
def test_an_unreadable_recording_gives_a_clear_status_not_a_crash_loop(
    hotline: Hotline, message: bytes, spoil: Callable[[TwilioApi, str], Any], reason: str
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    [rec] = hotline.recordings()
    spoil(hotline.api, sid_of(rec))
    hotline.work()
    [case] = hotline.cases()
    assert case.status == "routed" and case.routed_at is not None
    assert case.status_reason is not None and case.status_reason.startswith(reason)
    conn = redis.Redis.from_url(hotline.redis.url)
    assert Queue(jobs.QUEUE, connection=conn).failed_job_registry.count == 0  # handled, not crashed
    assert not hotline.api.was_deleted(sid_of(rec))  # we have no good copy: it stays there


def test_network_failures_are_retried_until_the_recording_is_stored(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.api.fail_next(3, status=503)
    hotline.work()
    [case] = hotline.cases()
    assert case.status == "routed"
    [rec] = hotline.recordings()
    assert rec.attempts >= 1 and rec.status == "done"


def test_twilio_refusing_to_delete_does_not_hold_up_the_transcript(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    [rec] = hotline.recordings()
    original = hotline.api._route  # every DELETE fails; downloads work

    def no_deletes(method: str, path: str, body: bytes) -> Any:
        if method == "DELETE":
            return hotline.api._error(503, 20503, "Service Unavailable")
        return original(method, path, body)

    hotline.api._route = no_deletes  # type: ignore[method-assign]
    hotline.work()
    [case] = hotline.cases()
    [rec] = hotline.recordings()
    assert case.status == "routed"
    assert (rec.status, rec.deleted_at_provider) == ("stored", None)
    assert rec.error is not None and "not yet deleted" in rec.error
    hotline.api._route = original  # type: ignore[method-assign]
    # The hourly housekeeping runs it again; now the delete goes through.
    conn = redis.Redis.from_url(hotline.redis.url)
    queue = Queue(jobs.QUEUE, connection=conn)
    assert jobs.requeue_unfinished(hotline.db, queue, timedelta(0), timedelta(hours=1)) == 0  # too soon
    assert jobs.requeue_unfinished(hotline.db, queue, timedelta(0), timedelta(0)) == 1
    hotline.work()
    [rec] = hotline.recordings()
    assert rec.status == "done" and hotline.api.was_deleted(sid_of(rec))


def test_no_voicemail_is_lost_while_redis_is_down(
    hotline: Hotline, message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.work()
    hotline.redis.stop()  # Redis dies mid-run
    started = time.monotonic()
    for _ in range(3):
        hotline.call(ENGLISH_VOICEMAIL, message)  # callers are still answered and recorded
    assert time.monotonic() - started < 10
    outbox: jobs.Outbox = hotline.app.extensions["ivr.outbox"]
    assert outbox.pending() == 3
    health = healthz_details(hotline.app.test_client())
    assert health["redis"] == {"ok": False} and health["outbox"] == {"waiting": 3}
    with hotline.db.session() as s:  # the first try says why; later webhooks leave Redis alone
        waiting = s.scalars(select(OutboxJob).where(OutboxJob.enqueued_at.is_(None))).all()
        assert waiting[0].last_error == "Redis unreachable: ConnectionError"
    hotline.redis.start()  # back, on the same port
    flusher = jobs.OutboxFlusher(outbox, every=0.1)  # what every web process runs
    flusher.start()
    deadline = time.monotonic() + 10
    while outbox.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    flusher.stop()
    assert outbox.pending() == 0
    hotline.work()
    assert [c.status for c in hotline.cases()] == ["routed"] * 4


class Killed(BaseException):
    """The worker process dying at this point: nothing after it runs, nothing is caught."""


@pytest.mark.parametrize("stage", ["fetch", "delete", "transcribe", "after-delete"])
def test_a_worker_killed_at_any_stage_leaves_nothing_half_done(
    hotline: Hotline, message: bytes, stage: str
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    [rec] = hotline.recordings()
    real = jobs.services().tools

    def dies(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            if name == stage:
                raise Killed
            result = fn(*args)
            if f"after-{name}" == stage:
                raise Killed  # Twilio deleted it, but we died before writing that down
            return result
        return wrapped

    tools = replace(real, fetch=dies("fetch", real.fetch), delete=dies("delete", real.delete),
                    transcribe=dies("transcribe", real.transcribe))
    with pytest.raises(Killed):
        process_recording(hotline.db, hotline.vault, tools, rec.id)
    assert process_recording(hotline.db, hotline.vault, real, rec.id) == "done"
    [case] = hotline.cases()
    [rec] = hotline.recordings()
    assert case.status == "routed" and rec.audio is not None
    assert hotline.api.deleted == [rec.recording_sid]
    with hotline.db.session() as s:
        assert s.scalars(select(AuditEntry.action).where(AuditEntry.action == "transcribed")).all() == [
            "transcribed"]


def test_a_worker_process_killed_with_sigkill_is_picked_up_again(
    hotline: Hotline, message: bytes, tmp_path: Path
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.api.delay(30)  # the download hangs: the worker is inside the job
    env = hotline.worker_env(tmp_path)
    worker = subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker", "--burst"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    conn = redis.Redis.from_url(hotline.redis.url)
    queue = Queue(jobs.QUEUE, connection=conn)
    registry = StartedJobRegistry(queue=queue)
    deadline = time.monotonic() + 30
    while not registry.get_job_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.get_job_ids(), "the worker never started the job"
    os.killpg(worker.pid, signal.SIGKILL)  # the whole work-horse, mid-download
    worker.wait(timeout=10)
    hotline.api.reset_faults()
    assert [c.status for c in hotline.cases()] == ["new"]

    # A later worker's maintenance finds the abandoned job and retries it (rq's Retry); if the
    # worker died before rq marked the job started, rq drops it and the hourly housekeeping
    # (`requeue_unfinished`) runs it again. Either way it is done once, with nothing lost.
    registry.cleanup(timestamp=time.time() + 3600)
    hotline.work()
    jobs.requeue_unfinished(hotline.db, queue, timedelta(0), timedelta(0))
    hotline.work()
    [case] = hotline.cases()
    assert case.status == "routed"
    assert len(hotline.recordings()) == 1 and hotline.api.deleted == [hotline.recordings()[0].recording_sid]


def test_retention_destroys_the_data_and_keeps_anonymous_counts(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.work()
    old, recent = hotline.cases()
    close_case(hotline.db, old.id, "test:operator")
    close_case(hotline.db, recent.id, "test:operator")
    with hotline.db.session() as s:
        s.execute(update(Case).where(Case.id == old.id).values(closed_at=SUNDAY - timedelta(days=31)))
    assert purge(hotline.db, hotline.vault, timedelta(days=30)) == 1
    gone = show_case(hotline.db, hotline.vault, old.id, "test:admin")
    kept = show_case(hotline.db, hotline.vault, recent.id, "test:admin")
    assert gone is not None and kept is not None
    assert gone["transcript"] is None and gone["purged_at"] is not None
    assert "surrender" in kept["transcript"].lower()
    with hotline.db.session() as s:
        case = s.get(Case, old.id)
        assert case is not None
        assert (case.number, case.transcript, case.caller_hash) == (None, None, None)
        assert s.get(Recording, case.recording_id).audio is None  # type: ignore[union-attr]
    with hotline.vault.keys.session() as k:
        assert k.get(DataKey, case.data_key_id).wrapped is None  # type: ignore[union-attr]
    counts = [(c["status"], c["region"], c["language"]) for c in list_cases(hotline.db)]
    assert counts == [("closed", "russia", "en")] * 2
    assert purge(hotline.db, hotline.vault, timedelta(days=30)) == 0


def test_a_purge_leaves_nothing_that_leads_back_to_the_call(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.work()
    [case] = hotline.cases()
    with hotline.db.session() as s:
        call_sid = s.get(Call, case.call_id).call_sid  # type: ignore[union-attr]
    assert call_sid is not None and hotline.api.has_call(call_sid)  # Twilio's log: with the number
    close_case(hotline.db, case.id, "test:operator")
    deleter = jobs.call_deleter(hotline.settings)

    hotline.api.fail_next(1, status=503)  # Twilio fails to delete the call this time
    assert purge(hotline.db, hotline.vault, timedelta(0), deleter) == 1
    gone = show_case(hotline.db, hotline.vault, case.id, "test:admin")
    assert gone is not None and gone["transcript"] is None  # the keys went all the same
    with hotline.db.session() as s:
        assert s.get(Call, case.call_id).call_sid == call_sid  # type: ignore[union-attr]  # kept to retry
    assert hotline.api.has_call(call_sid)

    assert purge(hotline.db, hotline.vault, timedelta(0), deleter) == 0  # the next hourly run
    assert not hotline.api.has_call(call_sid) and hotline.api.was_deleted(call_sid)
    with hotline.db.session() as s:
        call = s.get(Call, case.call_id)
        rec = s.get(Recording, case.recording_id)
        purged = s.get(Case, case.id)
        assert call is not None and rec is not None and purged is not None
        assert (call.call_sid, rec.recording_sid, rec.audio_bytes, rec.audio) == (None, None, None, None)
        assert rec.duration in LENGTHS and (call.seconds is None or call.seconds in LENGTHS)
        times = [call.started_at, rec.reported_at, rec.stored_at, purged.created_at, purged.closed_at,
                 purged.transcribed_at, purged.purged_at]
        times += list(s.scalars(select(AuditEntry.at).where(AuditEntry.case_id == case.id)))
        assert [t for t in times if t is not None and t.time() != dt_time(0)] == [], times
        assert (purged.region, purged.language, purged.status) == ("russia", "en", "closed")
    rows = list_cases(hotline.db)  # what `ivr cases list` and the counts read still works
    assert [(r["status"], r["region"]) for r in rows] == [("closed", "russia")]


def test_the_admin_reads_cases_from_the_terminal(hotline: Hotline, message: bytes) -> None:
    english_only = hotline.settings.replace(transcribe_engines="en=whisper-tiny-en")
    jobs.use(lambda _settings: jobs.build_services(english_only))
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.call(["2", "#", "1"], message)
    hotline.work()
    env = {"DATABASE_URL": hotline.settings.database_url,
           "KEYSTORE_URL": hotline.settings.keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
           "INSTANCE_DIR": str(hotline.settings.instance_dir), "IVR_DOTENV": "/nonexistent",
           "USER": "olena", "TWILIO_API_BASE": hotline.api.base_url, "TWILIO_AUTH_TOKEN": TOKEN,
           "TWILIO_ACCOUNT_SID": hotline.settings.twilio_account_sid}
    runner = CliRunner()
    listed = runner.invoke(cli, ["cases", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    import json

    rows = json.loads(listed.output)
    assert [(r["status"], r["transcription"], r["language"]) for r in rows] == [
        ("routed", "failed", "uk"), ("routed", "done", "en")]
    for field in ("id", "status", "region", "language", "created_at", "recording_deleted_at_provider"):
        assert all(field in r for r in rows)
    assert "transcript" not in rows[0] and NUMBER not in listed.output
    failed = runner.invoke(cli, ["cases", "list", "--untranscribed", "--region", "russia"], env=env)
    assert "not transcribed: no model for uk" in failed.output and "1 case(s)" in failed.output

    shown = runner.invoke(cli, ["cases", "show", str(rows[1]["id"]), "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    one = json.loads(shown.output)
    assert "surrender" in one["transcript"].lower() and one["recording_deleted_at_provider"]
    # The operating-system account, not $USER (which said "olena": anyone can set it).
    assert one["timeline"][-1]["actor"] == f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"
    assert "olena" not in shown.output
    assert one["timeline"][-1]["action"] == "transcript-read"
    assert NUMBER not in shown.output

    missing = runner.invoke(cli, ["cases", "show", "9999"], env=env)
    assert missing.exit_code == 1 and "no case #9999" in missing.output
    closed = runner.invoke(cli, ["cases", "close", str(rows[1]["id"]), "--reason", "done", "--yes"],
                           env=env)
    assert closed.exit_code == 0 and "closed" in closed.output
    purged = runner.invoke(cli, ["purge", "--older-than", "0d", "--yes"], env=env)
    assert "destroyed the data of 1 case(s)" in purged.output
    bad = runner.invoke(cli, ["purge", "--older-than", "a month"], env=env)
    assert bad.exit_code == 1 and "not a duration like 30d" in bad.output


def test_a_repeat_caller_is_recognised_without_keeping_the_number(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.call(ENGLISH_VOICEMAIL, message, from_="+380501234567")
    hotline.call(ENGLISH_VOICEMAIL, message)
    first, other, again = hotline.cases()
    assert first.caller_hash == again.caller_hash != other.caller_hash
    assert first.caller_hash is not None and NUMBER[1:] not in first.caller_hash
    rows = {r["id"]: r for r in list_cases(hotline.db)}
    assert [rows[c.id]["earlier_cases_from_same_number"] for c in (first, other, again)] == [0, 0, 1]
    with hotline.db.session() as s:
        case = s.get(Case, again.id)
        assert case is not None
        assert hotline.vault.open(case, "number") == NUMBER.encode()


def test_a_recording_that_cannot_be_fetched_is_given_up_visibly(hotline: Hotline, message: bytes) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.api.fail_next(50, status=503)  # Twilio's media store down for longer than rq retries
    hotline.work()
    [case] = hotline.cases()
    [rec] = hotline.recordings()
    assert case.status == "routed"
    assert case.status_reason == (
        f"could not fetch the recording after 6 tries: twilio fetch_recording {rec.recording_sid}: "
        "HTTP 503 (Twilio error 20503); kept at Twilio, not deleted")
    assert hotline.api.recording(sid_of(rec)) is not None  # nothing lost: it is still there


def test_a_purge_deletes_at_twilio_a_recording_that_stayed_there(hotline: Hotline, message: bytes) -> None:
    """A message that could not be fetched stays at Twilio for a person; when its case is
    purged, the voice goes there too, and the listing does not file it again as a new case."""
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.api.fail_next(50, status=503)
    hotline.work()
    [case] = hotline.cases()
    [rec] = hotline.recordings()
    sid = sid_of(rec)
    assert hotline.api.recording(sid) is not None and rec.deleted_at_provider is None
    close_case(hotline.db, case.id, "test:operator")
    calls, recordings = jobs.call_deleter(hotline.settings), jobs.call_deleter(hotline.settings, "recording")

    hotline.api.reset_faults()
    hotline.api.fail_next(2, status=503)  # Twilio refuses both deletions this time
    assert purge(hotline.db, hotline.vault, timedelta(0), calls, recordings) == 1
    hotline.api.reset_faults()
    [rec] = hotline.recordings()
    assert rec.recording_sid == sid and hotline.api.recording(sid) is not None  # kept to retry
    jobs.reconcile_recordings(timedelta(0))  # the listing at Twilio sees it: a known sid
    assert len(hotline.cases()) == 1

    assert purge(hotline.db, hotline.vault, timedelta(0), calls, recordings) == 0  # the next hourly run
    [rec] = hotline.recordings()
    assert rec.recording_sid is None and rec.deleted_at_provider is not None
    assert hotline.api.recording(sid) is None and sid in hotline.api.deleted
    assert len(hotline.cases()) == 1


def test_ivr_call_in_process_leaves_a_voicemail_from_a_wav_file(tmp_path: Path, message: bytes) -> None:
    wav = tmp_path / "message.wav"
    wav.write_bytes(message)
    env = {"FLOWS_DIR": str(ROOT / "flows"), "INSTANCE_DIR": str(tmp_path / "instance"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'call.db'}", "REDIS_URL": "redis://127.0.0.1:1/0",
           "IVR_DOTENV": "/nonexistent", "TWILIO_API_BASE": ""}
    runner = CliRunner()
    result = runner.invoke(cli, ["call", "--press", "3,3,#,#,#", "--voicemail", str(wav)], env=env)
    assert result.exit_code == 0, result.output
    assert ("Voicemail filed as case #1: transcription done, region russia, language en, "
            "unassigned, escalated to supervisors") in result.output
    shown = runner.invoke(cli, ["cases", "show", "1", "--json"], env=env)
    assert "surrender" in shown.output.lower()
    missing = runner.invoke(cli, ["call", "--press", "3,3,#,#,#", "--voicemail", "nope.wav"], env=env)
    assert missing.exit_code == 1 and "--voicemail nope.wav: no such file" in missing.output


def test_housekeeping_purges_hourly_and_recovers_what_an_emptied_redis_lost(
    hotline: Hotline, message: bytes
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.work()
    [case] = hotline.cases()
    close_case(hotline.db, case.id, "test:operator")
    with hotline.db.session() as s:  # closed longer ago than RETENTION_DAYS (30)
        s.execute(update(Case).where(Case.id == case.id).values(closed_at=SUNDAY - timedelta(days=40)))
    conn = redis.Redis.from_url(hotline.redis.url)
    keeper = jobs.Housekeeper(hotline.db, hotline.redis.url)
    assert keeper.tick()  # what a worker's housekeeper does each minute
    assert not keeper.tick()  # within the minute, the lock says another has done it
    hotline.work()
    [case] = hotline.cases()
    assert case.purged_at is not None and case.transcript is None
    assert conn.ttl(keeper.PURGE_DUE) > 3500  # the next retention run is due in an hour

    # Redis restarts empty while voicemails are queued: the outbox had already handed them over.
    hotline.call(ENGLISH_VOICEMAIL, message)
    hotline.call(ENGLISH_VOICEMAIL, message)
    assert len(Queue(jobs.QUEUE, connection=conn).jobs) == 2
    conn.flushall()
    keeper = jobs.Housekeeper(hotline.db, hotline.redis.url, lost_after=timedelta(0))  # not 2 min
    assert keeper.tick()
    hotline.work()
    assert [c.status for c in hotline.cases()] == ["closed", "routed", "routed"]


def test_the_worker_waits_for_redis_and_survives_it_going_away(
    hotline: Hotline, message: bytes, tmp_path: Path
) -> None:
    """`ivr worker` as the Procfile runs it: started before Redis, Redis stopped under it."""
    hotline.redis.stop()
    env = hotline.worker_env(tmp_path)
    worker = subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        hotline.call(ENGLISH_VOICEMAIL, message)  # Redis is down: the job waits in the outbox
        time.sleep(1.5)
        assert worker.poll() is None, "the worker gave up without Redis"
        hotline.redis.start()
        outbox: jobs.Outbox = hotline.app.extensions["ivr.outbox"]
        outbox.failed_at = -jobs.REDIS_BACKOFF
        wait_for(lambda: outbox.flush() >= 0 and outbox.pending() == 0)
        wait_for(lambda: [c.status for c in hotline.cases()] == ["routed"])
        hotline.redis.stop()  # gone again, while the worker waits for work
        time.sleep(2)
        assert worker.poll() is None, "the worker died with Redis"
        hotline.redis.start()
        hotline.call(ENGLISH_VOICEMAIL, message)
        wait_for(lambda: [c.status for c in hotline.cases()] == ["routed"] * 2)
    finally:
        worker.terminate()  # a warm shutdown, as on a deploy
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err[-2000:]
    assert b"waiting for Redis" in err and NUMBER.encode() not in err


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_retries_that_wait_still_run_when_rqs_scheduler_is_gone(hotline: Hotline, message: bytes) -> None:
    """rq's scheduler process dies with a Redis outage; the housekeeper moves due retries."""
    hotline.call(ENGLISH_VOICEMAIL, message)
    conn = redis.Redis.from_url(hotline.redis.url)
    queue = Queue(jobs.QUEUE, connection=conn)
    [job] = queue.jobs
    queue.remove(job)
    queue.scheduled_job_registry.schedule(job, datetime.now(UTC) - timedelta(seconds=1))  # a due retry
    assert queue.jobs == []
    assert jobs.Housekeeper(hotline.db, hotline.redis.url).tick()
    assert job.id in queue.job_ids and queue.scheduled_job_registry.count == 0
    hotline.work()
    assert [c.status for c in hotline.cases()] == ["routed"]


# --- the case's times against its timeline (issue 12) ---------------------------------------------


def _at(timeline: list[dict[str, Any]], *actions: str, nobody: bool | None = None) -> str | None:
    """When the last entry of `actions` was written (None: there is none); `nobody`: only the
    escalations that told nobody (True) or somebody (False)."""
    found = [e for e in timeline if e["action"] in actions and (
        nobody is None or ("nobody was told" in (e["detail"] or "")) == nobody)]
    return found[-1]["at"] if found else None


def test_a_cases_times_say_what_happened_as_its_timeline_does(
        hotline: Hotline, message: bytes, tmp_path: Path) -> None:
    """`notified_at` only when someone was told, `transcribed_at` only when there are words, a
    failed transcription its own time; `ivr cases show --json` agrees with the audit timeline."""
    import json

    from ivr import callbacks
    from ivr.operators import add_operator, edit_operator

    olena = add_operator(hotline.db, hotline.vault, name="Olena", number="+380501110001",
                         languages="en,uk", regions="russia", timezone="Europe/Kyiv", hours="always")
    env = hotline.worker_env(tmp_path)

    def shown(case_id: int) -> dict[str, Any]:
        out = CliRunner().invoke(cli, ["cases", "show", str(case_id), "--json"], env=env)
        assert out.exit_code == 0, out.output
        found: dict[str, Any] = json.loads(out.output)
        # Whatever the case: the times on it are the times of its timeline's entries.
        t = found["timeline"]
        assert found["transcribed_at"] == _at(t, "transcribed")
        assert found["transcription_failed_at"] == _at(t, "transcription_failed", "recording-failed")
        assert found["notified_at"] == (_at(t, "sms-sent") or _at(t, "escalated", nobody=False))
        return found

    def voicemail(presses: list[str], audio: bytes) -> int:
        hotline.call(presses, audio)
        hotline.work()
        return hotline.cases()[-1].id

    # 1. Told by SMS.
    told = shown(voicemail(ENGLISH_VOICEMAIL, message))
    assert (told["operator_id"], told["transcription"]) == (olena, "done")
    assert told["notified_at"] is not None and told["transcribed_at"] is not None
    assert told["transcription_failed_at"] is None
    assert [m.params["To"] for m in hotline.api.messages] == ["+380501110001"]

    # 2. Nobody on duty and no supervisor: escalated to nobody, so nobody was told.
    edit_operator(hotline.db, hotline.vault, olena, on_duty=False)
    alone = shown(voicemail(ENGLISH_VOICEMAIL, message))
    assert alone["operator_id"] is None and alone["notified_at"] is None
    assert _at(alone["timeline"], "escalated", nobody=True) is not None
    assert len(hotline.api.messages) == 1

    # 3. An SMS Twilio refuses for good (an invalid number): not told, and the timeline says so.
    edit_operator(hotline.db, hotline.vault, olena, on_duty=True)
    original = hotline.api._route

    def refuse_sms(method: str, path: str, body: bytes) -> Any:
        if method == "POST" and path.endswith("/Messages.json"):
            return hotline.api._error(400, 21211, "Invalid 'To' Phone Number")
        return original(method, path, body)

    hotline.api._route = refuse_sms  # type: ignore[method-assign]
    refused = shown(voicemail(ENGLISH_VOICEMAIL, message))
    hotline.api._route = original  # type: ignore[method-assign]
    assert refused["operator_id"] == olena and refused["notified_at"] is None
    failed = [e for e in refused["timeline"] if e["action"] == "sms-failed"]
    assert len(failed) == 1 and "21211" in failed[0]["detail"] and "+380" not in failed[0]["detail"]
    assert _at(refused["timeline"], "sms-sent") is None

    # 4. No model for the caller's language: no words, so no transcribed_at; the failure's own time.
    english_only = hotline.settings.replace(transcribe_engines="en=whisper-tiny-en")
    jobs.use(lambda _settings: jobs.build_services(english_only))
    no_model = shown(voicemail(["2", "#", "1"], speak("Я хочу здатися в полон", voice="uk")))
    assert (no_model["transcription"], no_model["transcribed_at"]) == ("failed", None)
    assert no_model["transcription_failed_at"] is not None
    assert no_model["status_reason"] == "not transcribed: no model for uk"
    assert [e["detail"] for e in no_model["timeline"] if e["action"] == "transcription_failed"] == [
        "not transcribed: no model for uk"]
    assert no_model["notified_at"] is not None  # told all the same: an operator can listen

    # 5. Unreadable audio: the same, from the recording's failure.
    hotline.call(ENGLISH_VOICEMAIL, message)
    [*_, rec] = hotline.recordings()
    hotline.api.truncate_recording(sid_of(rec), 2000)
    hotline.work()
    unreadable = shown(hotline.cases()[-1].id)
    assert (unreadable["transcription"], unreadable["transcribed_at"]) == ("failed", None)
    assert unreadable["transcription_failed_at"] is not None
    assert unreadable["status_reason"].startswith("unreadable recording: truncated WAV")

    # The untranscribed list finds exactly the two failures.
    listed = CliRunner().invoke(cli, ["cases", "list", "--untranscribed", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert sorted(r["id"] for r in json.loads(listed.output)) == sorted([no_model["id"], unreadable["id"]])

    # The backstop does not send again what was tried for this assignment and told nobody; a
    # case whose job was lost (nothing tried since it was assigned) is notified again.
    later = utcnow_plus(minutes=6)
    assert callbacks.unnotified(hotline.db, later) == []
    with hotline.db.session() as s:
        s.execute(update(Case).where(Case.id == refused["id"]).values(assigned_at=utcnow_plus(minutes=0)))
    assert callbacks.unnotified(hotline.db, utcnow_plus(minutes=6)) == [refused["id"]]


def utcnow_plus(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


# --- empty messages (issue 12): nothing said at the tone makes no case ------------------------


def faint_hiss(seconds: float = 1.0) -> bytes:
    """What a line carries when the caller says nothing: not digital silence, no speech."""
    import numpy as np

    from tests.audio import wav

    rng = np.random.default_rng(12)
    return wav((rng.normal(0, 12, int(seconds * 8000))).astype(np.int16))


def test_nothing_said_at_the_tone_makes_no_case_and_nothing_stays_at_twilio(hotline: Hotline) -> None:
    """The caller presses # at the tone: Twilio reports a 1 s recording of line hiss. The worker
    hears no speech in it: deleted at Twilio, its case dropped before anyone could see it."""
    hotline.call(["3", "3", "#", "1"], faint_hiss(1.0))
    [rec] = hotline.recordings()
    assert rec.duration == 1 and len(hotline.cases()) == 1  # a case until the worker listens
    sid = sid_of(rec)
    assert hotline.api.recording(sid) is not None
    hotline.work()
    assert hotline.cases() == []
    assert hotline.api.was_deleted(sid)
    [rec] = hotline.recordings()
    assert (rec.status, rec.audio, rec.deleted_at_provider is not None) == ("empty", None, True)
    with hotline.db.session() as s:
        [call] = s.scalars(select(Call)).all()
        assert call.note is not None and "held no speech" in call.note
        assert s.scalars(select(AuditEntry)).all() == []
    # Twilio's status callback delivered again: still no case, no second job.
    with hotline.app.test_client() as client:
        from tests.conftest import call_params, signed

        params = call_params(RecordingSid=sid, RecordingStatus="completed", RecordingDuration="1",
                             RecordingUrl=hotline.api.recording_url(sid), CallSid=str(call.call_sid))
        assert signed(client, "/twilio/recording?l=en", params).status_code == 200
    hotline.work()
    assert hotline.cases() == [] and len(hotline.recordings()) == 1


def test_a_recording_of_0_s_goes_to_on_empty_and_is_deleted_at_twilio(hotline: Hotline) -> None:
    """# pressed at once: Twilio reports RecordingDuration 0 to the action. The caller hears
    the flow's words for an empty message (not "we have your message"); no case is made and
    the recording is deleted at Twilio."""
    app = create_app(hotline.settings.replace(flows_dir=ROOT / "flows"), clock=lambda: SUNDAY)
    # The shipped hotline: English, a message, both intake questions skipped, # at the tone.
    caller = ScriptedCaller(["3", "3", "#", "#", "#"], recording=faint_hiss(0.3))
    phone = Phone(FlaskTransport(app), hotline.settings.public_base_url, TOKEN,
                  hotline.settings.twilio_account_sid, hotline.settings.hotline_number, api=hotline.api)
    log = phone.call(NUMBER, caller)
    app.extensions["ivr.db"].engine.dispose()
    assert not log.errors, log.errors
    assert "We did not hear a message" in log.text()
    assert "we have your message" not in log.text() and "May we call you back" not in log.text()
    assert hotline.cases() == []
    [rec] = hotline.recordings()
    assert (rec.status, rec.duration) == ("empty", 0)
    hotline.work()
    assert hotline.api.was_deleted(sid_of(rec)) and hotline.cases() == []


def test_an_empty_recording_twilio_reports_is_deleted_there(hotline: Hotline) -> None:
    """Twilio calls no action for an empty recording, but its status callback may report one
    of 0 s that it keeps: no case, and a job deletes it at Twilio."""
    from ivr.standin import silence_wav
    from ivr.standin.api import new_sid
    from tests.conftest import call_params, signed

    call_sid = new_sid("CA")
    sid = hotline.api.add_recording(new_sid("RE"), silence_wav(0.4), call_sid=call_sid, duration=0)
    with hotline.app.test_client() as client:
        params = call_params(RecordingSid=sid, RecordingStatus="completed", RecordingDuration="0",
                             RecordingUrl=hotline.api.recording_url(sid), CallSid=call_sid)
        for _ in range(2):  # and again, as Twilio retries
            assert signed(client, "/twilio/recording?l=ru", params).status_code == 200
    assert hotline.cases() == []
    [rec] = hotline.recordings()
    assert rec.status == "empty"
    hotline.work()
    assert hotline.api.was_deleted(sid)
    assert hotline.cases() == []
    [rec] = hotline.recordings()
    assert rec.deleted_at_provider is not None


def test_a_short_real_message_is_a_case(hotline: Hotline) -> None:
    """A caller who can only say "Help." (about a second) has left a message."""
    help_ = speak("Help.")
    hotline.call(["3", "3", "#", "1"], help_)
    [rec] = hotline.recordings()
    assert rec.duration is not None and rec.duration <= 2  # the short kind the worker checks
    hotline.work()
    [case] = hotline.cases()
    assert case.status == "routed", case.status_reason
    assert hotline.api.was_deleted(sid_of(rec))
    found = show_case(hotline.db, hotline.vault, case.id, actor="test:admin")
    assert found is not None and found["transcript"].lower().startswith("hel")  # (tiny: "Hell.")


def test_ivr_call_without_a_voicemail_says_nothing_and_files_nothing(tmp_path: Path) -> None:
    """`ivr call` with no --voicemail is silent at the tone, as Twilio trims silence: the
    caller hears the flow's words for an empty message, and no case is filed."""
    env = {"FLOWS_DIR": str(ROOT / "flows"), "INSTANCE_DIR": str(tmp_path / "instance"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'call.db'}", "REDIS_URL": "redis://127.0.0.1:1/0",
           "IVR_DOTENV": "/nonexistent", "TWILIO_API_BASE": ""}
    result = CliRunner().invoke(cli, ["call", "--press", "3,3,#,#,#"], env=env)
    assert result.exit_code == 0, result.output
    assert "We did not hear a message" in result.output
    assert "May we call you back" not in result.output and "filed as case" not in result.output
    listed = CliRunner().invoke(cli, ["cases", "list", "--json"], env=env)
    assert listed.exit_code == 0 and json.loads(listed.output) == []


def test_an_empty_recording_twilio_will_not_delete_is_tried_again(hotline: Hotline) -> None:
    """Nothing said, and Twilio refuses the delete for longer than the job's retries: the
    case is still never made, and the housekeeper's re-run deletes it later."""
    hotline.call(["3", "3", "#", "1"], faint_hiss(1.0))
    [rec] = hotline.recordings()
    original = hotline.api._route

    def no_deletes(method: str, path: str, body: bytes) -> Any:
        if method == "DELETE":
            return hotline.api._error(503, 20503, "Service Unavailable")
        return original(method, path, body)

    hotline.api._route = no_deletes  # type: ignore[method-assign]
    hotline.work()
    assert not hotline.api.was_deleted(sid_of(rec))
    assert len(hotline.cases()) == 1  # not dropped before Twilio's copy is gone...
    [rec] = hotline.recordings()
    assert rec.status == "empty" and rec.audio is None  # ...but never sealed nor transcribed
    hotline.api._route = original  # type: ignore[method-assign]
    conn = redis.Redis.from_url(hotline.redis.url)
    queue = Queue(jobs.QUEUE, connection=conn)
    assert jobs.requeue_unfinished(hotline.db, queue, timedelta(0), timedelta(0)) == 1
    hotline.work()
    assert hotline.api.was_deleted(sid_of(rec)) and hotline.cases() == []
