"""No message is ever lost, and the caller is never told something false.

Real parts all through: the app answers the stand-in phone, the recordings lie at the Twilio
stand-in (REST on loopback, through the real `twilio` library), a real rq worker on a Redis
of the test's own, and a database that the test stops, locks and brings back: on SQLite and
on a PostgreSQL cluster of the test's own (never the shared server).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from rq import Queue, Retry
from rq.job import Job
from sqlalchemy import select
from sqlalchemy.engine import make_url

from ivr import create_app, jobs, liveness
from ivr.config import Settings
from ivr.spool import Spool
from ivr.standin import FlaskTransport, Phone, ScriptedCaller, TwilioApi
from ivr.standin.phone import HttpReply
from ivr.storage import AuditEntry, Case, Database, Recording, upgrade
from tests.conftest import ROOT, SUNDAY, TOKEN, RedisServer, healthz_details
from tests.servers import PostgresCluster
from tests.test_voicemail import ENGLISH_VOICEMAIL, NUMBER, Hotline, hotline, message, sid_of, with_consent

__all__ = ["hotline", "message"]  # the fixtures, used here

KEPT = "Call you back?"  # the flow's step after the message: heard only when it is kept
NOT_KEPT = "cannot confirm that your message was saved"


class TimedTransport(FlaskTransport):
    """The phone's transport that also times each recording webhook, as Twilio's clock would."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.slowest = 0.0

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        started = time.monotonic()
        reply = super().post(url, params, headers)
        if "RecordingSid" in params:
            self.slowest = max(self.slowest, time.monotonic() - started)
        return reply


@dataclass
class Outage:
    """Stops and locks the hotline's database, the way each backend can be stopped or locked."""

    url: str
    cluster: PostgresCluster | None
    engines: list[Database] = field(default_factory=list)  # to close, as a restart would
    _hold: Any = None

    @property
    def path(self) -> Path:
        return Path(str(make_url(self.url).database))

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            return
        for db in self.engines:  # SQLite has no server: its file becomes unopenable
            db.engine.dispose()
        self.path.rename(self.path.with_suffix(".away"))
        self.path.mkdir()

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
            return
        self.path.rmdir()
        self.path.with_suffix(".away").rename(self.path)

    def lock(self) -> None:
        """What a long migration or backup does: the tables are there, but not to be had."""
        if self.cluster is not None:
            self._hold = psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql"))
            self._hold.execute("LOCK TABLE recordings, calls IN ACCESS EXCLUSIVE MODE")
        else:
            self._hold = sqlite3.connect(self.path, isolation_level=None)
            self._hold.execute("BEGIN EXCLUSIVE")

    def unlock(self) -> None:
        self._hold.rollback() if self.cluster is not None else self._hold.execute("ROLLBACK")
        self._hold.close()


@dataclass
class Faulty:
    hotline: Hotline
    outage: Outage
    transport: TimedTransport
    created: list[str] = field(default_factory=list)  # every recording Twilio made

    def call(self, presses: list[str] | None = None, audio: bytes | None = None) -> tuple[str, str]:
        """A caller leaves a message; (its recording sid, what the caller heard)."""
        h = self.hotline
        phone = Phone(self.transport, h.settings.public_base_url, TOKEN,
                      h.settings.twilio_account_sid, h.settings.hotline_number, api=h.api)
        before = len(self.created)
        log = phone.call(NUMBER, ScriptedCaller(presses or ENGLISH_VOICEMAIL, recording=audio))
        assert not log.errors, log.errors
        assert len(self.created) == before + 1
        return self.created[-1], log.text()

    def keep(self) -> None:
        """One housekeeping round of a worker, now (its lock and the listing's period lapsed)."""
        conn = redis.Redis.from_url(self.hotline.redis.url)
        keeper = jobs.Housekeeper(self.hotline.db, self.hotline.redis.url, lost_after=timedelta(0),
                                  namespace=self.hotline.settings.redis_namespace,
                                  drain=jobs.drain_spool, reconcile_every=60,
                                  reconcile=lambda: jobs.reconcile_recordings(timedelta(0)))
        conn.delete(keeper.LOCK, keeper.RECONCILE_DUE)
        assert keeper.tick()

    def spool(self) -> Spool:
        s = self.hotline.settings
        return jobs.spool_for(s, jobs.services().vault.keyring)

    def kept_now(self, sid: str) -> bool:
        """In the spool or in the database (asked with the webhook's bounded wait)."""
        if sid in jobs.spooled_sids(self.hotline.settings)():
            return True
        try:
            with self.hotline.app.extensions["ivr.webhook_db"].session() as s:
                return s.scalar(select(Recording.id).where(Recording.recording_sid == sid)) is not None
        except Exception:
            return False

    def known(self) -> set[str]:
        with self.hotline.db.session() as s:
            return set(s.scalars(select(Recording.recording_sid)))


