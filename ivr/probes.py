"""The probe flag: a call that looks like an intelligence probe goes to supervisors only.

Any operator who may see an open case marks it "possible probe", with a reason in their own
words (sealed under the case's key, like a note: it may quote the caller). The case then
leaves every operator's queue (to them it is a 404, as a case of another region) and its
operator's load; what was planned for the caller stops: a callback waiting or scheduled is
cancelled, a callback ringing now is not bridged (ivr/callbacks.py checks the flag at each
webhook), no SMS goes out about it, and neither the re-offer nor the backstop routes it.
Supervisors see it in their queue (the "flagged" filter and figure) and decide:

- clear: back to normal, to the operator it had (when still active) or by the rule, who is
  told by SMS as for any new assignment; callbacks it waited for wait again;
- confirm: closed as a probe. Retention applies as to any closed case (RETENTION_DAYS after
  closing its data is destroyed, the reason too); it cannot be reopened, and its case code
  stops working (`code_accepted`).

The flag is `Case.flag`: None (shown as "none"), "probe" or "confirmed". Every step is in the
audit log with who; the reason is never in it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from ivr.casebook import CaseError
from ivr.operators import OPEN_STATUSES, assign_case, hand_back, move_case
from ivr.reasons import said
from ivr.storage import AuditEntry, Case, CodeEntry, Database, Operator, Vault, utcnow
from ivr.voicemail import callback_status

FLAGS = ("none", "probe", "confirmed")  # as `ivr cases show --json` and the console's JSON say
PENDING_CALLBACKS = ("waiting", "scheduled", "queued")
LONGEST_REASON = 1000


def flag_of(case: Any) -> str:
    """A case's (or a row's) flag in words: none, probe or confirmed."""
    return case.flag or "none"


def code_accepted(case: Case) -> bool:
    """Whether the case's code may still open it for the caller: until its data is destroyed
    (a closed case too: a follow-up reopens it), never once it is confirmed as a probe, whose
    code and PIN hashes are dropped (ivr/casecode.py then finds nothing)."""
    return (case.flag != "confirmed" and case.purged_at is None and case.code_hash is not None
            and case.pin_hash is not None)


def flag_case(db: Database, vault: Vault, case_id: int, actor: str, reason: str,
              now: datetime | None = None) -> None:
    """Mark an open case a possible probe: it goes to supervisors only (see the module)."""
    now = now or utcnow()
    reason = reason.replace("\x00", "").strip()[:LONGEST_REASON]
    if not reason:
        raise CaseError("no-flag-reason")
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CaseError("no-case", case=case_id)
        if case.status not in OPEN_STATUSES:
            raise CaseError("case-closed", case=case_id)
        if case.flag is not None:
            raise CaseError("flagged-case", case=case_id)
        case.flag, case.flagged_from = "probe", case.operator_id
        case.flag_reason = vault.seal(case, "flag_reason", reason.encode())
        move_case(s, case, None)  # out of its operator's queue and load
        why = said("flagged-to-supervisors")
        case.route_reason, case.route_reason_data = why.english(), why.dumps()
        stopped = case.callback_status in PENDING_CALLBACKS
        if stopped:
            case.callback_status, case.next_callback_at = "none", None
        s.add(AuditEntry(actor=actor, action="flagged", case_id=case_id, at=now,
                         **(said("callbacks-stopped").entry() if stopped else {})))


def flag_reason(vault: Vault, case: Case) -> str | None:
    """The operator's reason, opened for a supervisor (None: no flag, or its data is gone)."""
    sealed = vault.open(case, "flag_reason") if case.flag_reason is not None else None
    return sealed.decode() if sealed is not None else None


def clear_flag(db: Database, case_id: int, actor: str, now: datetime | None = None) -> int | None:
    """Back to normal: to the operator it had when still active, else by the rule. Returns its
    operator now (None: unassigned, escalated). The caller of this queues the SMS (NOTIFY)."""
    now = now or utcnow()
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CaseError("no-case", case=case_id)
        if case.flag != "probe":
            raise CaseError("not-flagged", case=case_id)
        former = s.get(Operator, case.flagged_from) if case.flagged_from is not None else None
        case.flag = case.flag_reason = case.flagged_from = None
        if case.callback_status == "none":  # what it waited for before, it waits for again
            case.callback_status = callback_status(case.consent, case.number is not None)
        s.add(AuditEntry(actor=actor, action="flag-cleared", case_id=case_id, at=now))
        if former is not None and former.active:
            hand_back(s, case, former.id, said("flag-cleared-back"), actor, now)
            case.status, case.routed_at = "routed", case.routed_at or now
            return former.id
    return assign_case(db, case_id, now, actor=actor).operator_id


def confirm_probe(db: Database, case_id: int, actor: str, now: datetime | None = None) -> None:
    """Close a flagged case as a probe: retention counts from now; it is never reopened."""
    now = now or utcnow()
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CaseError("no-case", case=case_id)
        if case.flag != "probe":
            raise CaseError("not-flagged", case=case_id)
        case.flag = "confirmed"
        move_case(s, case, None, closing=True)
        why = said("closed-as-probe")
        case.status_reason, case.status_reason_data = why.english(), why.dumps()
        case.closed_at, case.acted_at = now, case.acted_at or now
        case.callback_status, case.next_callback_at = "none", None
        # Its code stops working: the hashes that found it and checked its PIN are gone.
        case.code_hash = case.pin_hash = case.code_locked_until = None
        s.execute(delete(CodeEntry).where(CodeEntry.case_id == case_id))
        s.add(AuditEntry(actor=actor, action="probe-confirmed", case_id=case_id, at=now))
        s.add(AuditEntry(actor=actor, action="closed", case_id=case_id, at=now, **why.entry()))


def flagged_siblings(db: Database, case_id: int) -> list[int]:
    """Other cases from the same number (the repeat-caller hash) that are flagged or
    confirmed probes. Only as long as both keep the hash: a purge removes it."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.caller_hash is None:
            return []
        return list(s.scalars(select(Case.id).where(
            Case.caller_hash == case.caller_hash, Case.id != case_id, Case.flag.is_not(None))
            .order_by(Case.id)))
