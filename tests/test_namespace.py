"""Two installs on one machine share a Redis: neither takes the other's jobs or locks.

Found by the attack: with the default REDIS_URL both used the queue `ivr`, the same job ids
(`process_recording-1` in each) and one housekeeper lock, so one install's worker ran the
other's jobs against the wrong database, and a job for a recording its database did not
know was logged as done. Each install here is real: settings read from its environment as
`ivr` reads them (so the namespace is the default one), its own SQLite files and Twilio
stand-in, a caller leaving a message through its app, and `ivr worker --burst` processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask
from rq import Queue
from sqlalchemy import select

from ivr import create_app, jobs
from ivr.config import Settings, load_settings
from ivr.standin import FlaskTransport, Phone, ScriptedCaller, TwilioApi
from ivr.storage import Case, Database, Recording, upgrade
from ivr.voicemail import PROCESS_RECORDING
from tests.conftest import BASE, ROOT, SUNDAY, TEST_FLOWS, TEST_KEYS, TOKEN, RedisServer

SID = "AC" + "1" * 32
HOTLINE = "+15005550006"


@dataclass
class Install:
    env: dict[str, str]
    settings: Settings
    app: Flask
    api: TwilioApi
    db: Database

    def voicemail(self) -> None:
        """A caller (Russian: no speech model, so no transcription to wait for) leaves one."""
        phone = Phone(FlaskTransport(self.app), BASE, TOKEN, SID, HOTLINE, api=self.api)
        log = phone.call("+79781234567", ScriptedCaller(["1", "#"]))
        assert not log.errors, log.errors

    def worker(self) -> subprocess.CompletedProcess[str]:
        """`ivr worker --burst`: this install's worker, until its queue is empty."""
        done = subprocess.run([sys.executable, "-m", "ivr.cli", "worker", "--burst"],
                              env={**os.environ, **self.env}, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    def recordings(self) -> list[Recording]:
        with self.db.session() as s:
            return list(s.scalars(select(Recording).order_by(Recording.id)))

    def queue(self, conn: redis.Redis) -> Queue:
        return Queue(self.settings.redis_namespace, connection=conn)


@contextmanager
def install(folder: Path, redis_url: str) -> Iterator[Install]:
    folder.mkdir()
    shutil.copytree(TEST_FLOWS, folder / "flows")
    with TwilioApi(SID, TOKEN) as api:
        env = {"DATABASE_URL": f"sqlite:///{folder / 'ivr.db'}",
               "KEYSTORE_URL": f"sqlite:///{folder / 'keys.db'}", "REDIS_URL": redis_url,
               "INSTANCE_DIR": str(folder / "instance"), "FLOWS_DIR": str(folder / "flows"),
               "IVR_DATA_KEYS": TEST_KEYS, "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN,
               "PUBLIC_BASE_URL": BASE, "TWILIO_API_BASE": api.base_url,
               "HOTLINE_NUMBER": HOTLINE, "IVR_DOTENV": "/nonexistent", "HF_HUB_OFFLINE": "1"}
        settings = load_settings(env)  # REDIS_NAMESPACE unset: the default, as installed
        upgrade(settings.database_url, settings.keystore_url)
        app = create_app(settings, clock=lambda: SUNDAY)
        db: Database = app.extensions["ivr.db"]
        try:
            yield Install(env, settings, app, api, db)
        finally:
            db.engine.dispose()


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Install, Install]]:
    with ExitStack() as stack:
        a = stack.enter_context(install(tmp_path / "a", redis_server.url))
        b = stack.enter_context(install(tmp_path / "b", redis_server.url))
        yield a, b


def test_two_installs_on_one_redis_never_take_each_others_jobs(
    pair: tuple[Install, Install], redis_server: RedisServer
) -> None:
    a, b = pair
    conn = redis.Redis.from_url(redis_server.url)
    assert a.settings.redis_namespace != b.settings.redis_namespace
    assert a.settings.redis_namespace.startswith("ivr-")
    a.voicemail()
    b.voicemail()  # recording #1 in each database: the same row id, once the same job id
    [job_a], [job_b] = a.queue(conn).jobs, b.queue(conn).jobs
    assert job_a.id != job_b.id and job_a.args == job_b.args == (1,)

    a.worker()
    [rec_a], [rec_b] = a.recordings(), b.recordings()
    assert rec_a.audio is not None and rec_a.deleted_at_provider is not None
    assert rec_b.audio is None and rec_b.status != "done"  # untouched: A's worker left it
    assert a.queue(conn).count == 0 and b.queue(conn).job_ids == [job_b.id]
    assert len(a.api.deleted) == 1 and b.api.deleted == []  # deleted at A's Twilio only

    b.worker()
    [rec_b] = b.recordings()
    assert rec_b.audio is not None and rec_b.deleted_at_provider is not None
    with b.db.session() as s:
        assert s.scalars(select(Case.status)).one() == "routed"


def test_each_install_has_its_own_housekeeper_lock(
    pair: tuple[Install, Install], redis_server: RedisServer
) -> None:
    a, b = pair
    keep_a = jobs.Housekeeper(a.db, redis_server.url, namespace=a.settings.redis_namespace)
    keep_b = jobs.Housekeeper(b.db, redis_server.url, namespace=b.settings.redis_namespace)
    assert keep_a.tick()
    assert keep_b.tick()  # before: B's housekeeper found A's lock and did nothing for a minute
    assert not keep_a.tick() and not keep_b.tick()  # within the minute: each its own lock
    conn = redis.Redis.from_url(redis_server.url)
    assert conn.ttl(keep_a.PURGE_DUE) > 0 and conn.ttl(keep_b.PURGE_DUE) > 0


def test_a_job_for_a_recording_the_database_does_not_know_is_a_warning(
    pair: tuple[Install, Install], redis_server: RedisServer
) -> None:
    a, _b = pair
    conn = redis.Redis.from_url(redis_server.url)
    a.queue(conn).enqueue(jobs.process_recording, 999,
                          job_id=jobs.job_id_for(a.settings.redis_namespace, PROCESS_RECORDING, 999))
    done = a.worker()
    [line] = [x for x in done.stderr.splitlines() if "recording 999" in x]
    assert "WARNING" in line and "no such recording in this database" in line


def test_an_explicit_namespace_is_used_and_checked(tmp_path: Path) -> None:
    base = {"INSTANCE_DIR": str(tmp_path), "FLOWS_DIR": str(TEST_FLOWS), "IVR_DOTENV": "/nonexistent"}
    assert load_settings({**base, "REDIS_NAMESPACE": "hotline-kyiv"}).redis_namespace == "hotline-kyiv"
    from ivr.errors import ConfigError

    with pytest.raises(ConfigError, match="REDIS_NAMESPACE 'a b' has other characters"):
        load_settings({**base, "REDIS_NAMESPACE": "a b"})
    # The same database (the web and the worker of one install) gives the same namespace,
    # its password does not count, and another database gives another.
    url = "postgresql+psycopg://ivr:{}@db.internal/ivr"
    same = [load_settings({**base, "DATABASE_URL": url.format(p)}).redis_namespace for p in ("x", "y")]
    other = load_settings({**base, "DATABASE_URL": "postgresql+psycopg://ivr@db.internal/ivr2"})
    assert same[0] == same[1] != other.redis_namespace
