"""What a case code costs the webhook: a wrong code, and a right code with its PIN.

    .venv/bin/python bench/casecode.py [--cases 100000] [--tries 200]

Fills a throw-away SQLite database with `--cases` open cases, each with a code hash (one with
a PIN), then times `Codes.find` with wrong codes (the common case under a guessing attack:
one count, one indexed read, one insert) and `find` + `check_pin` with the right code and PIN
(one argon2 verification). Prints the median and p99 of each in milliseconds.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.casecode import Codes, code_hash, code_key  # noqa: E402
from ivr.config import Settings  # noqa: E402
from ivr.jobs import prepare_stores, vault_for  # noqa: E402
from ivr.storage import Call, Case, CodeMiss, Database, Recording, Vault  # noqa: E402


def fill(db: Database, vault: Vault, cases: int) -> None:
    key = code_key(vault)
    data_key = vault.new_key()
    rows = range(1, cases + 1)
    with db.engine.begin() as c:
        c.execute(insert(Call), [{"id": i, "call_sid": f"CA{i:032x}"} for i in rows])
        c.execute(insert(Recording), [{"id": i, "call_id": i} for i in rows])
        c.execute(insert(Case), [
            {"id": i, "call_id": i, "recording_id": i, "data_key_id": data_key, "language": "ru",
             "code_hash": code_hash(key, f"{secrets.randbelow(10 ** 12):012d}"), "pin_hash": "x"}
            for i in rows])


def ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"median {statistics.median(samples) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--tries", type=int, default=200)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(instance_dir=Path(tmp), database_url=f"sqlite:///{tmp}/ivr.db",
                            keystore_url=f"sqlite:///{tmp}/keys.db")
        prepare_stores(settings)
        db, vault = Database(settings.database_url), vault_for(settings)
        fill(db, vault, args.cases)
        codes = Codes(db, vault)
        # One case the caller can open: the code issued by the webhook, the PIN chosen twice.
        code = codes.issue(f"CA{1:032x}")
        assert code is not None
        codes.choose_pin(f"CA{1:032x}", "2468", second=False)
        codes.choose_pin(f"CA{1:032x}", "2468", second=True)
        wrong, right = [], []
        for i in range(args.tries):
            start = time.perf_counter()
            codes.find(f"CW{i}", f"{secrets.randbelow(10 ** 12):012d}")
            wrong.append(time.perf_counter() - start)
            with db.session() as s:  # keep the burst from slowing: this measures the lookup
                s.query(CodeMiss).delete()
        for i in range(max(10, args.tries // 10)):
            start = time.perf_counter()
            assert codes.find(f"CR{i}", code).outcome == "found"
            assert codes.check_pin(f"CR{i}", "2468").outcome == "right"
            right.append(time.perf_counter() - start)
        print(f"{args.cases} cases with a code, SQLite")
        print(f"wrong code (count, indexed read, insert): {ms(wrong)}")
        print(f"right code and PIN (+ one argon2 verification): {ms(right)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
