"""Case assignment at scale: `assign_case` with 1,000 operators and 100,000 open cases in PostgreSQL.

    .venv/bin/python bench/routing.py [--operators 1000] [--cases 100000] [--assign 2000]

One run: a throw-away PostgreSQL database (`--postgres URL`, the admin URL of the server;
dropped at the end, on errors and on Ctrl-C too) and a throw-away SQLite key store, both
brought to the newest schema with `ivr.storage.upgrade`. It bulk-inserts `--operators`
operators (regions, languages, time zones, hours, capacities, some off duty, some disabled),
`--cases` open cases spread over the operators who fit them (most routed, some new or not
transcribed yet), `--closed` closed ones, and `--assign` transcribed cases waiting for an
operator, each case with its call and recording; then VACUUM ANALYZE, as autovacuum would
have done on a database in use. It times `candidates()` alone, then assigns the waiting cases
one by one with `assign_case` (each call timed with `time.perf_counter`), and prints cases
per second, p50, p95, p99 and max. The goal (issue): one assignment under 10 ms at that size;
the last line says whether p50 and p99 are under it. The exit status is 1 when p99 is not.

The clock is fixed (`--at`, a Wednesday at noon UTC), so the share of operators on duty, and
so the work, is the same whatever the time of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ivr and bench, when run as `python bench/routing.py`
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from bench.pipeline import postgres_database  # noqa: E402
from bench.procfs import cpu_busy_seconds, proc_table  # noqa: E402
from ivr.operators import OPEN_STATUSES, assign_case, candidates, parse_hours  # noqa: E402
from ivr.storage import Call, Case, Database, Operator, Recording, upgrade  # noqa: E402

GOAL_MS = 10.0
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WEDNESDAY_NOON = "2026-11-25T12:00:00+00:00"  # 14:00 in Kyiv, 15:00 in Moscow, 07:00 in New York
CHUNK = 5_000  # rows per INSERT executemany

# Where callers call from (flows/regions.yaml), and the language they speak there.
CALLER_REGIONS = {"russia": 45, "occupied": 20, "ukraine": 15, "crimea": 10, "elsewhere": 10}
CALLER_LANGUAGES = {
    "russia": {"ru": 93, "uk": 3, "en": 4},
    "occupied": {"ru": 70, "uk": 28, "en": 2},
    "ukraine": {"uk": 60, "ru": 38, "en": 2},
    "crimea": {"ru": 85, "uk": 13, "en": 2},
    "elsewhere": {"ru": 50, "uk": 20, "en": 30},
}
OPERATOR_LANGUAGES = {"ru": 30, "ru,uk": 40, "en,ru": 10, "en,ru,uk": 12, "uk": 5, "en,uk": 2, "en": 1}
TIMEZONES = {"Europe/Kyiv": 35, "Europe/Moscow": 10, "Europe/Berlin": 15, "Europe/Warsaw": 10,
             "Europe/Riga": 8, "Asia/Tbilisi": 7, "Europe/London": 5, "America/New_York": 5,
             "Asia/Almaty": 5}
HOURS = {"mon-fri 09:00-18:00": 40, "mon-fri 10:00-19:00; sat 10:00-14:00": 15,
         "daily 08:00-22:00": 15, "always": 10, "daily 20:00-08:00": 8, "sat-sun 10:00-18:00": 7,
         "mon-thu 12:00-20:00": 5}
OPEN_MIX = {"routed": 94, "new": 3, "transcribed": 2, "transcription_failed": 1}

K = TypeVar("K")


def pick(rng: random.Random, weights: dict[K, int]) -> K:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def caller(rng: random.Random) -> tuple[str, str]:
    region = pick(rng, CALLER_REGIONS)
    return region, pick(rng, CALLER_LANGUAGES[region])


# --- the data ---------------------------------------------------------------------------------


def operator_rows(n: int, rng: random.Random, at: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(1, n + 1):
        if rng.random() < 0.1:
            regions = set(CALLER_REGIONS)  # covers every region
        else:
            regions = set()
            while len(regions) < rng.choice((1, 1, 2, 2, 3)):
                regions.add(pick(rng, CALLER_REGIONS))
        timezone, hours = pick(rng, TIMEZONES), pick(rng, HOURS)
        parse_hours(hours, timezone)  # as `ivr operators add` would check
        rows.append({
            "id": i, "name": f"bench-operator-{i:05d}",
            # A sealed number needs a data key from the vault; the bench never opens one, so
            # every operator gets a placeholder blob and key id 0 (no key store rows, no vault).
            "number": b"\x00", "data_key_id": 0,
            "languages": pick(rng, OPERATOR_LANGUAGES), "regions": ",".join(sorted(regions)),
            "timezone": timezone, "hours": hours, "capacity": rng.randint(50, 300),
            "on_duty": rng.random() < 0.85, "active": rng.random() < 0.95,
            "role": "supervisor" if rng.random() < 0.03 else "operator",
            "last_assigned_at": (None if rng.random() < 0.1
                                 else at - timedelta(seconds=rng.randint(60, 7 * 86400))),
            "created_at": at - timedelta(days=rng.randint(30, 400)),
        })
    return rows


class Fits:
    """Which operators cover a region and speak a language (disabled and off-duty ones too:
    they keep the cases they had), and how many open cases each holds."""

    def __init__(self, operators: list[dict[str, Any]]) -> None:
        self.by: dict[tuple[str, str], list[int]] = {}
        self.capacity = {op["id"]: op["capacity"] for op in operators}
        self.load: Counter[int] = Counter()
        for op in operators:
            for region in op["regions"].split(","):
                for language in op["languages"].split(","):
                    self.by.setdefault((region, language), []).append(op["id"])

    def take(self, rng: random.Random, region: str, language: str) -> int | None:
        ids = self.by.get((region, language), [])
        for _ in range(5 if ids else 0):
            op_id = rng.choice(ids)
            if self.load[op_id] < self.capacity[op_id]:
                self.load[op_id] += 1
                return op_id
        return None  # nobody fits or all tried were full: routed, unassigned (escalated)


def case_rows(rng: random.Random, fits: Fits, at: datetime, first_id: int, open_: int, closed: int,
              waiting: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Calls, recordings and cases: `open_` open, `closed` closed, `waiting` transcribed ones
    for the bench to assign (the last ids)."""
    calls, recordings, cases = [], [], []
    kinds = ["open"] * open_ + ["closed"] * closed
    rng.shuffle(kinds)
    kinds += ["waiting"] * waiting
    for i, kind in enumerate(kinds, start=first_id):
        region, language = caller(rng)
        created = at - (timedelta(seconds=rng.randint(1, 600)) if kind == "waiting"
                        else timedelta(seconds=rng.randint(600, 45 * 86400)))
        calls.append({"id": i, "call_sid": f"CA{i:032x}", "started_at": created, "flow": "hotline",
                      "flow_version": "bench", "language": language, "region": region})
        recordings.append({"id": i, "recording_sid": f"RE{i:032x}", "call_id": i, "status": "done",
                           "duration": rng.randint(5, 180), "reported_at": created, "stored_at": created,
                           "deleted_at_provider": created, "audio": None, "audio_bytes": None,
                           "attempts": 1})
        status = "transcribed" if kind == "waiting" else "closed" if kind == "closed" else pick(rng, OPEN_MIX)
        row: dict[str, Any] = {
            "id": i, "call_id": i, "recording_id": i, "data_key_id": 0, "status": status,
            "language": language, "region": region, "country": None, "flow": "hotline",
            "step": "voicemail", "created_at": created,
            "transcribed_at": None if status == "new" else created + timedelta(seconds=20),
            "operator_id": None, "assigned_at": None, "routed_at": None, "route_reason": None,
            "closed_at": None, "consent": "none", "callback_status": None, "reoffers": 0,
            "callback_attempts": 0,
        }
        if status in ("routed", "closed"):
            op_id = fits.take(rng, region, language) if status == "routed" else rng.choice(
                fits.by.get((region, language), [None]))
            routed = created + timedelta(seconds=30)
            row.update(operator_id=op_id, assigned_at=routed, routed_at=routed, callback_status="none",
                       route_reason=f"region {region}, language {language} → bench")
            if status == "closed":
                row["closed_at"] = routed + timedelta(hours=rng.randint(1, 72))
        cases.append(row)
    return calls, recordings, cases


