"""The operator console's queue and case pages with 100,000 open cases in PostgreSQL.

    .venv/bin/python bench/console.py [--requests 200] [--cases 100000] [--in-process]

One run: a throw-away PostgreSQL database (`--postgres URL`, the admin URL of the server;
dropped at the end, on errors and on Ctrl-C too) and a throw-away SQLite key store, both
brought to the newest schema with `ivr.storage.upgrade`. It fills them with bench/routing.py's
generator (operators, open and closed cases, calls, recordings) and gives every case what the
case page shows: its own data key, a sealed transcript and number, five audit rows, notes and
callback attempts on some, the caller's consent; then VACUUM ANALYZE. Two users sign in
through the console's real forms (password, then a TOTP code): an operator of three regions
and a supervisor, who sees every case. Each asks for the queue (`/console/`), the queue
filtered (`?region=crimea&language=ru`), every case (`?show=all`) and the pages of random
cases they may see, `--requests` times each (default 200, interleaved, after `--warmup`
untimed ones), and the bench prints p50, p95, p99 and max per user and page. The goal (issue):
p95 under 100 ms for the queue page and for the case page; the last line says whether it is
met, and the exit status is 1 when it is not.

By default the app runs as deployed, `gunicorn -c python:ivr.serving 'ivr:create_app()'`
with `--workers` sync workers on a loopback port, and each request is timed in the bench
from sending it to reading the whole answer. `--in-process` uses Flask's test client
instead: the app's own time, without HTTP and the network. `--profile` (in-process) prints
cProfile's top functions per kind of page; `--explain` (in-process) runs EXPLAIN ANALYZE on
every query one request of each kind makes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import html
import io
import os
import pstats
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ivr and bench, when run as `python bench/console.py`
    sys.path.insert(0, str(ROOT))

import pyotp  # noqa: E402
import requests  # noqa: E402
from sqlalchemy import event, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from bench.pipeline import postgres_database  # noqa: E402
from bench.routing import (  # noqa: E402
    ADMIN_URL,
    CALLER_REGIONS,
    CHUNK,
    Fits,
    Others,
    case_rows,
    operator_rows,
    pick,
    save,
)
from bench.webhooks import Server  # noqa: E402
from ivr.config import Settings  # noqa: E402
from ivr.console.auth import set_password  # noqa: E402
from ivr.console.views import OUTCOMES  # noqa: E402
from ivr.jobs import keyring_for  # noqa: E402
from ivr.keys import Keyring, number_hash, seal  # noqa: E402
from ivr.operators import OPEN_STATUSES, recount  # noqa: E402
from ivr.storage import (  # noqa: E402
    AuditEntry,
    Call,
    CallbackAttempt,
    Case,
    Database,
    DataKey,
    Note,
    Operator,
    Recording,
    Vault,
    upgrade,
    utcnow,
)

GOAL_MS = 100.0
PASSWORD = "bench console password"
TEST_KEYS = "bench-key-1:" + "C" * 43  # a master key for this run only (as tests/conftest.py)
OPERATOR_REGIONS = ("crimea", "elsewhere", "ukraine")  # 35% of the callers
AUDIO_BYTES_PER_SECOND = 16_000  # Twilio's recordings: 8 kHz, 16-bit mono WAV
PAGES = {  # name -> path (the case page's id is filled in per request)
    "queue": "/console/",
    "queue crimea ru": "/console/?region=crimea&language=ru",
    "queue show=all": "/console/?show=all",
    "case": "/console/cases/{id}",
}

# What callers say, a few sentences of each (no quotes: the page escapes them, the check does not).
PHRASES = {
    "ru": ["Здравствуйте, я звоню по поводу мобилизации.", "Моему мужу пришла повестка, он не хочет воевать.",
           "Перезвоните мне, пожалуйста, вечером после семи по местному времени.",
           "Я нахожусь сейчас на территории, связь плохая, могу говорить только днём.",
           "Нас здесь несколько человек, все хотят узнать, как это сделать безопасно.",
           "Мой сын в части под Белгородом, телефон у него забирают.",
           "Скажите, пожалуйста, что нужно подготовить и куда идти.",
           "Я боюсь, что этот звонок прослушивают.", "Спасибо, я ещё позвоню.",
           "Номер телефона я оставлю, звонить можно в любое время."],
    "uk": ["Добрий день, я телефоную щодо свого брата.", "Він зараз у Криму, звʼязок дуже поганий.",
           "Передзвоніть, будь ласка, після шостої вечора.", "Я не можу довго говорити.",
           "Хочу дізнатися, як це працює і що потрібно зробити.", "Дякую, що ви є."],
    "en": ["Hello, I am calling about my cousin who was mobilised last month.",
           "Please call me back in the evening, any time after six.",
           "I do not speak Russian well, so English please.", "I want to know what the next steps are.",
           "Thank you for listening."],
}
COUNTRY = {"russia": ("RU", "+7916"), "occupied": ("UA", "+7949"), "crimea": ("UA", "+7978"),
           "ukraine": ("UA", "+38050"), "elsewhere": ("DE", "+49151")}
TIMEZONE = {"russia": "Europe/Moscow", "occupied": "Europe/Moscow", "crimea": "Europe/Simferopol",
            "ukraine": "Europe/Kyiv", "elsewhere": "Europe/Berlin"}
CONSENT = {"any": 45, "day": 35, "none": 20}
CALLBACK = {"waiting": 45, "scheduled": 10, "answered": 35, "gave_up": 10}  # with consent, assigned
ATTEMPTS = {"waiting": (0, 0), "scheduled": (1, 2), "answered": (1, 2), "gave_up": (4, 4)}
# Set here on some cases only; every row gets them all (an INSERT's columns are the first row's).
CASE_FIELDS = ("number", "caller_hash", "transcript", "transcript_engine", "status_reason", "acted_at",
               "notified_at", "offered_to", "outcome", "next_callback_at", "caller_tz")


# --- the data ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """Who signs in, and what the bench expects to see."""

    operator_id: int
    supervisor_id: int
    secrets: dict[int, str] = field(default_factory=dict)
    sample: dict[int, list[int]] = field(default_factory=dict)  # user -> cases to open
    words: dict[int, str] = field(default_factory=dict)  # case opened -> its transcript
    visible: dict[int, tuple[int, int]] = field(default_factory=dict)  # user -> (all, open)
    counts: dict[str, int] = field(default_factory=dict)
    audio_bytes: list[int] = field(default_factory=list)


def transcript(rng: random.Random, language: str) -> str:
    phrases = PHRASES.get(language, PHRASES["ru"])
    return " ".join(rng.choice(phrases) for _ in range(rng.randint(2, 10)))


def enrich(rng: random.Random, keyring: Keyring, at: datetime, cases: list[dict[str, Any]],
           recordings: list[dict[str, Any]], bench: Bench, audio: bool) -> dict[str, list[dict[str, Any]]]:
    """Give every case what the case page shows. Each case gets a data key of its own, made and
    wrapped here in bulk (as `Vault.new_key` would one by one, without 125,000 commits), and its
    number, transcript, notes and audio are sealed under it as `Vault.seal` seals them."""
    keys: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    hash_key = os.urandom(32)
    callers: list[str] = []
    opened = {case_id for ids in bench.sample.values() for case_id in ids}
    for row, rec in zip(cases, recordings, strict=True):
        case_id, region, language, status = row["id"], row["region"], row["language"], row["status"]
        row.update(dict.fromkeys(CASE_FIELDS))
        plain = os.urandom(32)
        wrapped, master_id = keyring.wrap(plain)
        keys.append({"id": case_id, "purpose": "case", "wrapped": wrapped, "master_id": master_id,
                     "created_at": row["created_at"]})
        row["data_key_id"] = case_id
        country, prefix = COUNTRY[region]
        if rng.random() < 0.05:
            number = None  # withheld: no number, no callback
        elif callers and rng.random() < 0.08:
            number = rng.choice(callers)  # a repeat caller
        else:
            number = f"{prefix}{rng.randrange(10 ** 6, 10 ** 7)}"
            callers.append(number)
        consent = pick(rng, CONSENT) if number else "none"
        row.update(country=country, caller_tz=TIMEZONE[region], consent=consent,
                   number=seal(plain, number.encode(), f"case:{case_id}:number") if number else None,
                   caller_hash=number_hash(hash_key, number) if number else None)
        if status == "transcription_failed":
            row["status_reason"] = f"no model for {language}"
        elif status != "new":
            words = transcript(rng, language)
            row.update(transcript=seal(plain, words.encode(), f"case:{case_id}:transcript"),
                       transcript_engine="vosk-model-small-ru" if language != "en" else "whisper-tiny-en")
            if case_id in opened:
                bench.words[case_id] = words
        if audio and case_id in opened:
            # Only the cases the bench opens hold audio (their real length): the case page
            # reads the opened case's recording, and 125,000 of them would take ~150 GB.
            wav = os.urandom(rec["duration"] * AUDIO_BYTES_PER_SECOND)
            rec.update(audio=seal(plain, wav, f"case:{case_id}:audio"), audio_bytes=len(wav))
            bench.audio_bytes.append(len(wav))
        op_id = row["operator_id"]
        created = row["created_at"]
        events = [(created, "system", "case-created", None),
                  (created + timedelta(seconds=1), "caller", "consent", consent)]
        if op_id is not None:
            assigned = row["assigned_at"]
            row.update(notified_at=assigned + timedelta(seconds=5), offered_to=str(op_id))
            events.append((assigned, "system", "assigned", f"to operator {op_id}"))
            acted = assigned + timedelta(minutes=rng.randint(1, 600))
            if status == "closed" or (acted < at and rng.random() < 0.7):
                row["acted_at"] = min(acted, row["closed_at"] or acted)
                events.append((row["acted_at"], f"operator:{op_id}", "transcript-read", None))
                if rng.random() < 0.25:
                    for n in range(rng.randint(1, 2)):
                        note_id = len(notes) + 1
                        said = f"Called back, {rng.choice(('no answer', 'will call again', 'talked'))}."
                        notes.append({"id": note_id, "case_id": case_id, "operator_id": op_id,
                                      "at": row["acted_at"] + timedelta(minutes=n),
                                      "text": seal(plain, said.encode(), f"case:{case_id}:note:{note_id}")})
                if status == "closed" or rng.random() < 0.3:
                    row["outcome"] = rng.choice(OUTCOMES)
            if consent != "none":
                state = pick(rng, CALLBACK)
                if status == "closed" and state in ("waiting", "scheduled"):
                    state = "answered"
                low, high = ATTEMPTS[state]
                tries = rng.randint(low, high)
                start = row.get("acted_at") or assigned + timedelta(minutes=10)
                for n in range(tries):
                    begun = start + timedelta(minutes=15 * n)
                    last = n == tries - 1
                    outcome = ("answered" if state == "answered" and last
                               else rng.choice(("no-answer", "busy", "operator-no-answer")))
                    attempts.append({"id": len(attempts) + 1, "case_id": case_id, "operator_id": op_id,
                                     "call_sid": f"CA{len(attempts) + 1:032x}"[::-1], "started_at": begun,
                                     "confirmed_at": begun + timedelta(seconds=20),
                                     "ended_at": begun + timedelta(seconds=90), "outcome": outcome,
                                     "seconds": rng.randint(60, 900) if outcome == "answered" else None})
                    events.append((begun, f"operator:{op_id}", "callback-started", None))
                row.update(callback_status=state, callback_attempts=tries,
                           next_callback_at=(at + timedelta(minutes=rng.randint(5, 240))
                                             if state == "scheduled" else None))
            if status == "closed":
                events.append((row["closed_at"], f"operator:{op_id}", "closed", None))
        # five audit rows a case: fill up with reads by its operator (or a supervisor)
        reader = f"operator:{op_id}" if op_id is not None else "operator:1"
        while len(events) < 5:
            events.append((created + timedelta(hours=len(events)), reader, "transcript-read", None))
        audit += [{"at": when, "actor": actor, "action": action, "case_id": case_id, "detail": detail}
                  for when, actor, action, detail in events[:5]]
    for n, row in enumerate(audit, start=1):
        row["id"] = n
    return {"keys": keys, "audit": audit, "attempts": attempts, "notes": notes}


def load(db: Database, keys_db: Database, keyring: Keyring, args: argparse.Namespace,
         at: datetime) -> Bench:
    rng = random.Random(args.seed)
    operators = operator_rows(args.operators, rng, at)
    total = args.cases + args.closed
    people = (("bench-operator", ",".join(OPERATOR_REGIONS), "operator"),
              ("bench-supervisor", ",".join(sorted(CALLER_REGIONS)), "supervisor"))
    for n, (name, regions, role) in enumerate(people, start=1):
        # Like any other operator (they hold cases), but on duty and with a data key of their own.
        operators.append({**operators[-1], "id": args.operators + n, "name": name, "regions": regions,
                          "languages": "en,ru,uk", "role": role, "capacity": 300, "on_duty": True,
                          "active": True, "data_key_id": total + n})
    bench = Bench(args.operators + 1, args.operators + 2)
    calls, recordings, cases = case_rows(rng, Fits(operators), at, 1, args.cases, args.closed, 0)
    sees: tuple[tuple[int, set[str] | None], ...] = ((bench.operator_id, set(OPERATOR_REGIONS)),
                                                     (bench.supervisor_id, None))
    for user_id, covered in sees:
        seen = [c for c in cases
                if covered is None or c["region"] in covered or c["operator_id"] == user_id]
        bench.visible[user_id] = (len(seen), sum(c["status"] in OPEN_STATUSES for c in seen))
        bench.sample[user_id] = [c["id"] for c in rng.sample(seen, min(args.requests, len(seen)))]
    more = enrich(rng, keyring, at, cases, recordings, bench, not args.no_audio)
    for n in (1, 2):  # the bench users' keys, for their TOTP secrets
        plain = os.urandom(32)
        wrapped, master_id = keyring.wrap(plain)
        more["keys"].append({"id": total + n, "purpose": "case", "wrapped": wrapped, "master_id": master_id,
                             "created_at": at})
    with keys_db.engine.begin() as conn:
        for start in range(0, len(more["keys"]), CHUNK):
            conn.execute(insert(DataKey), more["keys"][start:start + CHUNK])
    save(db, [(Operator, operators), (Call, calls), (Recording, recordings), (Case, cases),
              (AuditEntry, more["audit"]), (CallbackAttempt, more["attempts"]), (Note, more["notes"])],
         vacuum=False)
    recount(db)  # each operator's open cases, as the hourly recount keeps them
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    bench.counts = {"data keys": len(more["keys"]), "audit rows": len(more["audit"]),
                    "callback attempts": len(more["attempts"]), "notes": len(more["notes"])}
    return bench


def enroll(db: Database, vault: Vault, bench: Bench) -> None:
    """A password and a TOTP secret for each bench user (as an admin and the enroll page would)."""
    for op_id in (bench.operator_id, bench.supervisor_id):
        set_password(db, op_id, PASSWORD)
        secret = pyotp.random_base32()
        with db.session() as s:
            op = s.get(Operator, op_id)
            assert op is not None
            op.totp_secret, op.totp_enrolled_at = vault.seal_operator_secret(op, secret), utcnow()
        bench.secrets[op_id] = secret


def describe(db: Database, bench: Bench) -> None:
    with db.session() as s:
        version = s.execute(text("SHOW server_version")).scalar_one()
        autovacuum = s.execute(text("SHOW autovacuum")).scalar_one()
        statuses = dict(s.execute(select(Case.status, func.count()).group_by(Case.status)).all())
        operators = s.execute(select(func.count()).select_from(Operator)).scalar_one()
        size = s.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar_one()
    open_ = sum(n for st, n in statuses.items() if st in OPEN_STATUSES)
    print(f"PostgreSQL {version}, autovacuum {autovacuum}; database {size}")
    print(f"operators: {operators}; cases: {sum(statuses.values())}, {open_} open ("
          + ", ".join(f"{st} {n}" for st, n in sorted(statuses.items())) + "), each with its call "
          "and recording")
    audio = (f"; {len(bench.audio_bytes)} recordings hold audio (the cases opened), "
             f"{statistics.mean(bench.audio_bytes) / 1e6:.2f} MB on average") if bench.audio_bytes else ""
    print(", ".join(f"{name} {n}" for name, n in bench.counts.items()) + " (key store: SQLite)" + audio)
    for user_id, who in ((bench.operator_id, f"operator of {', '.join(OPERATOR_REGIONS)}"),
                         (bench.supervisor_id, "supervisor")):
        seen, open_seen = bench.visible[user_id]
        print(f"  {who} sees {seen} cases, {open_seen} of them open")


# --- the browsers -------------------------------------------------------------------------------


class Browser(Protocol):
    def get(self, path: str) -> tuple[int, str]: ...

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        """Status and Location."""
        ...


class HttpBrowser:
    """A browser over HTTP: cookies kept, redirects not followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def get(self, path: str) -> tuple[int, str]:
        r = self.session.get(self.base + path, allow_redirects=False, timeout=30)
        return r.status_code, r.text

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        r = self.session.post(self.base + path, data=data, allow_redirects=False, timeout=30)
        return r.status_code, r.headers.get("Location", "")


