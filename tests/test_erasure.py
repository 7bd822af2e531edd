"""Erased means erased, on disk too: a forensic look at every raw file of both stores.

The attacker of these tests holds the master keys (IVR_DATA_KEYS, as the server runs with
them) and a copy of every file of the data and the key store: the database files, their
WALs, the PostgreSQL data directory (pg_wal, dead tuples, pg_statistic), and the key epoch
folder. After a purge, nothing they find may open the purged case.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, select, text, update

from ivr.engine import Caller
from ivr.keys import CryptoError, Keyring, number_hash, parse_master_keys, seal, unseal
from ivr.replies import add_reply
from ivr.standin import tone_wav
from ivr.storage import Case, Database, DataKey, KeyEpoch, Note, Recording, Reply, Vault, upgrade, utcnow
from ivr.voicemail import Reported, note_recording, purge
from tests.conftest import TEST_KEYS
from tests.servers import PostgresCluster

NUMBER = "+79781234567"
WORDS = b"I want to surrender. Please call me back tomorrow."
KEYRING = Keyring(parse_master_keys(TEST_KEYS))


@dataclass
class Evidence:
    """What the attacker looks for: every wrapped form the case's data key ever had, and
    every ciphertext of the case, each with the associated data it was sealed with."""

    case_id: int
    key_id: int
    wrapped: set[bytes] = field(default_factory=set)
    sealed: dict[str, bytes] = field(default_factory=dict)  # context -> ciphertext
    hashes: set[str] = field(default_factory=set)  # the case's caller_hash (its HMAC part)
    hash_keys: set[bytes] = field(default_factory=set)  # the number-hash keys, wrapped


def make_case(db: Database, vault: Vault, digit: str, number: str = NUMBER) -> int:
    """A caller's voicemail as the worker leaves it: number, audio, transcript, a note, and
    an operator's reply for the caller."""
    sid = digit * 32
    note_recording(db, vault, Reported(
        call_sid="CA" + sid, recording_sid="RE" + sid, status="completed", duration=47, number=number,
        caller=Caller(False, "UA", "crimea"), flow="hotline", step="voicemail", language="ru"))
    with db.session() as s:
        case = s.scalars(select(Case).join(Recording, Recording.id == Case.recording_id)
                         .where(Recording.recording_sid == "RE" + sid)).one()
        rec = s.get(Recording, case.recording_id)
        assert rec is not None
        rec.audio, rec.audio_bytes = vault.seal_audio(case, tone_wav(1.5)), 24000
        case.transcript = vault.seal(case, "transcript", WORDS)
        note = Note(case_id=case.id, operator_id=None)
        s.add(note)
        s.flush()
        note.text = vault.seal_note(case, note, "she is afraid of her husband")
        case_id = case.id
    add_reply(db, vault, case_id, "Мы позвоним вам завтра в 10:00.", actor="cli:root")
    return case_id


def record(db: Database, vault: Vault, case_id: int, evidence: Evidence | None = None) -> Evidence:
    with db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        rec = s.get(Recording, case.recording_id)
        assert rec is not None and rec.audio is not None and case.number is not None
        found = evidence or Evidence(case_id, case.data_key_id)
        found.sealed.update({f"case:{case.id}:number": case.number, f"case:{case.id}:audio": rec.audio,
                             f"case:{case.id}:transcript": case.transcript or b""})
        for note in s.scalars(select(Note).where(Note.case_id == case.id)):
            found.sealed[f"case:{case.id}:note:{note.id}"] = note.text or b""
        for reply in s.scalars(select(Reply).where(Reply.case_id == case.id)):
            found.sealed[f"case:{case.id}:reply:{reply.id}"] = reply.text or b""
        assert case.caller_hash is not None
        found.hashes.add(case.caller_hash.partition(":")[2])
    with vault.keys.session() as k:
        key = k.get(DataKey, found.key_id)
        assert key is not None and key.wrapped is not None
        found.wrapped.add(key.wrapped)
        found.hash_keys.update(k.scalars(select(DataKey.wrapped).where(
            DataKey.purpose == "number-hash", DataKey.wrapped.is_not(None))))
    return found


