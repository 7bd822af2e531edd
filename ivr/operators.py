"""Operators, and which of them a case goes to.

`choose` is the rule, pure and table-tested: on-duty operators who cover the case's region
and speak its language, with room under their capacity, least loaded first, ties going to
the one who was given a case longest ago (fair rotation). It returns the reason in words,
which the case keeps ("region crimea, language ru → 3 candidates, 2 on duty, …"). No match
is not a drop: the case is visibly unassigned and escalated.

The rest reads and writes operators; their phone numbers are sealed like callers' and are
shown only to the admin who asks (`ivr operators list --numbers`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import case as case_when
from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from ivr.flow import Hours
from ivr.reasons import ENGLISH, Said, Told, Value, said
from ivr.storage import AuditEntry, Case, ConsoleSession, Database, Operator, Vault, utcnow
from ivr.voicemail import callback_status

E164 = re.compile(r"^\+[1-9]\d{6,14}\Z")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OPEN_STATUSES = ("new", "transcribed", "transcription_failed", "routed")
ROLES = ("operator", "supervisor", "admin")  # admin: a supervisor who also sees the flows
MAX_CAPACITY = 1000
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger one is no row (and no 500 on PostgreSQL)
log = logging.getLogger(__name__)


class OperatorError(Told, ValueError):
    """A bad operator setting or an unknown operator, said in one line (and as data)."""


@lru_cache(maxsize=4096)
def parse_hours(text: str, timezone: str) -> Hours:
    """`mon-fri 09:00-18:00; sat 10:00-14:00`, `daily 20:00-08:00` or `always`, in `timezone`."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise OperatorError("bad-time-zone", zone=timezone) from None
    weekly: dict[int, list[tuple[int, int]]] = {}
    spec = text.strip().lower()
    if spec == "always":
        return Hours(timezone, {d: ((0, 0),) for d in range(7)})
    for part in (p.strip() for p in spec.split(";") if p.strip()):
        m = re.fullmatch(r"([a-z]+)(?:-([a-z]+))?\s+(\d{1,2}):(\d\d)-(\d{1,2}):(\d\d)", part)
        if not m or (m[1] != "daily" and m[1] not in DAYS) or (m[2] and m[2] not in DAYS):
            raise OperatorError("bad-hours", part=part)
        h1, m1, h2, m2 = (int(x) for x in m.group(3, 4, 5, 6))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
            raise OperatorError("bad-time-of-day", part=part)
        if m[1] == "daily":
            days = list(range(7))
        else:
            a = DAYS.index(m[1])
            b = DAYS.index(m[2]) if m[2] else a
            days = [(a + i) % 7 for i in range((b - a) % 7 + 1)]
        for day in days:
            weekly.setdefault(day, []).append((h1 * 60 + m1, (h2 * 60 + m2) % (24 * 60)))
    if not weekly:
        raise OperatorError("empty-hours")
    return Hours(timezone, {d: tuple(s) for d, s in weekly.items()})


class Candidate(NamedTuple):
    """What the rule needs to know of an operator (never the number). A tuple, not a frozen
    dataclass: several hundred are built per assignment, and a tuple is built in C."""

    id: int
    name: str
    languages: frozenset[str]
    regions: frozenset[str]
    hours: Hours
    capacity: int
    on_duty: bool
    open_cases: int
    last_assigned_at: datetime | None


# Added to the route reason of an urgent case (an intake answer such as "at the front"; the
# case's `urgent` column says the same as data). Not in the audit entry: the purge empties
# the route reason, and the audit log keeps its details.
URGENT_REASON = ENGLISH["route-urgent"]  # said after the route reason of an urgent case


@dataclass(frozen=True, slots=True)
class Choice:
    operator_id: int | None  # None: unassigned, escalated
    said: Said  # why, as data (the console says it in its reader's language)

    @property
    def reason(self) -> str:
        """Why, in English words (the case's `route_reason`, read by tools)."""
        return self.said.english()


