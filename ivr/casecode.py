"""Case codes and PINs: how a caller finds their case again from any phone, and why guessing fails.

A case code is 12 random digits, made while the caller is still on the line (when the message
is filed) and said to them once; only HMAC(case-code key, code) is kept, on the case, so the
code finds the case with one indexed read and is never stored, logged or put in a URL. The
PIN (4-8 digits, chosen by the caller, entered twice) is kept as an argon2 hash, checked only
after a code matched, so a call without a code costs no slow hash. No PIN: no code hash either,
and the case cannot be reached by phone at all.

The case-code key is a data key of its own purpose in the key store: the number-hash key is
renewed at every purge, which would make every live code unfindable.

Guessing: PIN_TRIES wrong PINs in a row lock the case's line for LOCK, each further PIN_TRIES
for twice as long (until a right PIN); wrong codes from all
calls are counted (their times only) over WINDOW: past SLOW_AFTER every code entry waits
SLOW_SECONDS before its answer and the supervisors are told (an SMS job and the console), past
STOP_AFTER code entry is refused ("please call later"). The arithmetic is in the README.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ivr.probes import code_accepted
from ivr.storage import Call, Case, CodeEntry, CodeMiss, Database, DataKey, OutboxJob, Vault, utcnow

log = logging.getLogger(__name__)

CODE_DIGITS = 12
PIN_MIN, PIN_MAX = 4, 8
PIN_TRIES = 3  # wrong PINs in a row before the case's line locks
LOCK = timedelta(hours=1)
ENTRY = timedelta(minutes=15)  # a CodeEntry older than this is ignored
WINDOW = timedelta(minutes=10)  # wrong codes from all calls are counted over this
SLOW_AFTER = 20  # wrong codes in WINDOW: every code entry then waits SLOW_SECONDS
SLOW_SECONDS = 15
STOP_AFTER = 200  # wrong codes in WINDOW: code entry refused until they age out
ALARM_EVERY = timedelta(hours=1)  # the supervisors are told at most this often
CODE_BURST = "code_burst"  # the outbox job that tells the supervisors
KEY_PURPOSE = "case-code"

_hasher = PasswordHasher()  # argon2id, as for console passwords (ivr/console/auth.py)


def new_code() -> str:
    """12 digits from the system's CSPRNG (leading zeros kept: every digit is said)."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def code_key(vault: Vault) -> bytes:
    """The case-code key: made on first use, never renewed by a purge."""
    with vault.keys.session() as k:
        key_id = k.scalars(select(DataKey.id).where(DataKey.purpose == KEY_PURPOSE,
                                                    DataKey.wrapped.is_not(None))
                           .order_by(DataKey.id)).first()
    if key_id is None:
        key_id = vault.new_key(KEY_PURPOSE)
    return vault.key_of(key_id)


def code_hash(key: bytes, code: str) -> str:
    return hmac.new(key, code.encode(), hashlib.sha256).hexdigest()