def raw_files(*folders: Path) -> Iterator[tuple[Path, bytes]]:
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                try:
                    yield path, path.read_bytes()
                except (FileNotFoundError, PermissionError):
                    continue  # a temporary file that went while we walked


def fragments(blob: bytes) -> list[bytes]:
    """Pieces a store keeps whole even when it splits a value (TOAST chunks of ~2 kB)."""
    return [blob[i:i + 32] for i in range(0, max(len(blob) - 32, 1), 1500)]


@dataclass
class Attack:
    files: int = 0
    epoch_keys: dict[str, bytes] = field(default_factory=dict)
    wrapped_found: list[str] = field(default_factory=list)  # where the wrapped key bytes lie
    sealed_found: list[str] = field(default_factory=list)  # where pieces of ciphertext lie
    data_keys: list[bytes] = field(default_factory=list)  # data keys it recovered
    opened: list[str] = field(default_factory=list)  # what it decrypted
    hashes_found: list[str] = field(default_factory=list)  # where the caller's hash lies
    linked: list[str] = field(default_factory=list)  # hashes a number-hash key it has matches


def unwrap_any(out: Attack, wrapped: bytes) -> list[bytes]:
    candidates = [(k, f"data-key:epoch:{e}") for e, k in out.epoch_keys.items()]
    candidates += [(m.key, f"data-key:{m.id}") for m in KEYRING.masters]
    opened = []
    for key, context in candidates:
        with contextlib.suppress(CryptoError):
            opened.append(unseal(key, wrapped, context))
    return opened


def attack(evidence: Evidence, keystore: Database, *folders: Path) -> Attack:
    """Everything the master keys open in these files: epoch files (wherever they lie),
    then the case's wrapped data key wherever it is found, then the case's ciphertexts; and
    whether a number-hash key (live in the key store, or a copy found) turns the caller's
    number into a caller_hash found in the files (numbers are few: trying them all is easy)."""
    out = Attack()
    blobs = list(raw_files(*folders))
    out.files = len(blobs)
    for path, blob in blobs:
        if path.suffix == ".key" or b'"epoch"' in blob:
            try:
                doc = json.loads(blob)
                sealed = base64.b64decode(doc["key"])
            except (ValueError, KeyError, TypeError):
                continue
            for master in KEYRING.masters:
                with contextlib.suppress(CryptoError):
                    context = f"key-epoch:{doc['epoch']}:{master.id}"
                    out.epoch_keys[doc["epoch"]] = unseal(master.key, sealed, context)
    hash_keys: list[bytes] = []
    with keystore.session() as k:
        for wrapped in k.scalars(select(DataKey.wrapped).where(DataKey.purpose == "number-hash",
                                                               DataKey.wrapped.is_not(None))):
            assert wrapped is not None
            hash_keys += unwrap_any(out, wrapped)
    for path, blob in blobs:
        for wrapped in evidence.wrapped:
            if wrapped in blob:
                out.wrapped_found.append(path.name)
                out.data_keys += unwrap_any(out, wrapped)
        for wrapped in evidence.hash_keys:
            if wrapped in blob:
                hash_keys += unwrap_any(out, wrapped)
        for found in evidence.hashes:
            if found.encode() in blob:
                out.hashes_found.append(path.name)
                if any(number_hash(key, NUMBER).startswith(found) for key in hash_keys):
                    out.linked.append(path.name)
        for context, sealed in evidence.sealed.items():
            if any(piece in blob for piece in fragments(sealed)):
                out.sealed_found.append(f"{path.name}:{context}")
    for data_key in out.data_keys:
        for context, sealed in evidence.sealed.items():
            try:
                unseal(data_key, sealed, context)
                out.opened.append(context)
            except CryptoError:
                pass
    return out