class FlaskBrowser:
    """Flask's test client: the app's own time, no HTTP."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()

    def get(self, path: str) -> tuple[int, str]:
        r = self.client.get(path)
        return r.status_code, r.get_data(as_text=True)

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        r = self.client.post(path, data=data)
        return r.status_code, r.headers.get("Location", "")


def token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if not found:
        raise SystemExit(f"bench: no CSRF token in the page:\n{page[:500]}")
    return found.group(1)


def sign_in(browser: Browser, name: str, secret: str) -> None:
    """Through the real forms: the name and password, then the code from the authenticator."""
    _status, page = browser.get("/console/login")
    status, where = browser.post("/console/login", {"name": name, "password": PASSWORD,
                                                    "csrf_token": token(page)})
    if status != 302 or not where.endswith("/console/login/code"):
        raise SystemExit(f"bench: {name}: the password was not accepted ({status} {where})")
    _status, page = browser.get("/console/login/code")
    status, where = browser.post("/console/login/code", {"code": pyotp.TOTP(secret).now(),
                                                         "csrf_token": token(page)})
    if status != 302 or not where.endswith("/console/"):
        raise SystemExit(f"bench: {name}: the code was not accepted ({status} {where})")


# --- the figures --------------------------------------------------------------------------------


def cuts(seconds: list[float]) -> tuple[float, float, float, float]:
    """p50, p95, p99 and max, in ms."""
    cut = statistics.quantiles(seconds, n=100, method="inclusive") if len(seconds) > 1 else seconds * 99
    return cut[49] * 1e3, cut[94] * 1e3, cut[98] * 1e3, max(seconds) * 1e3


@dataclass
class Timings:
    took: dict[str, list[float]] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)


def check(kind: str, case_id: int | None, status: int, page: str, bench: Bench) -> int:
    """The rows of a queue page; a case page must show the case's transcript."""
    if status != 200:
        raise SystemExit(f"bench: {kind} {case_id or ''} answered {status}:\n{page[:500]}")
    if case_id is not None:
        words = bench.words.get(case_id)
        if words is not None and html.escape(words[:40], quote=False) not in page:
            raise SystemExit(f"bench: case {case_id}: its transcript is not on the page")
        return 1
    return page.count('href="/console/cases/')


