"""What the console's pages read, kept to a few indexed queries each (bench/console.py).

Every query that lists cases takes the user and narrows to what they may see: an operator,
the cases of their regions and those given to them; a supervisor or admin, all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select

from ivr.console.auth import User
from ivr.operators import OPEN_STATUSES
from ivr.storage import AuditEntry, Call, CallbackAttempt, Case, Database, Operator, Vault

PAGE = 100
# Intake answers are sealed, so a filter by one opens them: the newest this many cases of the
# view are looked through (the plain `urgent` column needs no opening).
INTAKE_SCAN = 1_000


def visible(user: User) -> ColumnElement[bool]:
    if user.supervisor:
        return true_()  # no column: the counts are then read from an index without cases.id
    # A case marked a possible probe is for supervisors only (ivr/probes.py).
    return and_(or_(Case.region.in_(sorted(user.regions)), Case.operator_id == user.id),
                Case.flag.is_(None))


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    status: str
    region: str | None
    language: str | None
    created_at: datetime
    attempts: int
    operator: str | None
    operator_id: int | None
    consent: str
    callback_status: str | None
    overdue: bool
    urgent: bool = False
    intake: Mapping[str, str] = field(default_factory=dict)  # the caller's answers, opened
    flag: str | None = None  # a possible probe (ivr/probes.py): supervisors see it marked


def queue(db: Database, user: User, now: datetime, reoffer_after: timedelta, *, show: str = "open",
          region: str | None = None, language: str | None = None, case_id: int | None = None,
          limit: int = PAGE, vault: Vault | None = None, intake: tuple[str, str] | None = None,
          urgent_after: timedelta | None = None) -> list[Row]:
    """Urgent first (an intake answer such as "at the front"), then newest and most urgent:
    unassigned, then not yet acted on, then the rest.

    With `vault`, each row's intake answers are opened; `intake` (field, value) keeps the rows
    with that answer, looked for among the newest INTAKE_SCAN cases of the view (sealed
    answers cannot be searched by the database). An urgent case is overdue after
    `urgent_after` (URGENT_REOFFER_MINUTES).
    """
    query = (select(Case.id, Case.status, Case.region, Case.language, Case.created_at,
                    Case.callback_attempts, Case.operator_id, Case.consent, Case.callback_status,
                    Case.acted_at, Case.assigned_at, Case.urgent, Case.data_key_id, Case.intake,
                    Case.flag, Operator.name)
             .outerjoin(Operator, Operator.id == Case.operator_id).where(visible(user)))
    if show == "open":
        query = query.where(Case.status.in_(OPEN_STATUSES))
    elif show == "closed":
        query = query.where(Case.status == "closed")
    elif show == "mine":
        query = query.where(Case.operator_id == user.id, Case.status.in_(OPEN_STATUSES))
    elif show == "flagged":  # supervisors: the possible probes waiting for their decision
        query = query.where(Case.flag == "probe", Case.status.in_(OPEN_STATUSES))
    if region:
        query = query.where(Case.region == region)
    if language:
        query = query.where(Case.language == language)
    if case_id is not None:
        query = query.where(Case.id == case_id)
    if intake is not None:
        query = query.where(Case.intake.is_not(None))
    urgent = ([Case.urgent.desc(), Case.operator_id.is_not(None), Case.acted_at.is_not(None)]
              if show != "closed" else [])
    query = query.order_by(*urgent, Case.created_at.desc(), Case.id.desc())
    query = query.limit(INTAKE_SCAN if intake is not None else limit)
    cutoff = now - reoffer_after
    urgent_cutoff = now - min(urgent_after or reoffer_after, reoffer_after)
    with db.session() as s:
        found = s.execute(query).all()
    answers: dict[int, dict[str, str]] = {}
    if vault is not None:
        opened = vault.open_many("intake", [(r.id, r.data_key_id, r.intake) for r in found
                                            if r.intake is not None])
        answers = {case_id: json.loads(raw) for case_id, raw in opened.items()}
    if intake is not None:
        name, value = intake
        found = [r for r in found if answers.get(r.id, {}).get(name) == value][:limit]
    return [Row(r.id, r.status, r.region, r.language, r.created_at, r.callback_attempts, r.name,
                r.operator_id, r.consent or "none", r.callback_status,
                r.status == "routed" and r.acted_at is None and r.assigned_at is not None
                and r.flag is None and r.assigned_at <= (urgent_cutoff if r.urgent else cutoff),
                bool(r.urgent), answers.get(r.id, {}), r.flag)
            for r in found]


def counts(db: Database, user: User, now: datetime, reoffer_after: timedelta,
           urgent_after: timedelta | None = None) -> dict[str, int]:
    """The figures at the top of the queue.

    Each is about open cases (overdue ones are routed), so only those are read: from the index
    ix_cases_console alone, which holds every column read here (bench/console.py). Urgent
    cases overdue sooner (`urgent_after`) are counted apart, from the small index of urgent
    cases (ix_cases_urgent).
    """
    mine = Case.operator_id == user.id
    regions = Case.region.in_(sorted(user.regions)) if not user.supervisor else true_()
    unassigned = Case.operator_id.is_(None)
    due = and_(Case.callback_status.in_(("scheduled", "queued")), Case.next_callback_at <= now)
    overdue = and_(Case.status == "routed", Case.acted_at.is_(None),
                   Case.assigned_at <= now - reoffer_after)
    normal = Case.flag.is_(None)  # a possible probe is counted apart, for supervisors
    figures = {"mine": and_(mine, normal), "regions": and_(regions, normal),
               "unassigned": and_(unassigned, normal), "due": and_(due, normal),
               "overdue": and_(overdue, normal), "flagged": Case.flag == "probe"}
    query = select(*[func.count().filter(cond).label(name) for name, cond in figures.items()]
                   ).select_from(Case).where(Case.status.in_(OPEN_STATUSES), visible(user))
    with db.session() as s:
        row = s.execute(query).one()
        found = {name: int(getattr(row, name) or 0) for name in figures}
        if urgent_after is not None and urgent_after < reoffer_after:
            found["overdue"] += int(s.scalar(
                select(func.count()).select_from(Case).where(
                    Case.urgent, Case.assigned_at <= now - urgent_after,
                    Case.assigned_at > now - reoffer_after, Case.status == "routed",
                    Case.acted_at.is_(None), Case.flag.is_(None), visible(user))) or 0)
    return found


def eligible(db: Database, everyone: bool = False) -> list[tuple[int, str]]:
    """Operators a supervisor can hand a case to (`everyone`: the disabled too, to name them)."""
    query = select(Operator.id, Operator.name).order_by(Operator.name)
    with db.session() as s:
        return [(r.id, r.name) for r in s.execute(
            query if everyone else query.where(Operator.active.is_(True)))]


def audit(db: Database, limit: int = 300) -> list[AuditEntry]:
    with db.session() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                              .limit(limit)))


def operators(db: Database) -> list[Operator]:
    with db.session() as s:
        return list(s.scalars(select(Operator).order_by(Operator.name)))


def dashboard(db: Database, user: User, now: datetime, reoffer_after: timedelta,
              urgent_after: timedelta | None = None, tz: tzinfo = UTC) -> dict[str, Any]:
    """The figures of the dashboard, over the cases the user may see; hours and days are the
    reader's (`tz`): the 24 hours of their clock up to this one, the 14 days of their calendar."""
    local = now.astimezone(tz)
    hour = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)  # this hour began
    day, month = hour - timedelta(hours=23), now - timedelta(days=30)
    fortnight = datetime.combine(local.date() - timedelta(days=13), time(), tz).astimezone(UTC)
    seen = visible(user)
    with db.session() as s:
        call_filter = (Call.region.in_(sorted(user.regions)) if not user.supervisor else true_())
        hours = Counter(
            int((at - day).total_seconds() // 3600) for at in s.scalars(
                select(Call.started_at).where(Call.started_at >= day, call_filter)))
        per_region = s.execute(select(Case.region, func.count()).where(seen, Case.created_at > month)
                               .group_by(Case.region).order_by(func.count().desc())).all()
        calls_per_region = s.execute(
            select(Call.region, func.count()).where(call_filter, Call.started_at > month)
            .group_by(Call.region).order_by(func.count().desc())).all()
        per_language = s.execute(select(Case.language, func.count()).where(seen, Case.created_at > month)
                                 .group_by(Case.language).order_by(func.count().desc())).all()
        per_day = Counter(
            (local.date() - at.astimezone(tz).date()).days for at in s.scalars(
                select(Case.created_at).where(seen, Case.created_at >= fortnight)))
        first = (select(CallbackAttempt.case_id, func.min(CallbackAttempt.started_at).label("first"))
                 .group_by(CallbackAttempt.case_id).subquery())
        waits = [(f - c).total_seconds() / 60 for c, f in s.execute(
            select(Case.created_at, first.c.first).join(first, first.c.case_id == Case.id)
            .where(seen, Case.created_at > month))]
    figures = counts(db, user, now, reoffer_after, urgent_after)
    return {
        "hours": [((day + timedelta(hours=h)).astimezone(tz).strftime("%H:00"), hours.get(h, 0))
                  for h in range(24)],
        "regions": [(r or "?", n) for r, n in per_region],
        "call_regions": [(r or "?", n) for r, n in calls_per_region],
        "languages": [(lang or "?", n) for lang, n in per_language],
        "days": [((local.date() - timedelta(days=d)).strftime("%d.%m"), per_day.get(d, 0))
                 for d in range(13, -1, -1)],
        "first_callback_minutes": round(median(waits)) if waits else None,
        "unassigned": figures["unassigned"],
        "overdue": figures["overdue"],
    }


def true_() -> ColumnElement[bool]:
    return ~false()