def story(db: Database, vault: Vault, settle: Callable[[], None]) -> tuple[Evidence, int]:
    """Three cases: `other` is purged first (the epoch turns over, re-wrapping the first
    case's key), then the first. Returns the first case's evidence (both of its wrapped
    forms) and the case that is kept."""
    first, kept, other = make_case(db, vault, "a"), make_case(db, vault, "b"), make_case(db, vault, "c")
    evidence = record(db, vault, first)
    with db.session() as s:
        s.execute(update(Case).where(Case.id.in_([first, other])).values(
            status="closed", closed_at=utcnow() - timedelta(days=1)))
        s.execute(update(Case).where(Case.id == first).values(closed_at=utcnow()))
    settle()
    assert purge(db, vault, timedelta(hours=12)) == 1  # only `other`: the epoch turns over
    record(db, vault, first, evidence)  # the first case's key, re-wrapped under the new epoch
    assert len(evidence.wrapped) == 2
    settle()
    return evidence, kept


@pytest.fixture
def sqlite_stores(tmp_path: Path) -> Iterator[tuple[Database, Vault, Path]]:
    folder = tmp_path / "instance"
    folder.mkdir()
    data, keys = f"sqlite:///{folder / 'ivr.db'}", f"sqlite:///{folder / 'keys.db'}"
    upgrade(data, keys)
    db, vault = Database(data), Vault(KEYRING, Database(keys), folder / "key-epochs")
    yield db, vault, folder
    db.engine.dispose()
    vault.keys.engine.dispose()


def destroy_without_retiring(vault: Vault, key_id: int) -> None:
    """What destroying a key was before key epochs: the row emptied, nothing else."""
    with vault.keys.session() as k:
        k.execute(update(DataKey).where(DataKey.id == key_id).values(wrapped=None))


def test_sqlite_a_purged_case_is_found_in_no_file_that_opens_it(
    sqlite_stores: tuple[Database, Vault, Path]
) -> None:
    db, vault, folder = sqlite_stores
    evidence, kept = story(db, vault, lambda: None)

    # The test can fail: a key destroyed without retiring its epoch lies in keys.db's WAL
    # (or its file), and with the master keys it opens the caller's number and words.
    destroy_without_retiring(vault, evidence.key_id)
    before = attack(evidence, vault.keys, folder)
    assert before.wrapped_found and before.data_keys and before.linked
    assert {f"case:{evidence.case_id}:number", f"case:{evidence.case_id}:transcript",
            f"case:{evidence.case_id}:audio"} <= set(before.opened)
    assert any(":reply:" in context for context in before.opened)  # the reply, too

    assert purge(db, vault, timedelta(0)) == 1
    after = attack(evidence, vault.keys, folder)
    assert after.files >= 4 and after.epoch_keys  # it did look: both stores and the live epoch
    assert (after.data_keys, after.opened, after.linked) == ([], [], []), after
    # Defence in depth on SQLite: secure_delete and a truncated WAL leave not even the bytes.
    assert after.wrapped_found == after.sealed_found == after.hashes_found == [], after
    assert not (folder / "keys.db-wal").exists() or (folder / "keys.db-wal").stat().st_size == 0
    with db.session() as s:  # the other case lives on, opened through the new epoch
        case = s.get(Case, kept)
        assert case is not None and vault.open(case, "number") == NUMBER.encode()


# --- empty messages: keys destroyed at once, their epoch retired by the next purge ----------