def drive(browsers: dict[int, Browser], bench: Bench, requests_: int, warmup: int,
          profiles: dict[str, cProfile.Profile] | None = None) -> dict[int, Timings]:
    """Each user's pages, interleaved: every kind once, `requests_` times over."""
    results = {user_id: Timings() for user_id in browsers}
    for user_id, browser in browsers.items():
        timings = results[user_id]
        sample = bench.sample[user_id]
        for n in range(-warmup, requests_):
            for kind, path in PAGES.items():
                case_id = sample[n % len(sample)] if kind == "case" else None
                url = path.format(id=case_id)
                profile = (profiles.setdefault(kind.split()[0], cProfile.Profile())
                           if profiles is not None else None)
                if profile is not None and n >= 0:
                    profile.enable()
                started = time.perf_counter()
                status, page = browser.get(url)
                took = time.perf_counter() - started
                if profile is not None and n >= 0:
                    profile.disable()
                rows = check(kind, case_id, status, page, bench)
                if n >= 0:
                    timings.took.setdefault(kind, []).append(took)
                    timings.rows.setdefault(kind, []).append(rows)
                    timings.sizes.setdefault(kind, []).append(len(page.encode()))
    return results


def report(results: dict[int, Timings], bench: Bench) -> bool:
    names = {bench.operator_id: "operator", bench.supervisor_id: "supervisor"}
    print(f"{'user':<11} {'page':<17} {'N':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  rows   KB")
    worst: dict[str, tuple[float, str]] = {}
    for user_id, timings in results.items():
        for kind, took in timings.took.items():
            p50, p95, p99, top = cuts(took)
            rows = statistics.mean(timings.rows[kind])
            size = statistics.mean(timings.sizes[kind]) / 1024
            print(f"{names[user_id]:<11} {kind:<17} {len(took):>4} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
                  f"{top:>8.1f}  {rows:>4.0f} {size:>4.0f}")
            page = "case page" if kind == "case" else "queue page"
            if p95 > worst.get(page, (-1.0, ""))[0]:
                worst[page] = (p95, f"{names[user_id]}, {kind}")
    print("(ms; rows: cases listed on a queue page; KB: the HTML)")
    met = all(p95 < GOAL_MS for p95, _ in worst.values())
    print(f"goal, p95 under {GOAL_MS:.0f} ms: " + "; ".join(
        f"{page} {'under' if p95 < GOAL_MS else 'OVER'} (worst p95 {p95:.1f} ms: {where})"
        for page, (p95, where) in worst.items()) + f": {'met' if met else 'NOT met'}")
    return met


