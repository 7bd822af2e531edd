"""The database and the keys that protect it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select

from ivr.cli import main as cli
from ivr.engine import Caller
from ivr.errors import ConfigError
from ivr.keys import CryptoError, Keyring, development_keys, new_master_key, parse_master_keys
from ivr.storage import Base, Case, Database, DataKey, OutboxJob, Vault, upgrade
from ivr.voicemail import Reported, note_recording

NUMBER = "+79781234567"


def keyring(*specs: str) -> Keyring:
    return Keyring(parse_master_keys(",".join(specs)))


K1, K2 = new_master_key(), new_master_key()


def report(
    sid_digit: str = "a", number: str = NUMBER, status: str = "completed", duration: int = 5
) -> Reported:
    return Reported(call_sid="CA" + sid_digit * 32, recording_sid="RE" + sid_digit * 32, status=status,
                    duration=duration, number=number,
                    caller=Caller(withheld=False, country="UA", region="crimea"),
                    flow="hotline", flow_version="abc", step="voicemail", language="ru")


def test_the_migrations_build_exactly_the_models_and_can_run_again(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # every start runs it: the second time does nothing
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"calls", "recordings", "cases", "audit", "data_keys", "outbox", "alembic_version"} <= tables


def test_the_cli_upgrades_the_database(database_url: str) -> None:
    env = {"DATABASE_URL": database_url, "IVR_DOTENV": "/nonexistent"}
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0 and "database is up to date" in result.output
    engine = create_engine(database_url)
    assert "cases" in inspect(engine).get_table_names()
    engine.dispose()


def test_a_case_is_sealed_and_its_key_rotates_and_shreds(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    old = Vault(keyring(K1))
    assert note_recording(db, old, report()) is not None
    with db.session() as s:
        case = s.scalars(select(Case)).one()
        assert case.number is not None and NUMBER.encode() not in case.number
        assert old.open(s, case, "number") == NUMBER.encode()
        case_id, key_id = case.id, case.data_key_id

    # A new master key goes first; rotation re-wraps every data key, then the old one can go.
    both = Vault(keyring(K2, K1))
    with db.session() as s:
        assert both.rotate(s) == 2  # the case's key and the number-hash key
    new_only = Vault(keyring(K2))
    with db.session() as s:
        rotated = s.get(Case, case_id)
        assert rotated is not None and new_only.open(s, rotated, "number") == NUMBER.encode()
        assert {k.master_id for k in s.scalars(select(DataKey))} == {K2.split(":")[0]}
    with db.session() as s, pytest.raises(CryptoError, match="is not in IVR_DATA_KEYS"):
        again = s.get(Case, case_id)
        assert again is not None
        old.open(s, again, "number")

    # A sealed value copied into another case does not open there (bound to its place).
    assert note_recording(db, new_only, report("b", number="+380652123456")) is not None
    with db.session() as s:
        first, second = s.scalars(select(Case).order_by(Case.id)).all()
        second.transcript = first.number
    with db.session() as s, pytest.raises(CryptoError, match="wrong key or altered data"):
        moved = s.scalars(select(Case).order_by(Case.id.desc())).first()
        assert moved is not None
        new_only.open(s, moved, "transcript")

    # Destroying the data key makes the case's data unreadable for good.
    with db.session() as s:
        new_only.destroy(s, key_id)
    with db.session() as s, pytest.raises(CryptoError, match="destroyed"):
        shredded = s.get(Case, case_id)
        assert shredded is not None
        new_only.open(s, shredded, "number")
    db.engine.dispose()


def test_reports_are_idempotent_and_empty_ones_make_no_case(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    vault = Vault(keyring(K1))
    assert note_recording(db, vault, report()) is not None
    assert note_recording(db, vault, report()) is None  # Twilio delivered it twice
    assert note_recording(db, vault, report("c", status="absent", duration=0)) is None
    assert note_recording(db, vault, report("d", duration=0)) is None
    withheld = Reported(call_sid="CA" + "e" * 32, recording_sid="RE" + "e" * 32, status="completed",
                        duration=3, number="anonymous", caller=Caller(True, None, "elsewhere"),
                        language="en")
    assert note_recording(db, vault, withheld) is not None
    with db.session() as s:
        cases = s.scalars(select(Case).order_by(Case.id)).all()
        assert [(c.region, c.language) for c in cases] == [("crimea", "ru"), ("elsewhere", "en")]
        assert cases[1].number is None and cases[1].caller_hash is None
        assert len(s.scalars(select(OutboxJob)).all()) == 2
    db.engine.dispose()


def test_master_keys_are_checked_and_never_printed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for bad, message in [("nocolon", "is not `id:base64key`"), ("k:" + "A" * 10, "is not 32 bytes"),
                         (f"{K1},{K1}", "twice"), ("", "IVR_DATA_KEYS is empty")]:
        with pytest.raises(ConfigError, match=message):
            keyring(bad)
    key = parse_master_keys(K1)[0]
    assert base64.urlsafe_b64encode(key.key).decode().rstrip("=") not in repr(key)

    caplog.set_level(logging.WARNING)
    made = development_keys(tmp_path / "instance")
    assert (tmp_path / "instance" / "data-keys").stat().st_mode & 0o777 == 0o600
    assert development_keys(tmp_path / "instance") == made  # made once, then kept
    assert "set IVR_DATA_KEYS in production" in caplog.text