def copy_sqlite(source: Path, target: Path) -> None:
    """What a backup (or anyone who copies the file) holds: SQLite's online backup."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def test_silent_calls_retire_no_epoch_until_the_purge_and_then_one(
    sqlite_stores: tuple[Database, Vault, Path], tmp_path: Path
) -> None:
    """Each silent call's case is dropped with its key, but retiring the key epoch (which
    re-wraps every live key) waits for the hourly purge, once for all of them: callers cannot
    force a rotation per call. Until then the live key store opens nothing of them, though a
    copy of it taken before still does (the window the README states); after the purge no
    file opens the number, and no number-hash key links its hash."""
    import numpy as np

    from ivr.transcribe import has_speech
    from ivr.voicemail import Tools, process_recording
    from tests.audio import wav

    db, vault, folder = sqlite_stores
    kept = make_case(db, vault, "b")
    hiss = wav(np.random.default_rng(12).normal(0, 12, 8000).astype(np.int16))
    tools = Tools(fetch=lambda _sid: hiss, delete=lambda _sid: None, check_audio=lambda _wav: None,
                  transcribe=lambda *_: pytest.fail("an empty message was transcribed"),
                  speech=has_speech)  # the worker's real voice-activity detector
    evidence: list[Evidence] = []
    recordings: list[int] = []
    for n in range(5):
        sid = f"{n:032x}"
        note_recording(db, vault, Reported(
            call_sid="CA" + sid, recording_sid="RE" + sid, status="completed", duration=1,
            number=NUMBER, caller=Caller(False, "UA", "crimea"), flow="hotline", step="voicemail",
            language="uk"))
        with db.session() as s:
            case = s.scalars(select(Case).order_by(Case.id.desc())).first()
            assert case is not None and case.number is not None and case.caller_hash is not None
            found = Evidence(case.id, case.data_key_id, sealed={f"case:{case.id}:number": case.number},
                             hashes={case.caller_hash.partition(":")[2]})
            recordings.append(case.recording_id)
        with vault.keys.session() as k:
            key = k.get(DataKey, found.key_id)
            assert key is not None and key.wrapped is not None
            found.wrapped.add(key.wrapped)
            found.hash_keys.update(k.scalars(select(DataKey.wrapped).where(
                DataKey.purpose == "number-hash", DataKey.wrapped.is_not(None))))
        evidence.append(found)
    copy = tmp_path / "copy"  # a backup of both stores, taken while the cases lived
    copy.mkdir()
    copy_sqlite(folder / "keys.db", copy / "keys.db")
    copy_sqlite(folder / "ivr.db", copy / "ivr.db")

    def retired() -> int:
        with vault.keys.session() as k:
            return len(k.scalars(select(KeyEpoch.id).where(KeyEpoch.retired_at.is_not(None))).all())

    before = retired()
    for recording_id in recordings:
        assert process_recording(db, vault, tools, recording_id) == "empty"
    with db.session() as s:
        assert s.scalars(select(Case.id)).all() == [kept]
    assert retired() == before  # no rotation per call
    assert vault.discarded() == 5
    for found in evidence:
        with pytest.raises(CryptoError, match="destroyed"):
            vault.key_of(found.key_id)  # the live store opens nothing at once
        assert attack(found, vault.keys, folder).opened == []
        # ...but the copy, with the epoch that is still current, opens the number.
        assert attack(found, vault.keys, copy, folder / "key-epochs").opened == [
            f"case:{found.case_id}:number"]

    assert purge(db, vault, timedelta(days=30)) == 0  # no closed case is due: the drops are
    assert retired() == before + 1 and vault.discarded() == 0
    for found in evidence:
        after = attack(found, vault.keys, copy, folder)
        assert after.epoch_keys and after.hashes_found  # it did look, and the hashes lie there
        assert (after.data_keys, after.opened, after.linked) == ([], [], []), after
    assert purge(db, vault, timedelta(days=30)) == 0
    assert retired() == before + 1  # nothing dropped since: no rotation
    with db.session() as s:
        case = s.get(Case, kept)
        assert case is not None and vault.open(case, "number") == NUMBER.encode()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL of this test's own: its data directory is what the attacker reads."""
    pg = PostgresCluster()
    try:
        pg.start()
    except RuntimeError as exc:
        pg.remove()
        pytest.fail(f"a throw-away PostgreSQL cluster is needed for this test: {exc}")
    yield pg
    pg.remove()