def choose(candidates: list[Candidate], region: str, language: str, now: datetime,
           exclude: frozenset[int] = frozenset()) -> Choice:
    """The operator for a case of `region` and `language` at `now`, and why.

    `exclude`: operators the case was offered to before and who did not act on it (re-offer).
    """
    matching = [c for c in candidates if region in c.regions and language in c.languages
                and c.id not in exclude]
    opened: dict[int, bool] = {}  # operators share a few schedules (parse_hours hands out one
    # object per schedule): each is read once

    def is_open(hours: Hours) -> bool:
        if id(hours) not in opened:
            opened[id(hours)] = hours.is_open(now)
        return opened[id(hours)]

    on_duty = [c for c in matching if c.on_duty and is_open(c.hours)]
    with_room = [c for c in on_duty if c.open_cases < c.capacity]
    parts: list[tuple[str, str]] = [(" → ", "route-candidates")]
    if exclude:
        parts.append((" ", "route-excluded"))
    parts += [(", ", "route-on-duty"), (", ", "route-with-room")]
    values: dict[str, Value] = {"region": region, "language": language, "candidates": len(matching),
                                "excluded": len(exclude), "on_duty": len(on_duty),
                                "with_room": len(with_room)}
    if not with_room:
        return Choice(None, Said("route-region", values, (*parts, (": ", "route-unassigned"))))
    never = datetime.min.replace(tzinfo=now.tzinfo)
    best = min(with_room, key=lambda c: (c.open_cases, c.last_assigned_at or never, c.id))
    tie = sum(1 for c in with_room if c.open_cases == best.open_cases) > 1
    values.update(name=best.name, open=best.open_cases, operator=best.id)
    return Choice(best.id, Said("route-region", values,
                                (*parts, ("; ", "route-chose-tie" if tie else "route-chose"))))


# --- the database side ---------------------------------------------------------------------


def _names(text: str, what: str, longest: int) -> str:
    items = sorted({x.strip() for x in text.split(",") if x.strip()})
    joined = ",".join(items)
    if not items or len(joined) > longest or not all(re.fullmatch(r"[a-z][a-z0-9_-]*", x) for x in items):
        raise OperatorError("bad-list", what=what)
    return joined


class NotAllowed(OperatorError):
    """The change is not the actor's to make (a supervisor and an admin, say)."""


# Who may change whom, for `ivr operators` (run on the server: an admin) and the console alike.
# What an operator is told when their sign-in changed (OWASP ASVS 2.2.3): a change they did
# not ask for is known at once.
SIGN_IN_CHANGED = {
    "password": {
        "uk": "Гаряча лінія: пароль вашого облікового запису змінено. Якщо ви про це не просили, "
              "негайно скажіть адміністраторові.",
        "en": "Hotline: the password of your account was changed. If you did not ask for this, "
              "tell your admin at once.",
    },
    "second-factor": {
        "uk": "Гаряча лінія: другий фактор вашого облікового запису скинуто; під час наступного входу "
              "ви налаштуєте застосунок-автентифікатор заново. Якщо ви про це не просили, негайно "
              "скажіть адміністраторові.",
        "en": "Hotline: the second factor of your account was reset; at your next sign-in you set "
              "up your authenticator app again. If you did not ask for this, tell your admin at once.",
    },
}
NUMBER_CHANGED = {
    "uk": "Гаряча лінія: номер телефону вашого облікового запису змінено. Якщо це зробили не ви "
          "або без вашого відома, негайно скажіть адміністраторові.",
    "en": "Hotline: the phone number of your account was changed. If you did not expect this, "
          "tell your admin at once.",
}


def _allowed(by: str, by_id: int | None, target: Operator | None, changes: Mapping[str, object]) -> None:
    """The roles' rules: only an admin makes or changes admins and changes a phone number (it
    takes the operator's SMS and calls); a supervisor changes operators and themselves, not
    another supervisor; an operator changes nobody."""
    if by == "admin":
        return
    if by != "supervisor":
        raise NotAllowed("only supervisors and admins change operators")
    if changes.get("role") == "admin":
        raise NotAllowed("only an admin makes admins")
    if target is None:
        return
    if target.role == "admin" or (target.role == "supervisor" and target.id != by_id):
        raise NotAllowed("a supervisor changes operators, not admins or other supervisors")
    if changes.get("number") is not None:
        raise NotAllowed("only an admin changes a phone number")


def may_change(by: str, by_id: int | None, target: Operator) -> bool:
    """Whether `by` (a role) may change `target` at all (the console shows its forms only then)."""
    try:
        _allowed(by, by_id, target, {})
    except NotAllowed:
        return False
    return True


def _text(value: str, what: str, longest: int) -> str:
    if len(value) > longest or any(ord(ch) < 32 for ch in value):
        raise OperatorError("bad-text", what=what, longest=longest)
    return value