def bulk(conn: Connection, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        conn.execute(insert(model), list(rows[start:start + CHUNK]))


def save(db: Database, tables: Sequence[tuple[Any, Sequence[dict[str, Any]]]], vacuum: bool = True) -> None:
    """Bulk-insert rows whose ids are given (model, rows; parents first), in one transaction,
    move each table's id sequence past them, then VACUUM ANALYZE those tables, as autovacuum
    would have done on a database in use (also bench/console.py)."""
    names = [model.__tablename__ for model, _rows in tables]
    with db.engine.begin() as conn:
        for model, rows in tables:
            bulk(conn, model, rows)
        for table in names:  # the ids were given: move on (an empty table keeps its sequence)
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    if vacuum:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {', '.join(names)}"))


def load(db: Database, args: argparse.Namespace, at: datetime) -> list[int]:
    """Fill the database; the ids of the cases waiting for an operator."""
    rng = random.Random(args.seed)
    operators = operator_rows(args.operators, rng, at)
    calls, recordings, cases = case_rows(rng, Fits(operators), at, 1, args.cases, args.closed, args.assign)
    # Each operator keeps the count of their open cases (the rule reads it, ivr/operators.py).
    held = Counter(c["operator_id"] for c in cases if c.get("operator_id") and c["status"] in OPEN_STATUSES)
    for op in operators:
        op["open_cases"] = held.get(op["id"], 0)
    save(db, [(Operator, operators), (Call, calls), (Recording, recordings), (Case, cases)],
         vacuum=not args.no_vacuum)
    return [c["id"] for c in cases[-args.assign:]] if args.assign else []


# --- the figures ------------------------------------------------------------------------------


def ms(seconds: list[float]) -> str:
    if not seconds:
        return "n/a"
    cut = statistics.quantiles(seconds, n=100, method="inclusive") if len(seconds) > 1 else seconds * 99
    return (f"p50 {cut[49] * 1e3:.2f}  p95 {cut[94] * 1e3:.2f}  p99 {cut[98] * 1e3:.2f}  "
            f"max {max(seconds) * 1e3:.2f} ms")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def counts(db: Database, waiting: int) -> None:
    with db.session() as s:
        version = s.execute(text("SHOW server_version")).scalar_one()
        autovacuum = s.execute(text("SHOW autovacuum")).scalar_one()
        ops = s.execute(select(func.count(), func.count().filter(Operator.active.is_(True)),
                               func.count().filter(Operator.active.is_(True), Operator.on_duty.is_(True)))
                        ).one()
        statuses = dict(s.execute(select(Case.status, func.count()).group_by(Case.status)).all())
        calls = s.execute(select(func.count()).select_from(Call)).scalar_one()
        recordings = s.execute(select(func.count()).select_from(Recording)).scalar_one()
    open_ = sum(n for st, n in statuses.items() if st in OPEN_STATUSES)
    print(f"PostgreSQL {version}, autovacuum {autovacuum}"
          + ("" if autovacuum == "on" else " (every assignment leaves heap pages that index-only scans "
                                           "must visit, until a VACUUM)"))
    print(f"operators: {ops[0]} ({ops[1]} active, {ops[2]} of them on duty)")
    print(f"cases: {sum(statuses.values())}, {open_} open ("
          + ", ".join(f"{st} {n}" for st, n in sorted(statuses.items()))
          + f"; {waiting} of the transcribed ones wait for the bench); calls {calls}, "
          f"recordings {recordings}")


class Others:
    """The share of the CPUs other processes used meanwhile: the machine's busy time less this
    process's, the database's backends' and those of the processes `also` (a web server's;
    None when any is out of reach, as on a remote server)."""

    def __init__(self, db: Database, also: Sequence[int] = ()) -> None:
        with db.session() as s:
            self.backends = list(s.scalars(text("SELECT pid FROM pg_stat_activity "
                                                "WHERE datname = current_database()")))
        self.backends += [pid for pid in also if pid not in self.backends]
        self.wall = time.perf_counter()
        self.start = self._sample()

    def _sample(self) -> tuple[float, float] | None:
        busy, table = cpu_busy_seconds(), proc_table()
        if busy is None or not all(pid in table for pid in self.backends):
            return None
        backends = sum(table[pid][1] for pid in self.backends) / os.sysconf("SC_CLK_TCK")
        return busy, time.process_time() + backends

    def share(self) -> float | None:
        end, wall = self._sample(), time.perf_counter() - self.wall
        if self.start is None or end is None or wall <= 0:
            return None
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def run(db: Database, args: argparse.Namespace, at: datetime) -> int:
    t0 = time.perf_counter()
    waiting = load(db, args, at)
    setup = time.perf_counter() - t0
    print(f"setup: {setup:.1f} s (bulk inserts{'' if args.no_vacuum else ', VACUUM ANALYZE'})")
    counts(db, len(waiting))
    with db.session() as s:
        todo = s.execute(select(Case.id, Case.region, Case.language).where(Case.id.in_(waiting))
                         .order_by(Case.id)).all()

    # candidates() alone, for the waiting cases' regions and languages (this warms the pool too)
    sample = todo[: min(len(todo), 500)]
    found: list[int] = []
    alone: list[float] = []
    for _id, region, language in sample:
        started = time.perf_counter()
        found.append(len(candidates(db, region, language)))
        alone.append(time.perf_counter() - started)
    every = [timed(lambda: candidates(db)) for _ in range(20)]
    print(f"candidates(db, region, language) ×{len(alone)}: {ms(alone)}; "
          f"{statistics.mean(found) if found else 0:.0f} operators on average "
          f"(min {min(found, default=0)}, max {max(found, default=0)})")
    print(f"candidates(db), every active operator ×{len(every)}: {ms(every)}")

    profile = cProfile.Profile() if args.profile else None
    took: list[float] = []
    chosen: Counter[bool] = Counter()
    vacuum = None
    if args.vacuum_every:  # a connection of its own, open before `Others` lists the backends
        vacuum = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    vacuumed = 0.0
    others = Others(db)
    started_all = time.perf_counter()
    for n, (case_id, _region, _language) in enumerate(todo, start=1):
        if profile:
            profile.enable()
        started = time.perf_counter()
        choice = assign_case(db, case_id, now=at, actor="bench")
        took.append(time.perf_counter() - started)
        if profile:
            profile.disable()
        chosen[choice.operator_id is not None] += 1
        if vacuum is not None and n % args.vacuum_every == 0:
            started = time.perf_counter()
            vacuum.execute(text("VACUUM cases"))  # not counted: autovacuum's work, done eagerly
            vacuumed += time.perf_counter() - started
    if vacuum is not None:
        vacuum.close()
    wall = time.perf_counter() - started_all - vacuumed
    share = others.share()
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    if not took:
        print("assigned nothing (--assign 0)")
        return 0
    print(f"assign_case ×{len(took)}: {len(took) / wall:.0f} cases/s; {ms(took)}; "
          f"{chosen[True]} to an operator, {chosen[False]} unassigned (escalated)")
    if share is not None:
        print(f"  other processes used {share:.0%} of the CPUs meanwhile"
              + (" (figures are high)" if share > 0.05 else ""))
    tenth = max(1, len(took) // 10)
    print(f"  first {tenth}: p50 {statistics.median(took[:tenth]) * 1e3:.2f} ms; "
          f"last {tenth}: p50 {statistics.median(took[-tenth:]) * 1e3:.2f} ms")
    cut = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else took * 99
    p50, p99 = cut[49] * 1e3, cut[98] * 1e3
    met = p99 < GOAL_MS
    print(f"goal, one assignment under {GOAL_MS:.0f} ms: p50 {p50:.2f} ms "
          f"{'under' if p50 < GOAL_MS else 'OVER'}, p99 {p99:.2f} ms {'under' if met else 'OVER'}: "
          f"{'met' if met else 'NOT met'}")
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--operators", type=int, default=1_000, help="operators (about 5%% disabled)")
    p.add_argument("--cases", type=int, default=100_000, help="open cases, most routed to an operator")
    p.add_argument("--closed", type=int, default=25_000, help="closed cases (they must not count)")
    p.add_argument("--assign", type=int, default=2_000, help="transcribed cases to assign, one by one")
    p.add_argument("--postgres", metavar="URL", default=None,
                   help=f"the PostgreSQL server's admin URL to make a throw-away database on "
                        f"(IVR_TEST_POSTGRES, else {ADMIN_URL})")
    p.add_argument("--at", default=WEDNESDAY_NOON, help="the clock for duty hours (ISO 8601)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    p.add_argument("--no-vacuum", action="store_true", help="skip VACUUM ANALYZE after the bulk load")
    p.add_argument("--vacuum-every", type=int, default=0, metavar="N",
                   help="VACUUM cases after every N assignments, untimed (as an eager autovacuum would)")
    p.add_argument("--profile", action="store_true", help="cProfile the assignments (slower)")
    args = p.parse_args(argv)
    if args.operators < 1 or min(args.cases, args.closed, args.assign, args.vacuum_every) < 0:
        p.error("--operators must be at least 1; --cases, --closed, --assign and --vacuum-every "
                "not negative")
    at = datetime.fromisoformat(args.at)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    admin = args.postgres or os.environ.get("IVR_TEST_POSTGRES") or ADMIN_URL

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(admin))
        keys = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ivr-routing-")))
        upgrade(url, f"sqlite:///{keys / 'keys.db'}")
        db = Database(url)
        stack.callback(lambda: db.engine.dispose())  # before the database is dropped
        return run(db, args, at)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; the database was dropped", file=sys.stderr)
        sys.exit(130)
