"""Cases as people read them: the admin's terminal today, the operator console later.

One home for what a case looks like outside the database, so the CLI and the console show
the same fields with the same names (`ivr cases list --json` is read by other tools: keep the
JSON fields stable). Listing decrypts nothing but the caller's intake answers (short keypad
codes the console's queue shows too); showing one case decrypts its transcript for the
reader and writes who read it into the audit log in the same transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from ivr import replies
from ivr.keys import CryptoError
from ivr.operators import hand_back, move_case
from ivr.reasons import Told, loads, said
from ivr.storage import AuditEntry, CallbackAttempt, Case, Database, Operator, Recording, Vault, utcnow
from ivr.voicemail import callback_status

STATUSES = ("new", "transcribed", "transcription_failed", "routed", "closed")


class CaseError(Told):
    """An action that does not fit the case (closing a closed case, an unknown id)."""


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None


# The audit entries that say a case's words could not be had: their time is the failure's
# (`transcribed_at` is set only when a transcript exists); the reason is `status_reason` (and
# the `transcription_failed` entry's detail).
FAILED_ACTIONS = ("transcription_failed", "recording-failed")


def _transcription(case: Case, rec: Recording | None, failed_at: datetime | None) -> str:
    if case.transcript_engine:
        return "done"
    # transcribed_at without words: a row written before transcribed_at meant "words in".
    if failed_at is not None or case.transcribed_at is not None \
            or (rec is not None and rec.status == "failed"):
        return "failed"
    return "pending"


def _failures(s: Any, ids: list[int]) -> dict[int, datetime]:
    """When each of these cases' transcription failed (the latest such audit entry)."""
    if not ids:
        return {}
    rows = s.execute(select(AuditEntry.case_id, func.max(AuditEntry.at))
                     .where(AuditEntry.case_id.in_(ids), AuditEntry.action.in_(FAILED_ACTIONS))
                     .group_by(AuditEntry.case_id)).all()
    return {case_id: at for case_id, at in rows}


def _summary(case: Case, rec: Recording | None, repeat: int,
             failed_at: datetime | None = None, intake: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": case.status,
        "status_reason": case.status_reason,
        **_coded("status_reason", case.status_reason_data),
        "region": case.region,
        "country": case.country,
        "language": case.language,
        "flow": case.flow,
        "step": case.step,
        "created_at": _iso(case.created_at),
        "transcribed_at": _iso(case.transcribed_at),  # only when there is a transcript
        "transcription_failed_at": _iso(failed_at),  # when its words could not be had
        "routed_at": _iso(case.routed_at),
        "closed_at": _iso(case.closed_at),
        "purged_at": _iso(case.purged_at),
        "recording_seconds": rec.duration if rec else None,
        "recording_status": rec.status if rec else None,
        "recording_stored_at": _iso(rec.stored_at) if rec else None,
        "recording_deleted_at_provider": _iso(rec.deleted_at_provider) if rec else None,
        "transcript_engine": case.transcript_engine,
        # The language the words are in (the caller's `language` unless another was spoken),
        # the mean of the model's word confidences (0-1; null when the engine gives none), and
        # what the guard noticed (no-speech, stock-phrase, sound-caption, repeated).
        "transcript_language": case.transcript_language,
        "transcript_confidence": (round(case.transcript_confidence, 3)
                                  if case.transcript_confidence is not None else None),
        "transcript_flags": case.transcript_flags.split(",") if case.transcript_flags else [],
        "operator_id": case.operator_id,
        "assigned_at": _iso(case.assigned_at),
        "route_reason": case.route_reason,  # in English words; the same as a code and values:
        **_coded("route_reason", case.route_reason_data),
        # Whether the words are in: pending, done, or failed (status_reason says why). A case
        # keeps this when it moves on to routed, so a failed transcription stays findable.
        "transcription": _transcription(case, rec, failed_at),
        "consent": case.consent or "none",
        "callback_status": case.callback_status,
        "callback_attempts": case.callback_attempts,
        "next_callback_at": _iso(case.next_callback_at),
        "notified_at": _iso(case.notified_at),
        "acted_at": _iso(case.acted_at),
        "reoffers": case.reoffers,
        "number_withheld": case.number is None and case.purged_at is None,
        "earlier_cases_from_same_number": repeat,
        # The caller's keypad answers before the message (the flow's `fields:`, field name ->
        # value: {"who": "front", "people": "3"}), and whether one made the case urgent.
        "intake": intake or {},
        "urgent": bool(case.urgent),
        # Whether the caller can reach the case by phone with a case code and PIN (never the
        # code or PIN themselves), and until when wrong PINs locked that out (null: not locked).
        "has_code": case.code_hash is not None and case.pin_hash is not None,
        "code_locked_until": (_iso(case.code_locked_until) if case.code_locked_until is not None
                              and case.code_locked_until > utcnow() else None),
        # Marked a possible intelligence probe (ivr/probes.py): none, probe or confirmed.
        "flag": case.flag or "none",
    }