@pytest.fixture(params=["sqlite", "postgresql"])
def faulty(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path,
           redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faulty]:
    monkeypatch.setattr(jobs, "RETRY", Retry(max=5))  # retries at once: the test does not wait
    cluster = None
    if request.param == "postgresql":
        cluster = PostgresCluster()
        cluster.start()
        admin = psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres",
                                autocommit=True)
        admin.execute("CREATE DATABASE ivr")
        admin.execute("CREATE DATABASE keys")
        admin.close()
        database_url, keystore_url = cluster.url("ivr"), cluster.url("keys")
    else:
        database_url = f"sqlite:///{tmp_path / 'ivr.db'}"
        keystore_url = f"sqlite:///{tmp_path / 'keys.db'}"
    with_consent(settings.flows_dir)
    shutil.copy(ROOT / "flows" / "regions.yaml", settings.flows_dir / "regions.yaml")
    try:
        with TwilioApi(settings.twilio_account_sid, TOKEN) as api:
            # No speech engine: this test is about keeping messages, not about their words
            # (test_voicemail.py transcribes); each case says "no model for en" instead.
            s = settings.replace(twilio_api_base=api.base_url, redis_url=redis_server.url,
                                 database_url=database_url, keystore_url=keystore_url,
                                 transcribe_engines="none")
            upgrade(database_url, keystore_url)
            jobs.use(lambda _settings: jobs.build_services(s))
            app = create_app(s, clock=lambda: SUNDAY)
            db = app.extensions["ivr.db"]
            hotline = Hotline(s, app, api, redis_server, db, jobs.services().vault)
            outage = Outage(database_url, cluster,
                            [db, app.extensions["ivr.webhook_db"], jobs.services().db])
            faulty = Faulty(hotline, outage, TimedTransport(app))
            add = api.add_recording

            def noted(sid: str, wav: bytes | None, **kw: Any) -> str:
                if wav is not None:
                    faulty.created.append(sid)
                return add(sid, wav, **kw)

            api.add_recording = noted  # type: ignore[method-assign]
            yield faulty
            jobs.use(jobs.build_services)
            for engine in outage.engines:
                engine.engine.dispose()
    finally:
        if cluster is not None:
            cluster.remove()


