"""`ivr backup DIR`: a consistent copy of the data, the key store and the key epochs.

- The data first, then the key store: a key commits before the data it protects, so every
  case in the copy of the data has its key in the (later) copy of the key store.
- The key store and the epoch folder are copied under the rotation lock (SQLite: a write
  transaction held on the key store; PostgreSQL: the rotators' advisory lock), so the copy
  of the epochs holds the epoch that wrapped every key in the copy of the key store.
- SQLite through its online backup API (a file copy of a database in WAL mode can miss
  everything still in the WAL: every key, in a quiet key store); PostgreSQL through
  `pg_dump --format=custom` (restore with `pg_restore`).

The copy of the key store and the epochs opens every case alive at that moment, including
those purged later: keep it no longer than RETENTION_DAYS (README, "Data and privacy at rest").
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ivr.errors import IvrError
from ivr.storage import ROTATION_LOCK, Database


class BackupError(IvrError):
    """A backup could not be made (the message says which part and why)."""


def backup(data_url: str, keystore_url: str, epoch_dir: Path, target: Path) -> Path:
    """Copy both stores and the epoch folder into a new folder under `target`; return it."""
    folder = target / datetime.now(UTC).strftime("ivr-backup-%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, mode=0o700)
    _copy_store(data_url, folder / "ivr")
    keys = Database(keystore_url)
    try:
        if keys.backend == "sqlite":
            path = make_url(keystore_url).database
            assert path
            # One connection holds the write lock (no key added, destroyed or re-wrapped
            # meanwhile), another reads the copy (a connection may not back up while it writes).
            lock = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")
                _copy_epochs(epoch_dir, folder / "key-epochs")
                with sqlite3.connect(path, timeout=30) as source, \
                        sqlite3.connect(folder / "keys.db") as copy:
                    source.backup(copy)
                lock.execute("ROLLBACK")
            finally:
                lock.close()
        else:
            with keys.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:n)"), {"n": ROTATION_LOCK})
                try:
                    _copy_epochs(epoch_dir, folder / "key-epochs")
                    _pg_dump(keystore_url, folder / "keys.dump")
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": ROTATION_LOCK})
                    conn.commit()
    finally:
        keys.engine.dispose()
    return folder


def _copy_store(url: str, stem: Path) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        with sqlite3.connect(parsed.database, timeout=30) as live, \
                sqlite3.connect(stem.with_suffix(".db")) as copy:
            live.backup(copy)
        return
    _pg_dump(url, stem.with_suffix(".dump"))


def _copy_epochs(epoch_dir: Path, target: Path) -> None:
    target.mkdir(mode=0o700)
    for epoch in sorted(epoch_dir.glob("*.key")):
        shutil.copy2(epoch, target / epoch.name)
    if not any(target.iterdir()):
        raise BackupError(f"no key epoch in {epoch_dir}: is KEY_EPOCH_DIR the hotline's?")


def _pg_dump(url: str, out: Path) -> None:
    """pg_dump in its custom format; the password goes by environment, not the command line."""
    parsed = make_url(url)
    exe = shutil.which("pg_dump")
    if exe is None:
        raise BackupError("pg_dump is needed to back up PostgreSQL (apt-get install postgresql-client)")
    args = [exe, "--format=custom", "--no-owner", f"--file={out}", f"--dbname={parsed.database}"]
    if parsed.host:
        args.append(f"--host={parsed.host}")
    if parsed.port:
        args.append(f"--port={parsed.port}")
    if parsed.username:
        args.append(f"--username={parsed.username}")
    env = {**os.environ, "PGPASSWORD": parsed.password or ""} if parsed.password else dict(os.environ)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BackupError(f"pg_dump of {parsed.database} failed: {done.stderr.strip()[-300:]}")