def _coded(name: str, data: str | None) -> dict[str, Any]:
    """`route_reason_code` and `route_reason_values` (ivr/reasons.py), null for older rows."""
    found = loads(data)
    return {f"{name}_code": found.outcome if found else None,
            f"{name}_values": dict(found.values) if found else None}


def _repeats(db_session: Any, case: Case) -> int:
    if case.caller_hash is None:
        return 0
    return int(db_session.scalar(
        select(func.count(Case.id)).where(Case.caller_hash == case.caller_hash, Case.id < case.id)
    ) or 0)


def list_cases(db: Database, status: str | None = None, region: str | None = None,
               limit: int = 500, transcription: str | None = None,
               vault: Vault | None = None) -> list[dict[str, Any]]:
    """Newest first; about the caller only region, language and (with `vault`) the intake
    answers, opened for the rows listed.

    `transcription="failed"`: the cases whose words could not be had (no model, bad audio).
    """
    with db.session() as s:
        query = select(Case, Recording).join(Recording, Recording.id == Case.recording_id)
        if status:
            query = query.where(Case.status == status)
        if transcription == "failed":
            failed = select(AuditEntry.id).where(AuditEntry.case_id == Case.id,
                                                 AuditEntry.action.in_(FAILED_ACTIONS)).exists()
            query = query.where(Case.transcript_engine.is_(None),
                                Case.transcribed_at.is_not(None) | (Recording.status == "failed") | failed)
        if region:
            query = query.where(Case.region == region)
        rows = s.execute(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)).all()
        failures = _failures(s, [case.id for case, _rec in rows])
        answers = _answers(vault, [case for case, _rec in rows]) if vault is not None else {}
        return [_summary(case, rec, _repeats(s, case), failures.get(case.id), answers.get(case.id))
                for case, rec in rows]


def _answers(vault: Vault, cases: list[Case]) -> dict[int, dict[str, str]]:
    """The intake answers of these cases (those whose key is gone have none)."""
    opened = vault.open_many("intake", [(c.id, c.data_key_id, c.intake) for c in cases
                                        if c.intake is not None])
    return {case_id: json.loads(raw) for case_id, raw in opened.items()}


def show_case(db: Database, vault: Vault, case_id: int, actor: str,
              now: datetime | None = None) -> dict[str, Any] | None:
    """One case with its transcript decrypted; the reading is audited (at `now`). None if no
    such case."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            return None
        rec = s.get(Recording, case.recording_id, options=[defer(Recording.audio)])  # not the audio
        found = _summary(case, rec, _repeats(s, case), _failures(s, [case.id]).get(case.id),
                         _answers(vault, [case]).get(case.id))
        try:
            sealed = vault.open(case, "transcript")
            found["transcript"] = sealed.decode() if sealed is not None else None
            words = vault.open(case, "transcript_words")
            # [[word, confidence], …] as the model wrote them (spaces included): the console
            # marks the unsure ones. Digits stay digits: nothing is normalised.
            found["transcript_words"] = json.loads(words) if words is not None else None
        except CryptoError as exc:
            found["transcript"], found["transcript_error"] = None, str(exc)
            found["transcript_words"] = None
        found["path"] = _path(vault, case)
        if found["transcript"] is not None:
            s.add(AuditEntry(actor=actor, action="transcript-read", case_id=case.id, at=now or utcnow()))
        if actor == f"operator:{case.operator_id}" and case.acted_at is None:
            case.acted_at = now or utcnow()  # its operator opened it: no re-offer
        found["callbacks"] = [
            {"attempt": a.id, "operator_id": a.operator_id, "started_at": _iso(a.started_at),
             "confirmed_at": _iso(a.confirmed_at),
             "callee_confirmed_at": _iso(a.callee_confirmed_at), "ended_at": _iso(a.ended_at),
             "outcome": a.outcome, "seconds": a.seconds}
            for a in s.scalars(select(CallbackAttempt).where(CallbackAttempt.case_id == case.id)
                               .order_by(CallbackAttempt.id))
        ]
        # Replies for the caller (ivr/replies.py), with their words: only here, never in a list.
        found["replies"] = replies.listing(s, vault, case)
        found["timeline"] = [
            {"at": _iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail,
             "data": json.loads(e.data) if e.data else None}
            for e in s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                               .order_by(AuditEntry.at, AuditEntry.id))
        ]
        return found


def _path(vault: Vault, case: Case) -> list[str] | None:
    """The caller's path before the message (ivr/engine.py PATH events); None when the case
    has none (a call from before paths were kept, a rescued message) or its data is gone."""
    try:
        sealed = vault.open(case, "path")
    except CryptoError:
        return None
    return [str(e) for e in json.loads(sealed)] if sealed is not None else None


def earlier_cases(db: Database, case_id: int) -> list[dict[str, Any]]:
    """The cases from the same number before this one, oldest first: id, status, region,
    operator and day. Nothing decrypted; whoever shows them decides who may open which."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.caller_hash is None:
            return []
        rows = s.execute(select(Case.id, Case.status, Case.region, Case.operator_id, Case.created_at,
                                Case.flag)
                         .where(Case.caller_hash == case.caller_hash, Case.id < case.id)
                         .order_by(Case.id)).all()
    return [{"id": r.id, "status": r.status, "region": r.region, "operator_id": r.operator_id,
             "created_at": _iso(r.created_at), "flag": r.flag or "none"} for r in rows]