def test_postgresql_a_purged_case_is_found_in_no_file_that_opens_it(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("CREATE DATABASE ivr"))
        c.execute(text("CREATE DATABASE ivrkeys"))
    upgrade(cluster.url("ivr"), cluster.url("ivrkeys"))
    db = Database(cluster.url("ivr"))
    vault = Vault(KEYRING, Database(cluster.url("ivrkeys")), tmp_path / "epochs")

    def settle() -> None:
        """Statistics with sample values (pg_statistic), then everything on disk."""
        for engine in (db.engine, vault.keys.engine):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("ANALYZE"))
        with admin.connect() as c:
            c.execute(text("CHECKPOINT"))

    evidence, kept = story(db, vault, settle)
    destroy_without_retiring(vault, evidence.key_id)
    settle()
    before = attack(evidence, vault.keys, cluster.data, tmp_path / "epochs")
    assert before.wrapped_found and before.data_keys and before.linked, before
    assert f"case:{evidence.case_id}:number" in before.opened

    assert purge(db, vault, timedelta(0)) == 1
    for engine in (db.engine, vault.keys.engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM FULL"))
    settle()
    after = attack(evidence, vault.keys, cluster.data, tmp_path / "epochs")
    assert after.files > 100 and after.epoch_keys
    # The old bytes are still there (pg_wal at least): history is kept, and useless.
    assert after.wrapped_found, "expected PostgreSQL to keep the old wrapped key in pg_wal"
    assert after.hashes_found, "expected PostgreSQL to keep the caller's old hash in pg_wal"
    assert (after.data_keys, after.opened, after.linked) == ([], [], []), after
    with db.session() as s:
        case = s.get(Case, kept)
        assert case is not None and vault.open(case, "number") == NUMBER.encode()
    db.engine.dispose()
    vault.keys.engine.dispose()
    with admin.connect() as c:
        c.execute(text("DROP DATABASE ivr WITH (FORCE)"))
        c.execute(text("DROP DATABASE ivrkeys WITH (FORCE)"))
    admin.dispose()


# --- the race: a web process adds a key while the worker retires the epoch ---------------------


def two_processes(database_url: str, keystore_url: str, folder: Path) -> tuple[Vault, Vault]:
    """A web process's vault and a worker's: their own connections and epoch caches."""
    upgrade(database_url, keystore_url)
    return (Vault(KEYRING, Database(keystore_url), folder), Vault(KEYRING, Database(keystore_url), folder))


def opens(vault: Vault, key_id: int) -> bool:
    try:
        vault.key_of(key_id)
    except CryptoError:
        return False
    return True


def test_a_key_wrapped_under_an_epoch_being_retired_never_commits(
    database_url: str, keystore_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web, worker = two_processes(database_url, keystore_url, tmp_path / "epochs")
    web.new_key()  # the epoch exists and the web process has it in memory

    # 1. The worker retires the epoch between the web process wrapping a key and inserting it.
    wrap = web.epochs.wrap
    turned: list[int] = []

    def wrap_then_rotate(epoch_id: str, data_key: bytes) -> bytes:
        wrapped = wrap(epoch_id, data_key)
        if not turned:
            turned.append(worker.shred())
        return wrapped

    monkeypatch.setattr(web.epochs, "wrap", wrap_then_rotate)
    first = web.new_key()
    monkeypatch.undo()
    assert turned and opens(worker, first) and opens(web, first)

    # 2. The web process has inserted its key and checked its epoch, and not yet committed,
    # when the worker starts a rotation: the rotation waits for it (PostgreSQL: FOR SHARE;
    # SQLite: the write lock), then re-wraps its key.
    rotations: list[threading.Thread] = []
    waiting: list[bool] = []

    def rotate_before_commit(_conn: object) -> None:
        if not rotations:
            rotation = threading.Thread(target=worker.shred)
            rotations.append(rotation)
            rotation.start()
            rotation.join(0.5)
            waiting.append(rotation.is_alive())

    before = web.current_epoch()
    event.listen(web.keys.engine, "commit", rotate_before_commit)
    added = web.new_key()
    event.remove(web.keys.engine, "commit", rotate_before_commit)
    rotations[0].join(30)
    assert waiting == [True]
    with web.keys.session() as k:
        row = k.get(DataKey, added)
        assert row is not None and row.epoch_id == worker.current_epoch() != before
    assert opens(worker, added) and opens(web, added)

    # 3. Many at once: two writers and a rotator; every key added opens, one epoch remains.
    keys: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        vault = Vault(KEYRING, Database(keystore_url), tmp_path / "epochs")
        try:
            keys.extend(vault.new_key() for _ in range(15))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def rotator() -> None:
        try:
            for _ in range(6):
                worker.shred()
        except BaseException as exc:
            errors.append(exc)

    crowd = [threading.Thread(target=t) for t in (writer, writer, rotator)]
    for t in crowd:
        t.start()
    for t in crowd:
        t.join(120)
    assert errors == [] and len(keys) == 30
    assert [k for k in keys if not opens(web, k)] == []
    with web.keys.session() as k:
        current = k.scalars(select(KeyEpoch.id).where(KeyEpoch.current.is_(True))).one()
        assert set(k.scalars(select(DataKey.epoch_id))) == {current}
    assert [p.stem for p in (tmp_path / "epochs").glob("*.key")] == [current]
    web.keys.engine.dispose()
    worker.keys.engine.dispose()


def test_the_race_test_can_fail_a_writer_that_does_not_check_loses_its_key(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    """Without the check in the same transaction, a key wrapped under the old epoch commits
    after the rotation and is unreadable once the old epoch file is destroyed."""
    web, worker = two_processes(database_url, keystore_url, tmp_path / "epochs")
    epoch = web.current_epoch()
    wrapped = web.epochs.wrap(epoch, b"k" * 32)
    worker.shred()
    with web.keys.session() as k:
        careless = DataKey(purpose="case", wrapped=wrapped, epoch_id=epoch)
        k.add(careless)
        k.flush()
        key_id = careless.id
    assert not opens(web, key_id)
    web.keys.engine.dispose()
    worker.keys.engine.dispose()


# --- upgrades and crashes -----------------------------------------------------------------------


def test_an_install_from_before_key_epochs_is_rewrapped_at_start(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    """Keys wrapped directly by the master key (key store k0001) are re-wrapped under a key
    epoch by the first start (`ivr db upgrade` here); on SQLite their old bytes are gone."""
    from alembic import command
    from click.testing import CliRunner

    from ivr.cli import main as cli
    from ivr.storage import Call, alembic_config

    upgrade(database_url)
    command.upgrade(alembic_config(keystore_url, "keys"), "k0001")
    plain, gone = b"p" * 32, b"g" * 32
    legacy = [KEYRING.wrap(plain)[0], KEYRING.wrap(gone)[0]]
    keys_engine = create_engine(keystore_url)
    with keys_engine.begin() as c:
        for n, wrapped in enumerate(legacy, start=1):
            c.execute(text("INSERT INTO data_keys (id, purpose, wrapped, master_id, created_at) "
                           "VALUES (:id, 'case', :w, :m, CURRENT_TIMESTAMP)"),
                      {"id": n, "w": wrapped, "m": KEYRING.current})
        c.execute(text("UPDATE data_keys SET wrapped = NULL WHERE id = 2"))  # destroyed, the old way
    keys_engine.dispose()
    db = Database(database_url)
    with db.session() as s:
        call = Call(call_sid="CA" + "f" * 32)
        s.add(call)
        s.flush()
        rec = Recording(recording_sid="RE" + "f" * 32, call_id=call.id)
        s.add(rec)
        s.flush()
        case = Case(call_id=call.id, recording_id=rec.id, data_key_id=1)
        s.add(case)
        s.flush()
        case.number = seal(plain, NUMBER.encode(), f"case:{case.id}:number")

    env = {"DATABASE_URL": database_url, "KEYSTORE_URL": keystore_url, "IVR_DATA_KEYS": TEST_KEYS,
           "INSTANCE_DIR": str(tmp_path / "instance"), "IVR_DOTENV": "/nonexistent"}
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    vault = Vault(KEYRING, Database(keystore_url), tmp_path / "instance" / "key-epochs")
    with db.session() as s:
        case = s.scalars(select(Case)).one()
        assert vault.open(case, "number") == NUMBER.encode()
    with vault.keys.session() as k:
        key = k.get(DataKey, 1)
        assert key is not None and key.master_id is None and key.epoch_id == vault.current_epoch()
    if keystore_url.startswith("sqlite"):
        found = [p.name for p, blob in raw_files(tmp_path) for w in legacy if w in blob]
        assert found == []  # VACUUM and a truncated WAL: the master-wrapped bytes are gone
    assert CliRunner().invoke(cli, ["db", "upgrade"], env=env).exit_code == 0  # nothing more to do
    with vault.keys.session() as k:
        assert len(k.scalars(select(KeyEpoch)).all()) == 1
    db.engine.dispose()
    vault.keys.engine.dispose()


def test_what_a_crashed_rotation_leaves_is_destroyed_and_nothing_else(
    database_url: str, keystore_url: str, tmp_path: Path
) -> None:
    web, worker = two_processes(database_url, keystore_url, tmp_path / "epochs")
    key_id = web.new_key()
    # A rotation killed after writing its epoch file, before its commit: its row says "ours".
    with worker.keys.session() as k:
        k.add(KeyEpoch(id="e20260101-00000000000000aa", current=None))
    worker.epochs.create("e20260101-00000000000000aa")
    (tmp_path / "epochs" / ".e20260101-00000000000000bb.1.tmp").write_bytes(b"half written")
    # Another install's epoch in a folder shared by mistake: not ours, never destroyed.
    worker.epochs.create("e20260101-00000000000000cc")
    worker.shred()
    left = sorted(p.name for p in (tmp_path / "epochs").iterdir() if p.name != ".rotation.lock")
    assert left == ["e20260101-00000000000000cc.key", f"{worker.current_epoch()}.key"]
    assert opens(web, key_id)
    web.keys.engine.dispose()
    worker.keys.engine.dispose()


# --- backups ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_backup_opens_live_cases_and_not_those_purged_since(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from click.testing import CliRunner

    from ivr.cli import main as cli

    instance = tmp_path / "instance"
    if backend == "sqlite":
        data, keys = f"sqlite:///{tmp_path / 'ivr.db'}", f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        pg: PostgresCluster = request.getfixturevalue("cluster")
        admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            for name in ("live", "livekeys", "restored", "restoredkeys"):
                c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                c.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        data, keys = pg.url("live"), pg.url("livekeys")
    env = {"DATABASE_URL": data, "KEYSTORE_URL": keys, "IVR_DATA_KEYS": TEST_KEYS,
           "INSTANCE_DIR": str(instance), "IVR_DOTENV": "/nonexistent", "TWILIO_API_BASE": ""}
    upgrade(data, keys)
    db, vault = Database(data), Vault(KEYRING, Database(keys), instance / "key-epochs")
    purged, kept = make_case(db, vault, "a"), make_case(db, vault, "b")
    with db.session() as s:
        s.execute(update(Case).where(Case.id == purged).values(status="closed", closed_at=utcnow()))

    made = CliRunner().invoke(cli, ["backup", str(tmp_path / "backups")], env=env)
    assert made.exit_code == 0, made.output
    (folder,) = (tmp_path / "backups").iterdir()
    assert "within 30 days" in made.output
    assert purge(db, vault, timedelta(0)) == 1  # after the backup: the epoch turns over

    if backend == "sqlite":
        restored, restored_keys = f"sqlite:///{folder / 'ivr.db'}", f"sqlite:///{folder / 'keys.db'}"
    else:
        restored, restored_keys = pg.url("restored"), pg.url("restoredkeys")
        for dump, url in (("ivr.dump", restored), ("keys.dump", restored_keys)):
            done = subprocess.run(["pg_restore", "--no-owner", f"--dbname={url.replace('+psycopg', '')}",
                                   str(folder / dump)], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
    copy = Database(restored)
    with_backup_epochs = Vault(KEYRING, Database(restored_keys), folder / "key-epochs")
    with_live_epochs = Vault(KEYRING, Database(restored_keys), instance / "key-epochs")
    with copy.session() as s:
        alive, gone = s.get(Case, kept), s.get(Case, purged)
        assert alive is not None and gone is not None and gone.number is not None
        # The backup restores: a live case opens with the backup's own epochs.
        assert with_backup_epochs.open(alive, "number") == NUMBER.encode()
        assert with_backup_epochs.open(alive, "transcript") == WORDS
        # The purged case is in the copy, and opens only with the copied epochs (why those
        # copies must be short-lived); with the hotline's epochs, retired since, it does not.
        assert with_backup_epochs.open(gone, "number") == NUMBER.encode()
        with pytest.raises(CryptoError):
            with_live_epochs.open(gone, "number")
    for engine in (copy.engine, with_backup_epochs.keys.engine, with_live_epochs.keys.engine, db.engine,
                   vault.keys.engine):
        engine.dispose()


def test_ivr_keys_rotate_seals_a_new_epoch_under_the_new_master_key(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ivr.cli import main as cli
    from ivr.keys import new_master_key

    instance = tmp_path / "instance"
    data, keys = f"sqlite:///{tmp_path / 'ivr.db'}", f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(data, keys)
    db, vault = Database(data), Vault(KEYRING, Database(keys), instance / "key-epochs")
    case_id = make_case(db, vault, "a")
    (old_epoch,) = (instance / "key-epochs").glob("*.key")
    newest = new_master_key()
    env = {"DATABASE_URL": data, "KEYSTORE_URL": keys, "INSTANCE_DIR": str(instance),
           "IVR_DATA_KEYS": f"{newest},{TEST_KEYS}", "IVR_DOTENV": "/nonexistent"}
    result = CliRunner().invoke(cli, ["keys", "rotate"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-wrapped 2 data key(s) under a new key epoch sealed with" in result.output  # case, number-hash
    assert not old_epoch.exists()
    only_new = Vault(Keyring(parse_master_keys(newest)), Database(keys), instance / "key-epochs")
    with db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and only_new.open(case, "number") == NUMBER.encode()
    for engine in (db.engine, vault.keys.engine, only_new.keys.engine):
        engine.dispose()


def test_cases_purged_before_the_upgrade_are_coarsened_by_it(database_url: str) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import TextClause, bindparam

    from ivr.storage import AuditEntry, UTCDateTime, alembic_config

    command.upgrade(alembic_config(database_url), "0004")
    exact = datetime(2026, 10, 3, 14, 27, 51, 123456, tzinfo=UTC)
    db = Database(database_url)
    at = bindparam("at", type_=UTCDateTime())

    def sql(statement: str) -> TextClause:
        return text(statement).bindparams(at) if ":at" in statement else text(statement)

    with db.session() as s:  # plain SQL: the models are the newest schema, the tables are 0004's
        s.execute(sql("INSERT INTO calls (id, call_sid, started_at) VALUES (1, :sid, :at)"),
                  {"sid": "CA" + "e" * 32, "at": exact})
        s.execute(sql("INSERT INTO recordings (id, recording_sid, call_id, status, duration, "
                      "audio_bytes, reported_at, stored_at, attempts) "
                      "VALUES (1, :sid, 1, 'done', 47, 24000, :at, :at, 0)"),
                  {"sid": "RE" + "e" * 32, "at": exact})
        s.execute(sql("INSERT INTO cases (id, call_id, recording_id, data_key_id, status, created_at, "
                       "closed_at, purged_at, reoffers, callback_attempts) "
                       "VALUES (1, 1, 1, 1, 'closed', :at, :at, :at, 0, 0)"), {"at": exact})
        s.execute(sql("INSERT INTO audit (actor, action, case_id, at) VALUES ('system', 'purged', 1, :at)"),
                  {"at": exact})
    upgrade(database_url)
    with db.session() as s:
        rec = s.scalars(select(Recording)).one()
        case = s.scalars(select(Case)).one()
        entry = s.scalars(select(AuditEntry)).one()
        assert (rec.recording_sid, rec.audio_bytes, rec.duration) == (None, None, 30)
        day = exact.replace(hour=0, minute=0, second=0, microsecond=0)
        times = (rec.reported_at, rec.stored_at, case.created_at, case.closed_at, case.purged_at, entry.at)
        assert times == (day,) * 6
    db.engine.dispose()