def add_operator(db: Database, vault: Vault, *, name: str, number: str, languages: str, regions: str,
                 timezone: str, hours: str, capacity: int = 5, role: str = "operator",
                 actor: str = "admin", by: str = "admin") -> int:
    """Add an operator; `by` is the role of whoever adds (`ivr operators` is an admin's)."""
    if role not in ROLES:
        raise OperatorError("bad-role", roles=", ".join(ROLES))
    _allowed(by, None, None, {"role": role})
    if not E164.match(number):
        raise OperatorError("bad-number")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise OperatorError("bad-capacity", most=MAX_CAPACITY)
    name = _text(name.strip(), "the name", 80)
    if not name:
        raise OperatorError("no-name")
    parse_hours(_text(hours, "hours", 200), _text(timezone, "the time zone", 64))
    with db.session() as s:
        if s.scalars(select(Operator.id).where(Operator.name == name)).first() is not None:
            raise OperatorError("name-taken", name=name)
        op = Operator(name=name, data_key_id=vault.new_key("operator"), number=b"",
                      languages=_names(languages, "languages", 40), regions=_names(regions, "regions", 200),
                      timezone=timezone, hours=hours, capacity=capacity, on_duty=True, active=True,
                      role=role)
        s.add(op)
        s.flush()
        op.number = vault.seal_operator_number(op, number)
        s.add(AuditEntry(actor=actor, action="operator-added",
                         **said("operator-added", operator=op.id, name=name).entry()))
        return op.id


def edit_operator(db: Database, vault: Vault, operator_id: int, actor: str = "admin", *,
                  by: str = "admin", by_id: int | None = None,
                  sms: Callable[[str, str], object] | None = None,
                  **changes: str | int | bool | None) -> None:
    """Change an operator (None: unchanged), by the roles' rules (`_allowed`); `by` and `by_id`
    say who changes. A new phone number is audited and told by SMS (`sms(to, body)`) to the
    old one, without naming the new; disabling ends every console session of the operator."""
    told: tuple[str, str] | None = None
    with db.session() as s:
        op = s.get(Operator, operator_id) if 0 < operator_id <= MAX_ID else None
        if op is None:
            raise OperatorError(f"no operator #{operator_id} (see `ivr operators list`)")
        _allowed(by, by_id, op, changes)
        for key, value in changes.items():
            if value is None:
                continue
            if key == "number":
                if not isinstance(value, str) or not E164.match(value):
                    raise OperatorError("bad-number")
                old = vault.open_operator_number(op)
                if old != value:
                    op.number = vault.seal_operator_number(op, value)
                    told = (old, NUMBER_CHANGED.get(op.locale, NUMBER_CHANGED["en"]))
                    s.add(AuditEntry(actor=actor, action="operator-number-changed",
                                     **said("operator", operator=op.id).entry()))
            elif key in ("languages", "regions"):
                setattr(op, key, _names(str(value), key, 40 if key == "languages" else 200))
            elif key == "capacity":
                if not isinstance(value, int) or not 1 <= value <= MAX_CAPACITY:
                    raise OperatorError("bad-capacity", most=MAX_CAPACITY)
                op.capacity = value
            elif key == "role":
                if value not in ROLES:
                    raise OperatorError("bad-role", roles=", ".join(ROLES))
                op.role = str(value)
            elif key in ("name", "timezone", "hours"):
                if key == "name" and s.scalars(select(Operator.id).where(
                        Operator.name == value, Operator.id != op.id)).first() is not None:
                    raise OperatorError("name-taken", name=str(value))
                setattr(op, key, _text(str(value), key, {"name": 80, "timezone": 64, "hours": 200}[key]))
            elif key in ("on_duty", "active"):
                setattr(op, key, bool(value))
            else:
                raise OperatorError(f"unknown operator setting {key!r}")
        parse_hours(op.hours, op.timezone)
        if changes.get("active") is False:
            op.session_epoch += 1
            end_sessions(s, op.id)
        changed = ", ".join(k for k, v in changes.items() if v is not None)
        s.add(AuditEntry(actor=actor, action="operator-edited",
                         **said("operator-edited", operator=op.id, fields=changed).entry()))
    if told is not None:
        _tell_old_number(db, sms, operator_id, *told)


def _tell_old_number(db: Database, sms: Callable[[str, str], object] | None, operator_id: int,
                     old: str, body: str) -> None:
    """The old number hears of the change: if it was not its owner's doing, they know at once."""
    _tell(db, sms, operator_id, old, body, "number-change-told")


