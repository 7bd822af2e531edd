"""Silent calls: what N recordings that hold no speech cost the key store.

    .venv/bin/python bench/empty_calls.py [--calls 100] [--live 2000] [--postgres URL]

A caller who says nothing at the tone makes a case (its number sealed under a fresh data
key) that the worker drops once it hears no speech: the key must go. This bench makes
`--live` live cases' keys first (what a running hotline holds), then runs `--calls` such
recordings through `voicemail.note_recording` and `voicemail.process_recording` exactly as
the worker does (the audio a second of line hiss; the speech detector answers "no speech";
the delete at Twilio a no-op), then the hourly purge. It prints the time the drops took, how
many key epochs they retired (each retirement re-wraps every live key) and what the purge
did. SQLite in a throw-away folder, or a PostgreSQL database made for the run (`--postgres`
with an admin URL; dropped after).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import struct
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from ivr.engine import Caller
from ivr.keys import Keyring, new_master_key, parse_master_keys
from ivr.storage import Case, Database, KeyEpoch, Vault, upgrade
from ivr.voicemail import Reported, Tools, note_recording, process_recording, purge


def hiss() -> bytes:
    """A second of 8 kHz line noise as a WAV (what a silent caller's line carries)."""
    import random

    rng = random.Random(12)
    frames = b"".join(struct.pack("<h", int(rng.gauss(0, 12))) for _ in range(8000))
    header = (b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data"
              + struct.pack("<I", len(frames)))
    return header + frames


def retired(vault: Vault) -> int:
    with vault.keys.session() as k:
        return int(k.scalar(select(func.count(KeyEpoch.id)).where(KeyEpoch.retired_at.is_not(None))) or 0)


@contextlib.contextmanager
def stores(postgres: str | None) -> Iterator[tuple[str, str, Path]]:
    with tempfile.TemporaryDirectory(prefix="ivr-empty-") as folder:
        if postgres is None:
            yield f"sqlite:///{folder}/ivr.db", f"sqlite:///{folder}/keys.db", Path(folder)
            return
        name = "ivr_bench_" + secrets.token_hex(4)
        admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name}"))
            c.execute(text(f"CREATE DATABASE {name}_keys"))
        base = postgres.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}", f"{base}/{name}_keys", Path(folder)
        finally:
            with admin.connect() as c:
                for db in (name, f"{name}_keys"):
                    c.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--live", type=int, default=2000, help="live data keys before the calls")
    parser.add_argument("--postgres", help="an admin URL; a database is made for the run")
    args = parser.parse_args()
    with stores(args.postgres) as (data_url, keys_url, folder):
        upgrade(data_url, keys_url)
        db = Database(data_url)
        vault = Vault(Keyring(parse_master_keys(new_master_key())), Database(keys_url), folder / "epochs")
        vault.prepare()
        for _ in range(args.live):
            vault.new_key()
        wav = hiss()
        tools = Tools(fetch=lambda _sid: wav, delete=lambda _sid: None, check_audio=lambda _wav: None,
                      transcribe=lambda *_: (_ for _ in ()).throw(AssertionError("transcribed")),
                      speech=lambda _wav: False)
        before = retired(vault)
        started = time.perf_counter()
        for n in range(args.calls):
            sid = f"{n:032x}"
            note_recording(db, vault, Reported(
                call_sid="CA" + sid, recording_sid="RE" + sid, status="completed", duration=1,
                number="+79161234567", caller=Caller(False, "RU", "russia"), flow="hotline",
                step="voicemail", language="ru"))
            with db.session() as s:
                rec_id = s.scalars(select(Case.recording_id).order_by(Case.id.desc())).first()
            assert rec_id is not None
            assert process_recording(db, vault, tools, rec_id) == "empty"
        took = time.perf_counter() - started
        rotations = retired(vault) - before
        started = time.perf_counter()
        purge(db, vault, timedelta(days=30))
        purge_took = time.perf_counter() - started
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{backend}, {args.live} live keys: {args.calls} silent calls dropped in {took:.2f} s "
              f"({took / args.calls * 1000:.1f} ms each), key epochs retired by them: {rotations}")
        print(f"the next purge: {retired(vault) - before - rotations} epoch(s) retired in {purge_took:.2f} s")
        db.engine.dispose()
        vault.keys.engine.dispose()


if __name__ == "__main__":
    main()