def lock_after(failures: int) -> timedelta:
    """How long the line locks after this many wrong PINs in a row: LOCK after the first
    PIN_TRIES, doubled after each further PIN_TRIES (capped at 2**10 LOCK), so that over a year
    a guesser gets about 50 PINs, not 26,000."""
    return LOCK * (1 << max(0, min(failures // PIN_TRIES - 1, 10)))


def valid_pin(digits: str) -> bool:
    return digits.isdigit() and PIN_MIN <= len(digits) <= PIN_MAX


@dataclass(frozen=True, slots=True)
class Found:
    """A code entry's outcome: found (the PIN comes next), wrong, locked or refused (burst);
    `slow`: the hotline is under a burst of wrong codes, answer after a wait."""

    outcome: str  # found | wrong | locked | busy
    slow: bool = False


@dataclass(frozen=True, slots=True)
class PinCheck:
    outcome: str  # right | wrong | locked | gone
    language: str | None = None  # the case's, when right


class Codes:
    """The case-code desk: issue a code, choose a PIN, find a case by code and PIN."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self.db, self.vault = db, vault
        self._key: bytes | None = None  # the case-code key, read once (it is never renewed)

    def key(self) -> bytes:
        if self._key is None:
            self._key = code_key(self.vault)
        return self._key

    # --- a new case ----------------------------------------------------------------------
    def issue(self, call_sid: str) -> str | None:
        """A fresh code for the newest case of this call (None without one: the message went to
        the spool). A code issued before for it is replaced: Twilio asked again, so the caller
        did not hear the first one. The call is linked to the case for the PIN that follows."""
        key = self.key()
        with self.db.session() as s:
            case = s.scalars(select(Case).join(Call, Call.id == Case.call_id)
                             .where(Call.call_sid == call_sid).order_by(Case.id.desc())).first()
            if case is None or case.purged_at is not None:
                return None
            code = new_code()
            case.code_hash, case.pin_hash = code_hash(key, code), None
            case.pin_failures, case.code_locked_until = 0, None
            s.execute(delete(CodeEntry).where(CodeEntry.call_sid == call_sid))
            s.add(CodeEntry(call_sid=call_sid, case_id=case.id, purpose="choose"))
        log.debug("case %s: a case code was said to the caller", case.id)
        return code

    def choose_pin(self, call_sid: str, digits: str, second: bool) -> str:
        """The caller's PIN, first or second entry: `again` (say it again), `set`, `mismatch`
        (the two differ: start over), `invalid` (not 4-8 digits), `skipped` (no PIN: the code
        is dropped, the case is reachable by nobody), `gone` (no code waits for a PIN)."""
        with self.db.session() as s:
            entry = self._entry(s, call_sid, "choose")
            if entry is None:
                return "gone"
            case = s.get(Case, entry.case_id)
            assert case is not None
            if not digits:
                case.code_hash = case.pin_hash = None
                s.delete(entry)
                log.debug("case %s: no PIN chosen; the case code was dropped", case.id)
                return "skipped"
            if not valid_pin(digits):
                entry.first_pin = None
                return "invalid"
            if not second or entry.first_pin is None:
                entry.first_pin = _hasher.hash(digits)
                return "again"
            if not _verify(entry.first_pin, digits):
                entry.first_pin = None
                return "mismatch"
            case.pin_hash = entry.first_pin
            s.delete(entry)
            log.debug("case %s: the caller chose a PIN", case.id)
            return "set"

    def give_up_pin(self, call_sid: str) -> None:
        """The caller never finished choosing: no PIN, no code."""
        self.choose_pin(call_sid, "", second=False)

    # --- calling again -------------------------------------------------------------------
    def find(self, call_sid: str, code: str, now: datetime | None = None) -> Found:
        """A code entered at a `case_code` step: one count and one indexed read, no slow hash."""
        now = now or utcnow()
        with self.db.session() as s:
            misses = s.scalar(select(func.count(CodeMiss.id)).where(CodeMiss.at > now - WINDOW)) or 0
        if misses >= STOP_AFTER:
            return Found("busy", slow=True)
        slow = misses >= SLOW_AFTER
        key = self.key()
        with self.db.session() as s:
            case = None
            if code.isdigit() and len(code) == CODE_DIGITS:
                case = s.scalars(select(Case).where(Case.code_hash == code_hash(key, code),
                                                    Case.pin_hash.is_not(None),
                                                    Case.purged_at.is_(None))).first()
            if case is not None and not code_accepted(case):  # a confirmed probe
                case = None
            if case is None:
                self._miss(s, now, misses + 1)
                return Found("wrong", slow=slow)
            if case.code_locked_until is not None and case.code_locked_until > now:
                return Found("locked", slow=slow)
            s.execute(delete(CodeEntry).where(CodeEntry.call_sid == call_sid))
            s.add(CodeEntry(call_sid=call_sid, case_id=case.id, purpose="check", at=now))
            return Found("found", slow=slow)

    def check_pin(self, call_sid: str, pin: str, now: datetime | None = None) -> PinCheck:
        """The PIN after a code that matched: right resets the count; PIN_TRIES wrong in a row
        lock the case's line for LOCK (the console shows it on the case)."""
        now = now or utcnow()
        with self.db.session() as s:
            entry = self._entry(s, call_sid, "check", now)
            if entry is None:
                return PinCheck("gone")
            case = s.get(Case, entry.case_id)
            s.delete(entry)
            if case is None or case.pin_hash is None:
                return PinCheck("gone")
            if case.code_locked_until is not None and case.code_locked_until > now:
                return PinCheck("locked")
            if valid_pin(pin) and _verify(case.pin_hash, pin):
                case.pin_failures, case.code_locked_until = 0, None
                log.debug("case %s: reached with its code and PIN", case.id)
                return PinCheck("right", case.language)
            case.pin_failures += 1
            if case.pin_failures % PIN_TRIES == 0:
                case.code_locked_until = now + lock_after(case.pin_failures)
                log.warning("case %s: %d wrong PINs in a row; its line is locked until %s",
                            case.id, case.pin_failures,
                            case.code_locked_until.isoformat(timespec="minutes"))
                return PinCheck("locked")
            return PinCheck("wrong")

    def _entry(self, s: Session, call_sid: str, purpose: str,
               now: datetime | None = None) -> CodeEntry | None:
        entry = s.get(CodeEntry, call_sid)
        if entry is None or entry.purpose != purpose or entry.at < (now or utcnow()) - ENTRY:
            return None
        return entry

    def _miss(self, s: Session, now: datetime, count: int) -> None:
        """Keep a wrong code's time; the one that makes a burst (and no alarm within
        ALARM_EVERY) raises the alarm: an outbox job that tells the supervisors."""
        alarm = False
        if count >= SLOW_AFTER:
            recent = s.scalar(select(func.count(CodeMiss.id)).where(
                CodeMiss.alarm.is_(True), CodeMiss.at > now - ALARM_EVERY)) or 0
            alarm = recent == 0
        miss = CodeMiss(at=now, alarm=alarm)
        s.add(miss)
        s.flush()
        # Old misses are of no use: the table stays the size of one window.
        s.execute(delete(CodeMiss).where(CodeMiss.at < now - ALARM_EVERY - WINDOW))
        if alarm:
            s.add(OutboxJob(job=CODE_BURST, target_id=miss.id))
            log.warning("%d wrong case codes in %d minutes: code entry is slowed down and the "
                        "supervisors are told", count, WINDOW.seconds // 60)


def burst(db: Database, now: datetime | None = None) -> tuple[int, bool]:
    """Wrong codes in the last WINDOW, and whether an alarm was raised within ALARM_EVERY: for
    the console's banner."""
    now = now or utcnow()
    with db.session() as s:
        misses = s.scalar(select(func.count(CodeMiss.id)).where(CodeMiss.at > now - WINDOW)) or 0
        alarm = (s.scalar(select(func.count(CodeMiss.id)).where(
            CodeMiss.alarm.is_(True), CodeMiss.at > now - ALARM_EVERY)) or 0) > 0
    return misses, alarm


def _verify(hashed: str, pin: str) -> bool:
    try:
        return _hasher.verify(hashed, pin)
    except (VerificationError, InvalidHashError):
        return False


def tell_supervisors(db: Database, vault: Vault, send_sms: Callable[[str, str], str],
                     base_url: str, miss_id: int) -> int:
    """The alarm of a burst of wrong codes, by SMS to every active supervisor: how many and
    what the hotline does about it, never a call, a number or a case. Returns how many were
    sent (a supervisor whose message fails is skipped: the console shows the burst anyway)."""
    from ivr.operators import supervisors
    from ivr.storage import Operator

    with db.session() as s:
        miss = s.get(CodeMiss, miss_id)
        if miss is None:
            return 0
        numbers = []
        for sup_id in supervisors(db):
            sup = s.get(Operator, sup_id)
            assert sup is not None
            numbers.append(vault.open_operator_number(sup))
    body = (f"Hotline: at least {SLOW_AFTER} wrong case codes in {WINDOW.seconds // 60} minutes. "
            f"Code entry is slowed down. See the console: {base_url.rstrip('/')}/console/")
    sent = 0
    for number in numbers:
        try:
            send_sms(number, body)
            sent += 1
        except Exception:
            log.exception("the alarm of a burst of wrong case codes did not reach a supervisor")
    return sent


class CodeDesk(Protocol):
    """What the call handler asks of case codes: `Codes` (the database), or `PlantedCase`."""

    def issue(self, call_sid: str) -> str | None: ...
    def choose_pin(self, call_sid: str, digits: str, second: bool) -> str: ...
    def give_up_pin(self, call_sid: str) -> None: ...
    def find(self, call_sid: str, code: str, now: datetime | None = None) -> Found: ...
    def check_pin(self, call_sid: str, pin: str, now: datetime | None = None) -> PinCheck: ...


class PlantedCase:
    """One case a flow scenario says exists (`case: {code, pin, language}`), in memory: a flow
    test walks the `found` branch without a database. It gives no codes to new messages."""

    def __init__(self, code: str, pin: str, language: str) -> None:
        self.code, self.pin, self.language = code, pin, language
        self.wrong_pins = 0

    def issue(self, call_sid: str) -> str | None:
        return None

    def choose_pin(self, call_sid: str, digits: str, second: bool) -> str:
        return "gone"

    def give_up_pin(self, call_sid: str) -> None:
        return None

    def find(self, call_sid: str, code: str, now: datetime | None = None) -> Found:
        if code != self.code:
            return Found("wrong")
        return Found("locked" if self.wrong_pins >= PIN_TRIES else "found")

    def check_pin(self, call_sid: str, pin: str, now: datetime | None = None) -> PinCheck:
        if self.wrong_pins < PIN_TRIES and pin == self.pin:
            self.wrong_pins = 0
            return PinCheck("right", self.language)
        self.wrong_pins += 1
        return PinCheck("locked" if self.wrong_pins >= PIN_TRIES else "wrong")
