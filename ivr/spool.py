"""A durable local spool for recording reports the database could not take in time.

A webhook waits for the database only briefly (WEBHOOK_DB_WAIT): a locked SQLite file or a
PostgreSQL that is down must not hold Twilio's request for its 15 s. What the database did
not take is written here instead, one file per report under INSTANCE_DIR/spool: written to a
temporary name, fsync'd, renamed, the folder fsync'd, so a file that exists is complete and
survives a crash or a power cut of this machine (not the loss of its disk).

Each file is sealed (AES-256-GCM under a key derived from the master keys, bound to its file
name): the caller's number in it is never on disk in clear. Files are moved into the database
by every web process's flusher thread and by the worker's housekeeper (`drain`), oldest first,
one process at a time (an flock), and deleted only after the database committed. Noting a
recording is idempotent on its RecordingSid, so a report that is both here and delivered
again by Twilio makes one case.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from ivr.engine import Caller
from ivr.keys import CryptoError, seal, sync_folder, unseal, write_durably
from ivr.voicemail import Reported

log = logging.getLogger(__name__)

SUFFIX = ".report"
STALE_TMP = 3600.0  # a temporary file this old was left by a write that died half-way


class Spool:
    """Reports in a folder, sealed with `keys` ((master id, key), newest first)."""

    def __init__(self, folder: Path, keys: list[tuple[str, bytes]]) -> None:
        self.folder = folder
        self.keys = keys
        self._by_id = dict(keys)

    def put(self, r: Reported) -> None:
        """Keep a report durably; raises OSError when the disk does not take it."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{r.recording_sid}{SUFFIX}"
        master_id, key = self.keys[0]
        data = master_id.encode() + b"\n" + seal(key, json.dumps(asdict(r)).encode(), f"spool:{name}")
        write_durably(self.folder / name, data)

    def count(self) -> int:
        """How many reports wait here (for /healthz)."""
        return sum(1 for _ in self._files())

    def read(self, path: Path) -> Reported:
        """A spooled report; CryptoError or ValueError when it is not one of ours."""
        master_id, sep, sealed = path.read_bytes().partition(b"\n")
        key = self._by_id.get(master_id.decode(errors="replace"))
        if not sep or key is None:
            raise CryptoError(f"spooled report {path.name}: its master key is not in IVR_DATA_KEYS")
        fields = json.loads(unseal(key, sealed, f"spool:{path.name}"))
        fields["caller"] = Caller(**fields["caller"])
        if fields.get("path") is not None:
            fields["path"] = tuple(fields["path"])
        return Reported(**fields)

    def drain(self, note: Callable[[Reported], object], limit: int = 500) -> int:
        """Note spooled reports in the database, oldest first; returns how many.

        `note` raising (the database is still away) stops the round; the file stays. Only one
        process drains at a time; the others return 0 at once.
        """
        if not self.folder.is_dir():
            return 0
        with self._locked() as mine:
            if not mine:
                return 0
            done = 0
            for path in sorted(self._files())[:limit]:
                try:
                    report = self.read(path)
                except FileNotFoundError:
                    continue
                except (CryptoError, ValueError, KeyError, TypeError) as exc:
                    self._set_aside(path, exc)
                    continue
                note(report)  # committed when it returns
                path.unlink(missing_ok=True)
                done += 1
            if done:
                self._sync_folder()
                log.warning("moved %d spooled recording report(s) into the database", done)
            self._clean_tmp()
            return done

    # --- the folder ---------------------------------------------------------------------
    def _files(self) -> Iterator[Path]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                yield Path(entry.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _sync_folder(self) -> None:
        sync_folder(self.folder)

    def _set_aside(self, path: Path, exc: Exception) -> None:
        """A file we cannot open (its master key dropped, altered): kept apart for a person."""
        aside = self.folder / "unreadable"
        aside.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.rename(aside / path.name)
        log.error("spooled report %s cannot be read (%s); moved to %s", path.name,
                  type(exc).__name__, aside)

    def _clean_tmp(self) -> None:
        now = time.time()
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".tmp") and now - entry.stat().st_mtime > STALE_TMP:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