def test_every_voicemail_becomes_one_case_whatever_fails(
    faulty: Faulty, message: bytes, tmp_path: Path
) -> None:
    """Database stopped, database locked, both database and spool gone, transient 404s, Redis
    emptied, a worker killed: 21 voicemails, 21 cases, 21 recordings deleted at Twilio."""
    h, outage = faulty.hotline, faulty.outage
    heard: dict[str, str] = {}
    expect_kept: dict[str, bool] = {}
    conn = redis.Redis.from_url(h.redis.url)
    queue = Queue(h.settings.redis_namespace, connection=conn)
    counts: dict[str, int] = {}

    def calls(phase: str, n: int, kept: bool = True) -> list[str]:
        sids = []
        for _ in range(n):
            sid, text = faulty.call(audio=message)
            heard[sid], expect_kept[sid] = text, kept
            # The caller heard "kept" only if it is: in the database or in the spool.
            if kept:
                assert KEPT in text and NOT_KEPT not in text, text
                assert faulty.kept_now(sid), f"{phase}: the caller was told a lie"
            else:
                assert NOT_KEPT in text and KEPT not in text, text
            sids.append(sid)
        counts[phase] = n
        return sids

    # 1. All is well.
    calls("normal", 4)
    h.work()

    # 2. The database is stopped: reports go to the spool, and callers are told the truth.
    outage.stop()
    calls("stopped", 3)
    # Two reports each (the Record action, then the status callback); one case each later.
    assert faulty.spool().count() == 6 and len(jobs.spooled_sids(h.settings)()) == 3
    health = healthz_details(h.app.test_client())
    assert health["spool"] == {"waiting": 6} and health["database"]["ok"] is False
    spooled = next(faulty.spool().folder.glob("*.report")).read_bytes()
    assert NUMBER.encode() not in spooled and NUMBER[1:].encode() not in spooled  # sealed
    outage.start()
    faulty.keep()  # the worker's round drains the spool (a web process's flusher does too)
    assert faulty.spool().count() == 0
    h.work()

    # 3. The database is locked (a migration, a backup): the webhook does not wait 15 s.
    outage.lock()
    try:
        calls("locked", 3)
    finally:
        outage.unlock()
    assert faulty.spool().count() == 6
    faulty.keep()
    h.work()

    # 4. The database is away and the spool's disk too: the caller hears the truth, and the
    #    recording, still at Twilio, is found by the listing.
    outage.stop()
    folder = faulty.spool().folder
    folder.rename(folder.with_name("spool.away"))
    folder.write_text("not a folder")
    try:
        calls("database and spool down", 2, kept=False)
    finally:
        folder.unlink()
        folder.with_name("spool.away").rename(folder)
        outage.start()
    faulty.keep()
    h.work()

    # 5. Twilio's media store answers 404 for new recordings a few times.
    calls("transient 404s", 4)
    h.api.fail_next(6, status=404)
    h.work()

    # 6. Redis restarts empty while voicemails wait in it.
    calls("redis emptied", 4)
    assert len(queue.jobs) == 4
    conn.flushall()
    faulty.keep()
    h.work()

    # 7. A worker is killed (SIGKILL) in the middle of a job.
    calls("worker killed", 1)
    h.api.delay(30)  # the download hangs: the worker is inside the job
    env = {**h.worker_env(tmp_path), "INSTANCE_DIR": str(h.settings.instance_dir)}
    worker = subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    registry = queue.started_job_registry
    deadline = time.monotonic() + 30
    while not registry.get_job_ids(cleanup=False) and time.monotonic() < deadline:
        time.sleep(0.05)
    [job_id] = registry.get_job_ids(cleanup=False)
    time.sleep(0.2)
    assert liveness.rescue_abandoned(queue) == 0  # its worker lives: the job is left to it
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    h.api.reset_faults()
    name = Job.fetch(job_id, connection=conn).worker_name or ""
    alive = liveness.ALIVE + name.split("-", 2)[-1]
    assert 0 < conn.ttl(alive) <= liveness.ALIVE_TTL  # the dead worker's pulse lapses by itself…
    conn.delete(alive)  # …as it has within ALIVE_TTL (30 s); the next round (a minute) sees it
    faulty.keep()
    assert registry.get_job_ids(cleanup=False) == [] and job_id in queue.job_ids
    h.work()

    # Every voicemail: exactly one case, its recording deleted at Twilio, the number kept.
    with h.db.session() as s:
        cases = list(s.scalars(select(Case).order_by(Case.id)))
        by_sid = {str(sid): status
                  for sid, status in s.execute(select(Recording.recording_sid, Recording.status))}
        found = s.scalars(select(AuditEntry.case_id).where(
            AuditEntry.action == "found-at-provider")).all()
    assert sorted(by_sid) == sorted(faulty.created) and len(cases) == len(faulty.created)
    assert set(by_sid.values()) == {"done"}
    assert sorted(h.api.deleted) == sorted(faulty.created)
    assert all(h.api.recording(sid) is None for sid in faulty.created)
    assert [c.status for c in cases] == ["routed"] * len(cases)
    assert all(h.vault.open(c, "number") == NUMBER.encode() for c in cases)
    assert len(found) == 2  # the two the webhooks could not keep came from the listing
    assert faulty.transport.slowest < 2.0, faulty.transport.slowest
    with h.db.session() as s:  # the six 404s were retried, not taken as an answer
        assert sum(s.scalars(select(Recording.attempts))) == 6
    told_kept = sum(KEPT in text for text in heard.values())
    told_not = sum(NOT_KEPT in text for text in heard.values())
    assert told_kept + told_not == len(heard) == len(faulty.created) >= 20
    print(f"\n[{'postgresql' if outage.cluster else 'sqlite'}] voicemails {len(faulty.created)} "
          f"({', '.join(f'{k}: {v}' for k, v in counts.items())}); cases {len(cases)}; "
          f"deleted at Twilio {len(h.api.deleted)}; told kept {told_kept}, told not kept "
          f"{told_not}; filed from Twilio's list {len(found)}; slowest recording webhook "
          f"{faulty.transport.slowest:.2f} s")