# --- where the time goes (in-process) --------------------------------------------------------------


def explain(app: Any, bench: Bench) -> None:
    """EXPLAIN ANALYZE every SELECT that one request of each kind makes, for each user. It
    neither detoasts nor sends what it reads: a recording's audio looks free here, not in time."""
    db: Database = app.extensions["ivr.db"]
    seen: list[tuple[str, Any]] = []

    def capture(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "pg_" not in statement:
            seen.append((statement, parameters))

    for user_id in (bench.operator_id, bench.supervisor_id):
        browser = FlaskBrowser(app)
        sign_in(browser, f"bench-{'operator' if user_id == bench.operator_id else 'supervisor'}",
                bench.secrets[user_id])
        for kind, path in PAGES.items():
            case_id = bench.sample[user_id][0] if kind == "case" else None
            browser.get(path.format(id=case_id))  # warm
            seen.clear()
            event.listen(db.engine, "before_cursor_execute", capture)
            try:
                browser.get(path.format(id=case_id))
            finally:
                event.remove(db.engine, "before_cursor_execute", capture)
            print(f"\n=== user {user_id}, {kind}: {len(seen)} queries")
            with db.engine.connect() as conn:
                for statement, parameters in seen:
                    plan = [r[0] for r in conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)]
                    total = next((line for line in plan if line.startswith("Execution Time")), "")
                    print(f"--- {total}: {' '.join(statement.split())[:160]}")
                    if "Execution Time" in total and float(total.split()[2]) >= 1.0:
                        print("\n".join(plan))