def tell_sign_in_changed(db: Database, vault: Vault, sms: Callable[[str, str], object] | None,
                         operator_id: int, what: str) -> bool:
    """Tell an operator, on their own number, that their password was set or their second
    factor reset (`what`: password, second-factor). Audited either way; True when sent."""
    with db.session() as s:
        op = s.get(Operator, operator_id)
        if op is None:
            return False
        number, body = vault.open_operator_number(op), SIGN_IN_CHANGED[what].get(op.locale, "")
    body = body or SIGN_IN_CHANGED[what]["en"]
    return _tell(db, sms, operator_id, number, body, f"{what}-change-told")


def _tell(db: Database, sms: Callable[[str, str], object] | None, operator_id: int, to: str,
          body: str, what: str) -> bool:
    """An SMS about an operator's account; the change stands either way, and the audit log says
    whether it went (`what`, a code of ivr/reasons.py, is its detail, never the number). True
    when sent."""
    try:
        if sms is None:
            raise OperatorError("no SMS sender")
        sms(to, body)
        action = "sms-sent"
    except Exception as exc:  # the admin sees the failure in the audit log
        action = "sms-failed"
        log.warning("could not send operator %s the SMS (%s): %s", operator_id, what, type(exc).__name__)
    with db.session() as s:
        s.add(AuditEntry(actor="system", action=action, **said(what, operator=operator_id).entry()))
    return action == "sms-sent"


def end_sessions(s: Session, operator_id: int, now: datetime | None = None) -> None:
    """End every console session of an operator, signed in or half-way, in `s`'s transaction
    (a password set, the second factor reset, the account disabled)."""
    s.execute(update(ConsoleSession).where(ConsoleSession.operator_id == operator_id,
                                           ConsoleSession.ended_at.is_(None))
              .values(ended_at=now or utcnow()), execution_options={"synchronize_session": False})


def _listed(column: Any, value: str) -> Any:
    """`value` is one item of a comma-separated column ("crimea,occupied")."""
    return (literal(",") + column + literal(",")).like(f"%,{value},%")


def _team(s: Session, region: str | None, language: str | None) -> list[Candidate]:
    """Active operators (of `region` and `language`, when given) with their open cases, in one
    query of the operators alone: the count is kept on each operator (`move_case`), so an
    assignment reads no case (bench/routing.py: 1,000 operators, 100,000 open cases)."""
    query = select(Operator.id, Operator.name, Operator.languages, Operator.regions, Operator.hours,
                   Operator.timezone, Operator.capacity, Operator.on_duty, Operator.last_assigned_at,
                   Operator.open_cases).where(Operator.active.is_(True))
    if region is not None:
        query = query.where(_listed(Operator.regions, region))
    if language is not None:
        query = query.where(_listed(Operator.languages, language))
    return [Candidate(id_, name, _items(languages), _items(regions), parse_hours(hours, tz), capacity,
                      on_duty, open_cases, last)
            for id_, name, languages, regions, hours, tz, capacity, on_duty, last, open_cases
            in s.execute(query.order_by(Operator.id))]


def hand_back(s: Session, case: Case, operator_id: int, why: Said, actor: str, now: datetime,
              *, acting: bool = False) -> None:
    """Give a case back to an operator it had (reopened, a probe flag cleared), saying why.

    `acting`: she did it herself, so she knows (no SMS) and is acting on it (no re-offer)."""
    move_case(s, case, operator_id)
    case.assigned_at = now
    case.notified_at = case.acted_at = now if acting else None
    case.route_reason, case.route_reason_data = why.english(), why.dumps()
    s.add(AuditEntry(actor=actor, action="assigned", case_id=case.id, at=now,
                     **Said("operator", {"operator": operator_id}, ((": ", why.code),)).entry()))


def move_case(s: Session, case: Case, operator_id: int | None, *, closing: bool = False) -> None:
    """Give a loaded `case` to `operator_id` (None: nobody), or (`closing`) close it, keeping
    each operator's count of open cases right. Every change of a case's operator or openness
    goes through here or `assign_case`, in the same transaction; `recount` repairs any drift.
    """
    before = case.operator_id if case.status in OPEN_STATUSES else None
    if closing:
        case.status = "closed"
    else:
        case.operator_id = operator_id
    _count(s, before, case.operator_id if case.status in OPEN_STATUSES else None)