def close_case(db: Database, case_id: int, actor: str, reason: str = "") -> None:
    """Close a case; retention counts from here (RETENTION_DAYS). The console and the CLI ask
    for a reason and a confirmation first."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CaseError("no-case", case=case_id)
        if case.status == "closed":
            raise CaseError("case-already-closed", case=case_id)
        move_case(s, case, None, closing=True)
        case.status_reason, case.closed_at = reason or None, utcnow()
        case.status_reason_data = None  # the closer's own words: shown as they are
        case.acted_at = case.acted_at or case.closed_at
        if case.callback_status in ("waiting", "scheduled", "queued"):
            case.callback_status, case.next_callback_at = "none", None
        s.add(AuditEntry(actor=actor, action="closed", case_id=case.id, detail=reason or None))


def reopen_case(db: Database, vault: Vault, case_id: int, actor: str, reason: str = "",
                to: int | None = None) -> int | None:
    """Open a closed case again, while its data is still there; returns its operator now.

    The retention clock stops (`closed_at` is cleared). It goes to `to` when given (an
    operator who reopens it for themselves), else back to the operator it had when it still
    is active, else by the rule (ivr/operators.py), which may leave it unassigned and
    escalated. Either way it is a new assignment: its operator is told and the re-offer
    clock starts (the caller of this queues the SMS). A callback it was waiting for waits
    again. Refused once the data is destroyed (purged), or its key is, by a purge under way.
    """
    from ivr.operators import assign_case

    now = utcnow()
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CaseError(f"no case #{case_id}")
        if case.status != "closed":
            raise CaseError(f"case #{case_id} is not closed")
        if case.purged_at is not None:
            raise CaseError(f"case #{case_id}: its data was destroyed; it cannot be reopened")
        if case.flag == "confirmed":  # closed as a probe (ivr/probes.py): for good
            raise CaseError("confirmed-probe", case=case_id)
        try:
            vault.key_of(case.data_key_id)
        except CryptoError:
            raise CaseError(f"case #{case_id}: its data was destroyed; it cannot be reopened") from None
        previous = case.operator_id
        back = to if to is not None else previous
        op = s.get(Operator, back) if back is not None else None
        case.operator_id = None  # closed: counted nowhere; given again below
        case.status, case.closed_at, case.status_reason = "routed", None, None
        case.routed_at = case.routed_at or now
        if case.callback_status == "none":
            case.callback_status = callback_status(case.consent, case.number is not None)
        s.add(AuditEntry(actor=actor, action="reopened", case_id=case.id, detail=reason or None))
        if op is not None and op.active:
            hand_back(s, case, op.id, said("reopened-own" if to is not None else "reopened-back"),
                      actor, now, acting=to is not None)  # reopened for herself: she knows
            return op.id
    return assign_case(db, case_id, now, actor=actor).operator_id