def print_profiles(profiles: dict[str, cProfile.Profile], top: int = 30) -> None:
    for kind, profile in profiles.items():
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
        print(f"\n=== cProfile, {kind} pages (cumulative)\n{out.getvalue()}")


# --- the run ----------------------------------------------------------------------------------------


def settings_for(url: str, tmp: Path, base: str, log_level: str) -> Settings:
    return Settings(
        twilio_account_sid="AC" + "b" * 32, twilio_auth_token="bench-" + secrets.token_hex(16),
        public_base_url=base, database_url=url, keystore_url=f"sqlite:///{tmp / 'keys.db'}",
        redis_url="redis://127.0.0.1:1/0",  # none: sign-in throttling falls back to the database
        flows_dir=ROOT / "flows", instance_dir=tmp / "instance", hotline_number="+15005550006",
        data_keys=TEST_KEYS, outbox_flush_seconds=0, log_level=log_level,
        console_secret_key=secrets.token_urlsafe(48))


def server_env(settings: Settings, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}
    env.update(IVR_ENV="development", IVR_DOTENV=str(tmp / "no.env"),
               TWILIO_ACCOUNT_SID=settings.twilio_account_sid,
               TWILIO_AUTH_TOKEN=settings.twilio_auth_token, PUBLIC_BASE_URL=settings.public_base_url,
               DATABASE_URL=settings.database_url, KEYSTORE_URL=settings.keystore_url,
               REDIS_URL=settings.redis_url, FLOWS_DIR=str(settings.flows_dir),
               INSTANCE_DIR=str(settings.instance_dir), HOTLINE_NUMBER=settings.hotline_number,
               IVR_DATA_KEYS=settings.data_keys, OUTBOX_FLUSH_SECONDS="0", LOG_LEVEL=settings.log_level,
               CONSOLE_SECRET_KEY=settings.console_secret_key)
    return env


