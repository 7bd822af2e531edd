"""Shared fixtures: settings pointing at throw-away folders, the app, signed requests."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.config import Settings
from tests.servers import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
TEST_FLOWS = ROOT / "tests" / "flows"
BASE = "https://hotline.example.org"
TOKEN = "test-auth-token"
HEALTHZ_TOKEN = "healthz-token-for-the-tests-0123456789"
TEST_KEYS = "test-key-2:" + "A" * 43 + ",test-key-1:" + "B" * 43


@pytest.fixture(scope="session")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One headless Chromium (Debian's, tests/browser.py) for the whole run, shared by the
    console's browser tests; a browser that is missing and cannot be installed fails. The
    screenshots of an earlier run are cleared first, and their folder named at the end."""
    from playwright.sync_api import sync_playwright

    from tests.browser import SHOTS, ensure_browser

    try:
        chromium = ensure_browser()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    shutil.rmtree(SHOTS, ignore_errors=True)
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=chromium, headless=True,
                                  args=["--no-sandbox", "--disable-dev-shm-usage",
                                        "--autoplay-policy=no-user-gesture-required"])
        yield found
        found.close()
    if SHOTS.is_dir():
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nconsole screenshots: {SHOTS}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected nothing is a failure, never a green build."""
    if session.testscollected == 0:
        session.exitstatus = 1


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    """A private copy of the small test flows, safe to edit."""
    target = tmp_path / "flows"
    shutil.copytree(TEST_FLOWS, target)
    return target


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TRANSCRIBE_CACHE for the whole run: the bundled Whisper base is joined once, not per test."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path: Path, flows_dir: Path, model_cache: Path) -> Settings:
    return Settings(
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token=TOKEN,
        public_base_url=BASE,
        database_url=f"sqlite:///{tmp_path / 'ivr.db'}",
        redis_url="redis://127.0.0.1:1/0",  # none: tests that need Redis start their own
        flows_dir=flows_dir,
        instance_dir=tmp_path / "instance",
        hotline_number="+15005550006",
        transfer_numbers=("+380441112233",),
        data_keys=TEST_KEYS,
        keystore_url=f"sqlite:///{tmp_path / 'keys.db'}",
        outbox_flush_seconds=0,
        healthz_token=HEALTHZ_TOKEN,
        transcribe_cache=model_cache,
    )


# Tests run at a fixed time: a Sunday, when the test flow's office is closed.
SUNDAY = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def app(settings: Settings) -> Flask:
    create_schema(settings.database_url, settings.keystore_url)
    return create_app(settings, clock=lambda: SUNDAY)


def create_schema(url: str, keystore_url: str) -> None:
    """The tables, quickly (test_storage.py holds the migrations equal to the models)."""
    from ivr.storage import Base, KeyBase

    for target, metadata in ((url, Base.metadata), (keystore_url, KeyBase.metadata)):
        engine = create_engine(target)
        metadata.create_all(engine)
        engine.dispose()


def _postgres_admin() -> str:
    return os.environ.get("IVR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL database for this run. Never skipped: a missing server fails."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = _postgres_admin()
    name = f"ivr_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is needed for the database tests ({admin_url}): {exc}")
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test twice: on SQLite and on PostgreSQL (an empty schema each time)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ivr.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    engine = create_engine(base)
    with engine.begin() as conn:  # each test starts from an empty schema
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield base


@pytest.fixture
def keystore_url(database_url: str, tmp_path: Path) -> str:
    """The key store: its own SQLite file; on PostgreSQL, the same throw-away database
    (its tables and Alembic version table are its own)."""
    return f"sqlite:///{tmp_path / 'keys.db'}" if database_url.startswith("sqlite") else database_url


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def healthz_details(client: FlaskClient) -> Any:
    """/healthz with its details (the token a monitor would send)."""
    return client.get("/healthz", headers={"Authorization": f"Bearer {HEALTHZ_TOKEN}"}).get_json()


def call_params(**extra: str) -> dict[str, str]:
    """What Twilio posts with every voice webhook."""
    params = {
        "CallSid": "CA" + "a" * 32,
        "AccountSid": "AC" + "1" * 32,
        "From": "+79161234567",
        "To": "+15005550006",
        "Caller": "+79161234567",
        "Called": "+15005550006",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "FromCountry": "",
        "FromCity": "",
    }
    params.update(extra)
    return params


def signed(client: FlaskClient, path_and_query: str, params: dict[str, str],
           base: str = BASE, token: str = TOKEN, **kw: Any) -> Any:
    """POST as Twilio would: signed over base URL + path + query, then the sorted params."""
    signature = RequestValidator(token).compute_signature(base + path_and_query, params)
    headers = {"X-Twilio-Signature": signature, **kw.pop("headers", {})}
    return client.post(path_and_query, data=params, headers=headers, **kw)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own on a spare port (never the machine's shared one)."""
    server = RedisServer(tmp_path)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()