def test_nothing_kept_is_said_in_the_callers_language(faulty: Faulty, message: bytes) -> None:
    """Database and spool both fail: a Ukrainian caller hears the truth, in Ukrainian."""
    faulty.outage.stop()
    folder = faulty.spool().folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")
    try:
        sid, text = faulty.call(["2", "#", "1"], audio=message)
    finally:
        folder.unlink()
        faulty.outage.start()
    assert "не можемо підтвердити, що ваше повідомлення збережено" in text
    assert "Передзвонити?" not in text  # the flow's next step is not played: it would imply "kept"
    assert faulty.hotline.api.recording(sid) is not None  # still at Twilio, for the listing
    faulty.keep()
    faulty.hotline.work()
    assert faulty.known() == {sid} and faulty.hotline.api.was_deleted(sid)


def test_a_message_left_at_the_apology_keeps_number_region_and_consent(hotline: Hotline) -> None:
    """Twilio posts From on the Record action of the apology too: it is kept like any other."""
    from ivr.standin.api import tone_wav
    from ivr.voicemail import note_consent
    from tests.conftest import call_params, signed

    client = hotline.app.test_client()
    call_sid = "CA" + "b" * 32
    note_consent(hotline.db, call_sid, "any")  # given earlier in the call, before our failure
    sid = hotline.api.add_recording("RE" + "c" * 32, tone_wav(2.0), call_sid=call_sid)
    done = call_params(CallSid=call_sid, RecordingSid=sid, RecordingDuration="2", Digits="#",
                       RecordingUrl=hotline.api.recording_url(sid))
    reply = signed(client, "/twilio/step?e=rescued&l=uk", done)
    assert "Дякуємо, ваше повідомлення записано" in reply.get_data(as_text=True)
    status = {k: v for k, v in done.items() if k not in ("From", "Caller", "Digits")}
    signed(client, "/twilio/recording?l=uk", {**status, "RecordingStatus": "completed"})
    [case] = hotline.cases()
    assert (case.language, case.region, case.country, case.consent) == ("uk", "russia", "RU", "any")
    assert hotline.vault.open(case, "number") == NUMBER.encode()


def test_a_recording_twilio_never_has_fails_its_case_after_the_retries_and_says_so(
    hotline: Hotline, message: bytes
) -> None:
    hotline.call(ENGLISH_VOICEMAIL, message)
    [rec] = hotline.recordings()
    with hotline.api._lock:  # gone from Twilio's media store for good
        del hotline.api._recordings[sid_of(rec)]
    hotline.work()
    [case] = hotline.cases()
    [rec] = hotline.recordings()
    assert rec.attempts == 6 and rec.status == "failed" and rec.deleted_at_provider is not None
    assert case.status_reason is not None and case.status_reason.endswith(
        "HTTP 404 (Twilio error 20404); Twilio does not have it")