@contextlib.contextmanager
def gunicorn(settings: Settings, tmp: Path, workers: int) -> Iterator[Server]:
    """`gunicorn -c python:ivr.serving 'ivr:create_app()'` on a free loopback port, until ready."""
    server = Server("console", "ivr:create_app()", workers, server_env(settings, tmp), tmp)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.proc.poll() is not None:
                raise SystemExit(f"bench: gunicorn exited ({server.proc.returncode}):\n{server.tail()}")
            try:
                if requests.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: gunicorn did not start:\n{server.tail()}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def run(url: str, tmp: Path, args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from ivr import create_app

    at = datetime.now(UTC).replace(microsecond=0)  # the app's clock is the real one (gunicorn)
    in_process = args.in_process or args.profile or args.explain
    server: Server | None = None
    # http: plain cookies named `console` (https would make them Secure, which no client sends
    # over plain http); nothing else in the console reads the base URL.
    settings = settings_for(url, tmp, "http://127.0.0.1", args.log_level)
    upgrade(url, settings.keystore_url)
    db, keys_db = Database(url), Database(settings.keystore_url)
    stack.callback(db.engine.dispose)  # before the database is dropped
    stack.callback(keys_db.engine.dispose)
    started = time.perf_counter()
    bench = load(db, keys_db, keyring_for(settings), args, at)
    enroll(db, Vault(keyring_for(settings), keys_db, settings.epoch_dir), bench)
    print(f"setup: {time.perf_counter() - started:.1f} s (generating and sealing, bulk inserts, "
          "VACUUM ANALYZE)")
    describe(db, bench)
    app = None
    if in_process:
        app = create_app(settings)
        stack.callback(app.extensions["ivr.db"].engine.dispose)
        stack.callback(app.extensions["ivr.vault"].keys.engine.dispose)
        print("in-process: Flask's test client, the app's own time (no HTTP, no network)")
        if args.explain:
            explain(app, bench)
            return 0
        make: Callable[[], Browser] = lambda: FlaskBrowser(app)  # noqa: E731
    else:
        server = stack.enter_context(gunicorn(settings, tmp, args.workers))
        print(f"over HTTP: gunicorn -c python:ivr.serving, {args.workers} sync workers on {server.url}; "
              "each request timed from sending it to reading the whole answer")
        base = server.url
        make = lambda: HttpBrowser(base)  # noqa: E731
    browsers: dict[int, Browser] = {}
    for user_id, name in ((bench.operator_id, "bench-operator"), (bench.supervisor_id, "bench-supervisor")):
        browsers[user_id] = make()
        sign_in(browsers[user_id], name, bench.secrets[user_id])
    # warm every worker and connection first, then count other processes' CPU from there
    drive(browsers, bench, 0, args.warmup)
    others = Others(db, also=list(server.ticks() or {}) if server else [])
    profiles: dict[str, cProfile.Profile] | None = {} if args.profile else None
    results = drive(browsers, bench, args.requests, 0, profiles)
    share = others.share()
    if profiles:
        print_profiles(profiles)
    met = report(results, bench)
    if share is not None:
        print(f"other processes used {share:.0%} of the CPUs meanwhile"
              + (" (figures are high)" if share > 0.05 else ""))
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=200, help="timed requests per user and page")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests per user and page first")
    p.add_argument("--operators", type=int, default=1_000, help="operators besides the two bench users")
    p.add_argument("--cases", type=int, default=100_000, help="open cases, most routed to an operator")
    p.add_argument("--closed", type=int, default=25_000, help="closed cases")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    p.add_argument("--in-process", action="store_true", help="Flask's test client instead of HTTP")
    p.add_argument("--profile", action="store_true", help="cProfile per kind of page (in-process)")
    p.add_argument("--explain", action="store_true",
                   help="EXPLAIN ANALYZE the queries of one request of each kind, then stop (in-process)")
    p.add_argument("--no-audio", action="store_true", help="no recording holds audio")
    p.add_argument("--log-level", default="INFO", help="the app's LOG_LEVEL (INFO as deployed)")
    p.add_argument("--postgres", metavar="URL", default=None,
                   help=f"the PostgreSQL server's admin URL to make a throw-away database on "
                        f"(IVR_TEST_POSTGRES, else {ADMIN_URL})")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    args = p.parse_args(argv)
    if min(args.requests, args.operators, args.cases + args.closed, args.workers) < 1 or args.warmup < 0:
        p.error("--requests, --operators, --workers and the cases must be at least 1")
    admin = args.postgres or os.environ.get("IVR_TEST_POSTGRES") or ADMIN_URL

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(admin))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ivr-console-")))
        return run(url, tmp, args, stack)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; the database was dropped", file=sys.stderr)
        sys.exit(130)
