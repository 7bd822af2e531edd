"""The probe flag in the console (ivr/probes.py): marking a case, and supervisors' decision.

Who may do what: anyone who may see an open case marks it "possible probe", with a reason;
from then on only supervisors and admins see it (anyone else gets the 404 of a case that is
not theirs) and only they clear the flag or confirm it. While it is flagged, the case's other
actions (callback, take, reassign, outcome, close, reopen) wait for that decision.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from ivr.callbacks import NOTIFY
from ivr.casebook import CaseError
from ivr.console import Console
from ivr.console.views import _, _case, _case_view, bp, now, say, user
from ivr.keys import CryptoError
from ivr.probes import clear_flag, confirm_probe, flag_case, flag_reason, flagged_siblings
from ivr.storage import AuditEntry, Case, OutboxJob

WENT = ("Case #%(case)s was marked as a possible probe and went to the supervisors: it is no longer "
        "in your queue.")
# The case's actions that wait while a supervisor decides (notes do not).
WAITING = {"console.callback", "console.take", "console.reassign", "console.outcome",
           "console.close", "console.reopen", "console.reply"}


def console() -> Console:
    from ivr.console.views import console as found

    return found()


@bp.before_request
def flagged_waits() -> WerkzeugResponse | None:
    """An action on a flagged case: not now (the case page says why)."""
    if request.endpoint not in WAITING or request.method != "POST" or request.view_args is None:
        return None
    case_id = int(request.view_args.get("case_id", 0))
    with console().db.session() as s:
        flag = s.scalar(select(Case.flag).where(Case.id == case_id)) if 0 < case_id < 2**31 else None
    if flag is None:
        return None
    _case(case_id)  # 404 for those who may not see it
    if flag == "probe":
        flash(_("This case is marked as a possible probe: a supervisor clears or confirms it first."))
    else:
        flash(_("This case was confirmed as a probe and is closed for good."))
    return redirect(url_for("console.case_page", case_id=case_id))


def page(c: Console, case: Case) -> dict[str, Any]:
    """What the case page shows of the flag: the reason and who marked it (supervisors), and
    the other cases from the same number that are flagged (supervisors only)."""
    if not user().supervisor:
        return {"flag": case.flag, "flag_reason": None, "flagged_by": None, "same_number_flagged": []}
    try:
        reason = flag_reason(c.vault, case)
    except CryptoError:
        reason = None
    with c.db.session() as s:
        by = s.scalar(select(AuditEntry.actor).where(
            AuditEntry.case_id == case.id, AuditEntry.action == "flagged")
            .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(1)) if case.flag else None
    return {"flag": case.flag, "flag_reason": reason, "flagged_by": by,
            "same_number_flagged": flagged_siblings(c.db, case.id)}


@bp.route("/cases/<int:case_id>/flag", methods=["POST"])
def flag(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """"Possible probe": with a reason, the case goes to supervisors only."""
    _case(case_id)
    reason = request.form.get("reason", "").replace("\x00", "").strip()[:1000]
    if not reason:
        return _case_view(case_id, _("Say why the call looks like a probe: the case was not marked.")), 400
    try:
        flag_case(console().db, console().vault, case_id, user().actor, reason, now())
    except CaseError as exc:
        return _case_view(case_id, say(exc)), 409
    if user().supervisor:
        flash(_("Marked as a possible probe: clear the flag or confirm it."))
        return redirect(url_for("console.case_page", case_id=case_id))
    flash(_(WENT) % {"case": case_id})
    return redirect(url_for("console.queue_page"))


def _supervisor_case(case_id: int) -> None:
    if not user().supervisor:
        abort(404)
    _case(case_id)


@bp.route("/cases/<int:case_id>/unflag", methods=["POST"])
def unflag(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """A supervisor clears the flag: back to its operator, or by the rule (who is told)."""
    _supervisor_case(case_id)
    c = console()
    try:
        given = clear_flag(c.db, case_id, user().actor, now())
    except CaseError as exc:
        return _case_view(case_id, say(exc)), 409
    if given != user().id:
        with c.db.session() as s:
            s.add(OutboxJob(job=NOTIFY, target_id=case_id))  # its operator (or supervisors) told
    flash(_("The flag is cleared: the case is back with the operators."))
    return redirect(url_for("console.case_page", case_id=case_id))


@bp.route("/cases/<int:case_id>/confirm-probe", methods=["POST"])
def confirm(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """A supervisor confirms it: closed as a probe, with the box ticked that says what follows."""
    _supervisor_case(case_id)
    if request.form.get("confirm") != "yes":
        text = _("Tick the box: the case will be closed for good. It was not closed.")
        return _case_view(case_id, text), 400
    try:
        confirm_probe(console().db, case_id, user().actor, now())
    except CaseError as exc:
        return _case_view(case_id, say(exc)), 409
    flash(_("Confirmed as a probe: the case is closed."))
    return redirect(url_for("console.case_page", case_id=case_id))