def _count(s: Session, before: int | None, after: int | None, assigned_at: datetime | None = None) -> None:
    """One open case less for `before`, one more for `after` (who was given it `assigned_at`)."""
    if before == after:
        return
    plain = {"synchronize_session": False}  # no ORM bookkeeping: these rows are not loaded
    if before is not None:
        s.execute(update(Operator).where(Operator.id == before).values(
            open_cases=case_when((Operator.open_cases > 0, Operator.open_cases - 1), else_=0)),
            execution_options=plain)
    if after is not None:
        values: dict[str, Any] = {"open_cases": Operator.open_cases + 1}
        if assigned_at is not None:
            values["last_assigned_at"] = assigned_at
        s.execute(update(Operator).where(Operator.id == after).values(**values), execution_options=plain)


def recount(db: Database) -> int:
    """Set every operator's open-case count from the cases; returns how many were off."""
    with db.session() as s:
        truth = _load(s)
        fixed = 0
        for op in s.scalars(select(Operator)):
            if op.open_cases != truth.get(op.id, 0):
                op.open_cases, fixed = truth.get(op.id, 0), fixed + 1
    return fixed


@lru_cache(maxsize=1024)
def _items(text: str) -> frozenset[str]:
    return frozenset(text.split(","))


def candidates(db: Database, region: str | None = None, language: str | None = None) -> list[Candidate]:
    """Active operators (of `region` and `language`, when given) with their open cases counted."""
    with db.session() as s:
        return _team(s, region, language)


def assign_case(db: Database, case_id: int, now: datetime | None = None, actor: str = "system",
                exclude: frozenset[int] = frozenset()) -> Choice:
    """Give a case to an operator by the rule; the case keeps who and why (or 'unassigned').

    A new assignment is a new offer: the operator has not been told yet (`notified_at`) nor
    acted on it (`acted_at`); the worker's notifier and the re-offer clock start again. Plain
    statements, no ORM objects: this runs for every case (bench/routing.py).
    """
    now = now or utcnow()
    for _attempt in range(3):
        with db.session() as s:
            found = s.execute(select(Case.region, Case.language, Case.status, Case.operator_id,
                                     Case.consent, Case.number.is_not(None).label("has_number"),
                                     Case.callback_status, Case.urgent, Case.flag)
                               .where(Case.id == case_id)).first()
            if found is None:
                raise OperatorError(f"no case #{case_id}")
            if found.flag is not None:  # a possible probe: supervisors only (ivr/probes.py)
                raise OperatorError("flagged-case", case=case_id)
            region, language = found.region or "", found.language or ""
            team = _team(s, region, language)
        choice = choose(team, region, language, now, exclude)
        # The write in a short transaction of its own (on SQLite, one that read before it
        # writes fails at once when another process wrote meanwhile), and only if the case
        # did not change hands in between; else the rule runs again.
        is_open = found.status in OPEN_STATUSES
        said_why = (replace(choice.said, parts=(*choice.said.parts, ("; ", "route-urgent")))
                    if found.urgent else choice.said)
        values: dict[str, Any] = {"operator_id": choice.operator_id,
                                  "route_reason": said_why.english()[:300],
                                  "route_reason_data": said_why.dumps(),
                                  "assigned_at": now, "notified_at": None, "acted_at": None}
        if found.status != "closed":
            values.update(status="routed", routed_at=now)
        if found.callback_status is None:
            values["callback_status"] = callback_status(found.consent, found.has_number)
        with db.session() as s:
            same = Case.operator_id.is_(None) if found.operator_id is None else \
                Case.operator_id == found.operator_id
            changed = s.execute(update(Case).where(Case.id == case_id, same, Case.status == found.status,
                                                   Case.flag.is_(None))
                                .values(**values), execution_options={"synchronize_session": False})
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            _count(s, found.operator_id if is_open else None,
                   choice.operator_id if is_open else None, now)
            s.add(AuditEntry(actor=actor, action="assigned" if choice.operator_id else "unassigned",
                             case_id=case_id, **choice.said.entry(300)))
        return choice
    raise OperatorError(f"case #{case_id} keeps changing hands: try again")


def may_take(op: Operator, region: str | None, language: str | None) -> bool:
    """Whether `op` may take an unassigned case of `region` and `language` for themselves: an
    active operator who covers the region and speaks the language (the rule's own match, on
    duty or not: taking is a choice), or any active supervisor (they answer for what nobody
    could take)."""
    if not op.active:
        return False
    if op.role in ("supervisor", "admin"):
        return True
    return (region or "") in _items(op.regions) and (language or "") in _items(op.languages)


