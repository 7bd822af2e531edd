"""The database and the keys that protect it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
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
from ivr.storage import Base, Case, Database, DataKey, KeyBase, OutboxJob, Recording, Vault, upgrade
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


def test_the_migrations_build_exactly_the_models_and_can_run_again(
    database_url: str, keystore_url: str
) -> None:
    upgrade(database_url, keystore_url)
    upgrade(database_url, keystore_url)  # every start runs it: the second time does nothing
    for url, metadata, expected in (
        (database_url, Base.metadata, {"calls", "recordings", "cases", "audit", "outbox", "alembic_version"}),
        (keystore_url, KeyBase.metadata, {"data_keys", "alembic_version_keystore"}),
    ):
        engine = create_engine(url)
        with engine.connect() as conn:
            # Only this side's tables: sharing one PostgreSQL database (as here), the other
            # side's tables and the Alembic version tables are not this side's business.
            ours = set(metadata.tables)
            context = MigrationContext.configure(conn, opts={
                "include_name": lambda name, kind, _parent, ours=ours: kind != "table" or name in ours})
            diff = compare_metadata(context, metadata)
            tables = set(inspect(conn).get_table_names())
        engine.dispose()
        assert diff == []
        assert expected <= tables
    if database_url != keystore_url:
        engine = create_engine(database_url)
        assert "data_keys" not in inspect(engine).get_table_names()  # no key in a data backup
        engine.dispose()


def test_the_cli_upgrades_the_database(database_url: str, keystore_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "KEYSTORE_URL": keystore_url, "IVR_DOTENV": "/nonexistent",
           "INSTANCE_DIR": str(tmp_path / "instance")}
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0 and "database is up to date" in result.output
    for url, table in ((database_url, "cases"), (keystore_url, "data_keys")):
        engine = create_engine(url)
        assert table in inspect(engine).get_table_names()
        engine.dispose()


def test_a_case_is_sealed_and_its_key_rotates_and_shreds(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    upgrade(database_url, keystore_url)
    db, keys = Database(database_url), Database(keystore_url)
    old = Vault(keyring(K1), keys, tmp_path / "epochs")
    assert note_recording(db, old, report()) is not None
    with db.session() as s:
        case = s.scalars(select(Case)).one()
        assert case.number is not None and NUMBER.encode() not in case.number
        assert old.open(case, "number") == NUMBER.encode()
        key_id = case.data_key_id

    # A new master key goes first; rotation makes a new key epoch sealed under it, re-wraps
    # every data key under that epoch and destroys the old epoch; then the old master can go.
    epochs = tmp_path / "epochs"
    assert Vault(keyring(K2, K1), keys, epochs).rotate() == 2  # the case's key and the number-hash key
    new_only = Vault(keyring(K2), keys, epochs)
    assert new_only.open(case, "number") == NUMBER.encode()
    (epoch_file,) = epochs.glob("*.key")
    assert json.loads(epoch_file.read_text())["master"] == K2.split(":")[0]
    with keys.session() as k:
        wrapped_by = {(key.epoch_id, key.master_id) for key in k.scalars(select(DataKey))}
    assert wrapped_by == {(epoch_file.stem, None)}
    with pytest.raises(CryptoError, match="not in IVR_DATA_KEYS"):
        old.open(case, "number")

    # A sealed value copied into another case does not open there (bound to its place).
    assert note_recording(db, new_only, report("b", number="+380652123456")) is not None
    with db.session() as s:
        first, second = s.scalars(select(Case).order_by(Case.id)).all()
        second.transcript = first.number
    with pytest.raises(CryptoError, match="wrong key or altered data"):
        new_only.open(second, "transcript")

    # Destroying the data key makes the case's data unreadable for good.
    new_only.destroy(key_id)
    with pytest.raises(CryptoError, match="destroyed"):
        new_only.open(case, "number")
    db.engine.dispose()
    keys.engine.dispose()


def test_a_backup_of_the_data_is_unreadable_once_a_case_key_is_destroyed(tmp_path: Path) -> None:
    """Crypto-shredding, backups included: the data's backup holds no key."""
    data, store = tmp_path / "ivr.db", tmp_path / "keys.db"
    upgrade(f"sqlite:///{data}", f"sqlite:///{store}")
    db, keys = Database(f"sqlite:///{data}"), Database(f"sqlite:///{store}")
    vault = Vault(keyring(K1), keys, tmp_path / "epochs")
    note_recording(db, vault, report())
    note_recording(db, vault, report("b"))
    with db.session() as s:
        shredded, _kept = s.scalars(select(Case).order_by(Case.id)).all()
    db.engine.dispose()
    backup = tmp_path / "backup.db"
    with sqlite3.connect(data) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # what a nightly backup of DATABASE_URL holds
    vault.destroy(shredded.data_key_id)
    restored = Database(f"sqlite:///{backup}")
    with restored.session() as s:
        old, other = s.scalars(select(Case).order_by(Case.id)).all()
        assert old.number == shredded.number  # the ciphertext is in the backup…
        with pytest.raises(CryptoError, match="destroyed"):
            vault.open(old, "number")  # …and nothing opens it
        assert vault.open(other, "number") == NUMBER.encode()
    restored.engine.dispose()
    keys.engine.dispose()


def test_reports_are_idempotent_and_empty_ones_make_no_case(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    upgrade(database_url, keystore_url)
    db = Database(database_url)
    vault = Vault(keyring(K1), Database(keystore_url), tmp_path / "epochs")
    assert note_recording(db, vault, report()) is not None
    assert note_recording(db, vault, report()) is None  # Twilio delivered it twice
    assert note_recording(db, vault, report("c", status="absent", duration=0)) is None
    # A 0 s recording Twilio holds: no case, but a job that deletes it there (once).
    assert note_recording(db, vault, report("d", duration=0)) is not None
    assert note_recording(db, vault, report("d", duration=0)) is None
    withheld = Reported(call_sid="CA" + "e" * 32, recording_sid="RE" + "e" * 32, status="completed",
                        duration=3, number="anonymous", caller=Caller(True, None, "elsewhere"),
                        language="en")
    assert note_recording(db, vault, withheld) is not None
    with db.session() as s:
        cases = s.scalars(select(Case).order_by(Case.id)).all()
        assert [(c.region, c.language) for c in cases] == [("crimea", "ru"), ("elsewhere", "en")]
        assert cases[1].number is None and cases[1].caller_hash is None
        assert len(s.scalars(select(OutboxJob)).all()) == 3
        assert [r.status for r in s.scalars(select(Recording).where(Recording.duration == 0))] == ["empty"]
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


def test_a_status_callback_before_the_action_still_gets_the_callers_region(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    """recordingStatusCallback carries no From; if it arrives first, the action fills in."""
    upgrade(database_url, keystore_url)
    db = Database(database_url)
    vault = Vault(keyring(K1), Database(keystore_url), tmp_path / "epochs")
    early = Reported(call_sid="CA" + "a" * 32, recording_sid="RE" + "a" * 32, status="completed",
                     duration=5, number="", caller=Caller(True, None, "elsewhere"), language="ru")
    assert note_recording(db, vault, early) is not None
    assert note_recording(db, vault, report()) is None  # the Record action, with From
    with db.session() as s:
        case = s.scalars(select(Case)).one()
        assert (case.region, case.country) == ("crimea", "UA")
        assert vault.open(case, "number") == NUMBER.encode() and case.caller_hash is not None
    db.engine.dispose()