def test_the_listing_files_only_what_nobody_reported(hotline: Hotline, message: bytes) -> None:
    from ivr.providers import AtTwilio
    from ivr.reconcile import reconcile
    from ivr.routing import load_regions
    from ivr.storage import utcnow

    hotline.call(ENGLISH_VOICEMAIL, message)  # known
    [known] = hotline.recordings()
    old, now = utcnow() - timedelta(minutes=5), utcnow()
    lost = AtTwilio("RE" + "1" * 32, "CA" + "1" * 32, "completed", 7, old)
    hotline.api.add_call(lost.call_sid, "anonymous", hotline.settings.hotline_number)
    listed = [
        AtTwilio(sid_of(known), "CA" + "0" * 32, "completed", 7, old),
        lost,
        AtTwilio("RE" + "2" * 32, "CA" + "2" * 32, "completed", 7, now),  # its webhook may come
        AtTwilio("RE" + "3" * 32, "CA" + "3" * 32, "in-progress", -1, old),
        AtTwilio("RE" + "4" * 32, "CA" + "4" * 32, "completed", 7, old),  # in the spool
        AtTwilio("RE" + "5" * 32, "CA" + "5" * 32, "completed", 0, old),  # empty
    ]
    asked: list[str] = []
    deleted: list[str] = []
    regions, _ = load_regions(hotline.settings.flows_dir / "regions.yaml")

    def call_from(call_sid: str) -> str:
        asked.append(call_sid)
        return "anonymous"

    made = reconcile(hotline.db, hotline.vault, listed, call_from, deleted.append, regions,
                     lambda: {"RE" + "4" * 32})
    assert len(made) == 1 and asked == [lost.call_sid] and deleted == ["RE" + "5" * 32]
    case = hotline.cases()[-1]
    assert case.number is None and case.region == regions.fallback  # withheld: no number
    assert reconcile(hotline.db, hotline.vault, listed, call_from, deleted.append, regions,
                     lambda: {"RE" + "4" * 32}) == []  # known now


def test_a_spooled_report_that_cannot_be_opened_is_set_aside(tmp_path: Path) -> None:
    from ivr.engine import Caller
    from ivr.keys import Keyring, parse_master_keys
    from ivr.voicemail import Reported
    from tests.conftest import TEST_KEYS

    keyring = Keyring(parse_master_keys(TEST_KEYS))
    spool = Spool(tmp_path / "spool", keyring.derived("spool"))
    report = Reported("CA" + "a" * 32, "RE" + "a" * 32, "completed", 5, NUMBER,
                      Caller(False, "RU", "russia"), language="ru", consent="any")
    spool.put(report)
    spool.put(report)  # the action and the status callback: two files, one case when drained
    first, second = sorted(spool.folder.glob("*.report"))
    assert spool.read(first) == report and oct(first.stat().st_mode)[-3:] == "600"
    second.write_bytes(second.read_bytes()[:-1] + b"x")  # altered on disk
    noted: list[Reported] = []
    assert spool.drain(noted.append) == 1 and noted == [report]
    assert spool.count() == 0 and (spool.folder / "unreadable" / second.name).exists()
    spool.put(report)
    rotated = Spool(spool.folder, Keyring(parse_master_keys("k3:" + "C" * 43 + "," + TEST_KEYS))
                    .derived("spool"))
    assert rotated.drain(noted.append) == 1  # a new master key first: older files still open

    def down(_r: Reported) -> None:
        raise OSError("the database is away")

    spool.put(report)
    with pytest.raises(OSError):
        spool.drain(down)
    assert spool.count() == 1  # kept until the database has it


def test_every_web_process_moves_the_spool_into_the_database_when_it_is_back(
    faulty: Faulty, message: bytes
) -> None:
    h = faulty.hotline
    faulty.outage.lock()
    try:
        sid, text = faulty.call(audio=message)
    finally:
        faulty.outage.unlock()
    assert KEPT in text and faulty.spool().count() == 2
    web = create_app(h.settings.replace(outbox_flush_seconds=0.2), clock=lambda: SUNDAY)
    try:  # another web process of the same machine: its flusher thread drains the spool
        deadline = time.monotonic() + 20
        while faulty.spool().count() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        web.extensions["ivr.flusher"].stop()
    assert faulty.spool().count() == 0 and faulty.known() == {sid}
    h.work()
    [case] = h.cases()
    assert case.status == "routed" and h.api.was_deleted(sid)
    assert h.vault.open(case, "number") == NUMBER.encode()