def take_case(db: Database, case_id: int, operator_id: int, now: datetime | None = None,
              actor: str = "system") -> None:
    """Give an open, unassigned case to `operator_id`, who asked for it ("Take this case").

    One conditional UPDATE: of two operators taking the same case at once, one gets it and
    the other is told it was taken. Taking is acting on it (no re-offer, no SMS)."""
    now = now or utcnow()
    with db.session() as s:
        op = s.get(Operator, operator_id)
        found = s.execute(select(Case.region, Case.language, Case.status, Case.operator_id,
                                 Case.consent, Case.number.is_not(None).label("has_number"),
                                 Case.callback_status).where(Case.id == case_id)).first()
        if op is None or found is None:
            raise OperatorError(f"no case #{case_id}")
        if found.status not in OPEN_STATUSES:
            raise OperatorError("the case is closed")
        if found.operator_id is not None:
            raise OperatorError("the case was taken by someone else meanwhile")
        if not may_take(op, found.region, found.language):
            raise NotAllowed("the case is not in your regions and languages")
        values: dict[str, Any] = {"operator_id": operator_id, "assigned_at": now, "notified_at": now,
                                  "acted_at": now, "status": "routed",
                                  "route_reason": f"taken by {op.name}"[:300],
                                  "route_reason_data": said("taken-by", name=op.name).dumps()}
        if found.callback_status is None:
            values["callback_status"] = callback_status(found.consent, found.has_number)
        changed = s.execute(update(Case).where(Case.id == case_id, Case.operator_id.is_(None),
                                               Case.status == found.status, Case.flag.is_(None))
                            .values(routed_at=func.coalesce(Case.routed_at, now), **values),
                            execution_options={"synchronize_session": False})
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise OperatorError("the case was taken by someone else meanwhile")
        _count(s, None, operator_id, now)
        s.add(AuditEntry(actor=actor, action="taken", case_id=case_id,
                         **said("operator", operator=operator_id).entry()))


def supervisors(db: Database) -> list[int]:
    """Active supervisors: who hears of a case nobody could take."""
    with db.session() as s:
        return list(s.scalars(select(Operator.id).where(Operator.active.is_(True),
                                                        Operator.role.in_(("supervisor", "admin")))
                              .order_by(Operator.id)))


def list_operators(db: Database, vault: Vault, numbers: bool = False,
                   actor: str = "admin") -> list[dict[str, object]]:
    """Every operator, disabled ones too; their numbers only when asked for, and then the
    reading is audited (who, and whose numbers) in the same transaction."""
    with db.session() as s:
        load = _load(s)
        ops = list(s.scalars(select(Operator).order_by(Operator.id)))
        rows: list[dict[str, object]] = [
            {"id": op.id, "name": op.name, "languages": op.languages.split(","),
             "regions": op.regions.split(","), "timezone": op.timezone, "hours": op.hours,
             "capacity": op.capacity, "open_cases": load.get(op.id, 0), "on_duty": op.on_duty,
             "active": op.active, "role": op.role,
             **({"number": vault.open_operator_number(op)} if numbers else {})}
            for op in ops
        ]
        if numbers and ops:
            s.add(AuditEntry(actor=actor, action="operator-numbers-read",
                             **said("operators-read", operators=",".join(str(op.id) for op in ops)).entry()))
        return rows


def _load(s: Session) -> dict[int, int]:
    """Open cases per operator."""
    # count(*), not count(id): the index on (status, operator_id) answers it alone
    rows = s.execute(select(Case.operator_id, func.count())
                     .where(Case.operator_id.is_not(None), Case.status.in_(OPEN_STATUSES))
                     .group_by(Case.operator_id)).all()
    return {int(op_id): int(n) for op_id, n in rows if op_id is not None}


def uncovered(db: Database, regions: dict[str, str]) -> list[str]:
    """Regions (name -> default language) that no active operator covers in that language."""
    with db.session() as s:
        ops = s.scalars(select(Operator).where(Operator.active.is_(True))).all()
        cover = {(r, lang) for op in ops for r in op.regions.split(",") for lang in op.languages.split(",")}
    return [f"no active operator covers region {name} in its language {lang}"
            for name, lang in sorted(regions.items()) if (name, lang) not in cover]
