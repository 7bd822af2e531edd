"""The console's pages. Thin: they check who is asking, call the domain code, render.

Rules kept here for every route: a case the user may not see is a 404 (never a 403 that
would confirm it exists), in the page, the audio and the JSON; every view of a transcript or
the audio and every action is written to the audit log with who; pages are never cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ivr.callbacks import NOTIFY, CallbackError, start_callback
from ivr.casebook import CaseError, close_case, earlier_cases, reopen_case, show_case
from ivr.console import Console, intake, queries
from ivr.console.auth import (
    AuthError,
    Throttled,
    User,
    check_code,
    check_password,
    end_session,
    enrolling_secret,
    enrollment_uri,
    load_user,
    pending,
    qr_svg,
    start_session,
)
from ivr.console.i18n import LANGUAGE_NAMES, LOCALES, translate
from ivr.console.story import story
from ivr.console.wording import Names, Reader, zone
from ivr.keys import CryptoError
from ivr.operators import (
    MAX_ID,
    NotAllowed,
    OperatorError,
    add_operator,
    assign_case,
    edit_operator,
    may_change,
    may_take,
    move_case,
    take_case,
)
from ivr.probes import flagged_siblings
from ivr.reasons import Said, Told, said
from ivr.replies import MAX_LENGTH as MAX_REPLY
from ivr.replies import ReplyError, add_reply
from ivr.storage import AuditEntry, Call, Case, Note, Operator, OutboxJob, Recording

log = logging.getLogger(__name__)
bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static")
LOW_CONFIDENCE = 0.5  # a word the model gave less than this is marked as unsure
# What the guard against the speech model's failures noticed (ivr/transcribe.py FLAGS).
TRANSCRIPT_FLAGS = {
    "no-speech": "No speech was heard: listen to the recording.",
    "stock-phrase": "Phrases the model invents (subtitle credits and the like) were removed.",
    "sound-caption": "Sound captions the model invents (such as 'music') were removed.",
    "repeated": "A phrase the model repeated over and over is kept once.",
}
LANGUAGE_CODES = ("ru", "uk", "en")  # the callers' languages
OUTCOMES = ("helped", "information given", "surrender arranged", "no contact", "not relevant")
# One listen is one audit entry: the browser fetches a recording in several byte ranges (and
# again on a seek), so a user's requests for a case's audio within this long count as one.
LISTEN = timedelta(minutes=10)
# Where the language switch may send the user back to: a console path and its query, nothing
# that a browser could read as another host or a header (no //, no \\, no control character).
SAFE_NEXT = re.compile(r"/console/(?![/\\])[A-Za-z0-9/_.~%?=&+-]{0,500}")
Handler = TypeVar("Handler", bound=Callable[..., Any])
PUBLIC = {"console.login", "console.code", "console.enroll", "console.static"}


def console() -> Console:
    found: Console = current_app.extensions["ivr.console"]
    return found


def now() -> datetime:
    clock: Callable[[], datetime] | None = current_app.config.get("IVR_CLOCK")
    return clock() if clock else datetime.now(UTC)


def user() -> User:
    found: User = g.user
    return found


def _(message: str) -> str:
    return translate(locale(), message)


def locale() -> str:
    """The signed-in user's language; before that, the one last chosen in this browser."""
    found = getattr(g, "locale", None) or session.get("locale")
    return found if found in LOCALES else "uk"


def reader() -> Reader:
    """The one reading this page: their language and time zone (theirs, else the hotline's)."""
    found: Reader | None = getattr(g, "reader", None)
    if found is None:
        c, who_ = console(), getattr(g, "user", None)
        tz = zone(who_.timezone if who_ else None, c.settings.hotline_timezone)
        names = Names(lambda: dict(queries.eligible(c.db, everyone=True)))
        found = g.reader = Reader(locale(), tz, now(), c.registry.regions, names,
                                  c.policy.daytime)
    return found


def say(exc: Told) -> str:
    """A refusal (CallbackError, CaseError, OperatorError) in the reader's words."""
    return reader().said(exc.said)


# --- every request -----------------------------------------------------------------------------


@bp.before_request
def who() -> WerkzeugResponse | None:
    locale = session.get("locale")
    g.user, g.locale = None, locale if locale in LOCALES else "uk"
    if request.endpoint in PUBLIC:
        return None
    token = session.get("sid")
    idle = timedelta(minutes=console().settings.console_idle_minutes)
    found = load_user(console().db, token, now(), idle)  # the session's row on the server
    if found is None:
        if token is not None and pending(console().db, token, now()) is None:  # not half-way in
            session.clear()
            flash("Your session has ended. Please sign in again.")
        if request.path.startswith("/console/api/"):
            abort(401)
        return redirect(url_for("console.login"))
    g.user, g.locale = found, found.locale
    return None


@bp.after_request
def headers(response: Response) -> Response:
    # No inline script or style anywhere: the policy can say so.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if console().settings.public_base_url.startswith("https://"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


@bp.app_context_processor
def helpers() -> dict[str, Any]:
    r = reader()
    return {"_": _, "me": getattr(g, "user", None), "locales": LOCALES, "r": r, "ago": r.age,
            "safe_hours": r.safe_hours, "intake_tags": _intake_tags, "code_burst": _code_burst}


def _code_burst() -> bool:
    """A burst of wrong case codes raised the alarm within the hour (supervisors see a line)."""
    from ivr.casecode import burst

    return burst(console().db)[1]


def _intake_tags(answers: dict[str, str]) -> list[intake.Tag]:
    return intake.tags(answers, console().registry.fields, getattr(g, "locale", "uk"))


@bp.errorhandler(CSRFError)
def bad_form(_exc: CSRFError) -> tuple[str, int]:
    text = _("The form has expired or was not sent from this console. Please try again.")
    return render_template("error.html", title=_("Forbidden"), text=text), 400


@bp.errorhandler(403)
def forbidden(exc: HTTPException) -> tuple[str, int]:
    return render_template("error.html", title=_("Forbidden"), text=exc.description or ""), 403


@bp.app_errorhandler(404)
def no_such_page(exc: HTTPException) -> HTTPException | tuple[str | Response, int]:
    """A console address that matches no page gets the console's page, in the reader's words."""
    if request.path.startswith("/console/"):
        return not_found(exc)
    return exc


@bp.errorhandler(404)
def not_found(_exc: HTTPException) -> tuple[str | Response, int]:
    if request.path.startswith("/console/api/"):
        return jsonify(error="not found"), 404
    return render_template("error.html", title=_("Not found"),
                           text=_("There is no such page, or it is not yours to see.")), 404


def role(needed: str) -> Callable[[Handler], Handler]:
    """Supervisor or admin pages: anyone else gets 404, as for a case that is not theirs."""
    def wrap(view: Handler) -> Handler:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if needed == "supervisor" and not user().supervisor:
                abort(404)
            if needed == "admin" and not user().admin:
                abort(404)
            return view(*args, **kwargs)
        return checked  # type: ignore[return-value]
    return wrap


def _audit(action: str, case_id: int | None = None, detail: str | None = None) -> None:
    with console().db.session() as s:
        s.add(AuditEntry(actor=user().actor, action=action, case_id=case_id, detail=detail))


def _case(case_id: int) -> Case:
    """The case, or 404 when it does not exist or is not the user's to see."""
    case = _case_or_none(case_id)
    if case is None:
        abort(404)
    return case


def _case_or_none(case_id: int) -> Case | None:
    if not 0 < case_id <= MAX_ID:  # no such row (and PostgreSQL would refuse the number)
        return None
    with console().db.session() as s:
        case = s.get(Case, case_id)
    if case is None or not (user().sees(case.region) or case.operator_id == user().id):
        return None
    if case.flag is not None and not user().supervisor:  # a possible probe: supervisors only
        return None
    return case


# --- signing in --------------------------------------------------------------------------------


def _client() -> str:
    """The client's address: the peer, or with TRUSTED_PROXIES the one the proxies name."""
    return request.remote_addr or "?"


def _refused(template: str, exc: AuthError, **context: Any) -> tuple[str, int, dict[str, str]]:
    """A sign-in step that did not work: 429 and Retry-After when the client must wait."""
    if isinstance(exc, Throttled):
        text = _("too many failed attempts: wait %(seconds)s s and try again") % {
            "seconds": exc.seconds}
        return (render_template(template, error=text, **context), 429,
                {"Retry-After": str(exc.seconds)})
    return render_template(template, error=_(str(exc)), **context), 401, {}


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | WerkzeugResponse | tuple[str, int, dict[str, str]]:
    if request.method == "POST":
        c = console()
        name = request.form.get("name", "").strip()[:80]
        try:
            op_id = check_password(c.db, c.guard, name, request.form.get("password", ""), _client(),
                                   now())
        except AuthError as exc:
            return _refused("login.html", exc, name=name)
        end_session(c.db, session.get("sid"), now())
        session.clear()  # a new token: nothing of an earlier session carries over
        session["sid"] = start_session(c.db, op_id, "pending", now())
        with c.db.session() as s:
            op = s.get(Operator, op_id)
            assert op is not None
            enrolled, session["locale"] = op.totp_enrolled_at is not None, op.locale
        return redirect(url_for("console.code" if enrolled else "console.enroll"))
    return render_template("login.html", error=None, name="")


def _pending() -> int | None:
    return pending(console().db, session.get("sid"), now())


def _signed_in(op_id: int) -> WerkzeugResponse:
    c = console()
    end_session(c.db, session.get("sid"), now())  # the pending stage is over
    locale = session.get("locale", "uk")
    session.clear()
    session.permanent = True
    session.update(sid=start_session(c.db, op_id, "in", now()), locale=locale)
    return redirect(url_for("console.queue_page"))


@bp.route("/login/code", methods=["GET", "POST"])
def code() -> str | WerkzeugResponse | tuple[str, int, dict[str, str]]:
    op_id = _pending()
    if op_id is None:
        return redirect(url_for("console.login"))
    if request.method == "POST":
        c = console()
        try:
            check_code(c.db, c.vault, c.guard, op_id, request.form.get("code", ""), _client(), now())
        except AuthError as exc:
            return _refused("code.html", exc)
        return _signed_in(op_id)
    return render_template("code.html", error=None)


@bp.route("/enroll", methods=["GET", "POST"])
def enroll() -> str | WerkzeugResponse | tuple[str, int, dict[str, str]]:
    op_id = _pending()
    c = console()
    if op_id is None:
        return redirect(url_for("console.login"))
    with c.db.session() as s:
        op = s.get(Operator, op_id)
        assert op is not None
        if op.totp_enrolled_at is not None:
            return redirect(url_for("console.code"))
        name = op.name
    # Kept sealed in the pending session's row on the server, never in the cookie.
    secret = enrolling_secret(c.db, c.vault, session["sid"], now())
    if secret is None:
        return redirect(url_for("console.login"))
    uri = enrollment_uri(secret, name)
    if request.method == "POST":
        try:
            check_code(c.db, c.vault, c.guard, op_id, request.form.get("code", ""), _client(), now(),
                       enrolling_secret=secret)
        except AuthError as exc:
            return _refused("enroll.html", exc, qr=qr_svg(uri), secret=secret)
        return _signed_in(op_id)
    return render_template("enroll.html", qr=qr_svg(uri), secret=secret, error=None)


@bp.route("/logout", methods=["POST"])
def logout() -> WerkzeugResponse:
    _audit("signed-out")
    end_session(console().db, session.get("sid"), now())  # every copy of the cookie is void
    session.clear()
    return redirect(url_for("console.login"))


@bp.route("/language", methods=["POST"])
def language() -> WerkzeugResponse:
    chosen = request.form.get("locale", "")
    if chosen in LOCALES:
        with console().db.session() as s:
            op = s.get(Operator, user().id)
            assert op is not None
            op.locale = chosen
        session["locale"] = chosen
    # Back to the page the form was on (`next`: browsers send no Referer, see base.html).
    back = request.form.get("next", "")
    return redirect(back if SAFE_NEXT.fullmatch(back) else url_for("console.queue_page"))


# --- the queue and a case ------------------------------------------------------------------------


def _word(text: str | None) -> str | None:
    """A region or language name from a query, or None: nothing a database could refuse."""
    return text if text and re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", text) else None


def _filters() -> dict[str, Any]:
    show = request.args.get("show", "open")
    raw = request.args.get("q", "").strip().lstrip("#")
    shows = ("open", "closed", "mine", "all", "flagged") if user().supervisor else \
        ("open", "closed", "mine", "all")
    return {"show": show if show in shows else "open",
            "region": _word(request.args.get("region")),
            "language": _word(request.args.get("language")),
            "case_id": int(raw) if re.fullmatch(r"[0-9]{1,9}", raw) else None,
            "intake": intake.parse_filter(request.args.get("intake"), console().registry.fields)}


def _queue(filters: dict[str, Any]) -> list[queries.Row]:
    """The queue's rows with their intake answers opened (and urgent ones overdue sooner)."""
    c = console()
    return queries.queue(c.db, user(), now(), c.policy.reoffer_after, vault=c.vault,
                         urgent_after=c.policy.urgent_reoffer_after, **filters)


def _line(field: str, longest: int) -> str:
    """A one-line form field, without control characters (PostgreSQL refuses NUL)."""
    return "".join(ch for ch in request.form.get(field, "") if ch >= " ").strip()[:longest]


@bp.route("/")
def queue_page() -> str:
    c = console()
    filters = _filters()
    rows = _queue(filters)
    figures = queries.counts(c.db, user(), now(), c.policy.reoffer_after, c.policy.urgent_reoffer_after)
    regions = sorted(r.name for r in c.registry.regions.regions)
    return render_template("queue.html", rows=rows, figures=figures, filters=filters,
                           regions=regions if user().supervisor else sorted(user().regions),
                           languages=LANGUAGE_CODES,
                           intake_choices=intake.choices(c.registry.fields, g.locale))


@bp.route("/cases/<int:case_id>")
def case_page(case_id: int) -> str:
    return _case_view(case_id)


def _case_view(case_id: int, error: str | None = None, reason: str = "", **extra: Any) -> str:
    """The case page; `error` (a refused action, said next to its form) and the reason typed;
    `extra`: what another form says next to itself (a refused reply and its words)."""
    c = console()
    _case(case_id)
    found = show_case(c.db, c.vault, case_id, actor=user().actor, now=now())
    assert found is not None
    with c.db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        notes = []
        for note in s.scalars(select(Note).where(Note.case_id == case_id).order_by(Note.at)):
            author = s.get(Operator, note.operator_id) if note.operator_id else None
            try:
                text = c.vault.open_note(case, note)
            except CryptoError:
                text = None
            notes.append({"at": note.at, "who": author.name if author else "?", "text": text})
        operator = s.get(Operator, case.operator_id) if case.operator_id else None
        me = s.get(Operator, user().id)
        call = s.get(Call, case.call_id)
        timeline = list(found["timeline"])
        if call is not None:  # the timeline starts with the call itself
            timeline.insert(0, {"at": call.started_at, "actor": "caller", "action": "call",
                                "seconds": call.seconds})
        has_audio = bool(s.scalar(select(Recording.audio.is_not(None))  # not the audio itself
                                  .where(Recording.id == case.recording_id)))
    # Each word of the transcript, marked when the model was less sure of it than LOW_CONFIDENCE.
    # The space before a word stays outside its mark, so a marked word is marked alone.
    words = [(w[:len(w) - len(w.lstrip())], w.lstrip(), p < LOW_CONFIDENCE)
             for w, p in found.get("transcript_words") or []]
    answers = intake.facts(found["intake"], c.registry.fields, g.locale)
    earlier = earlier_cases(c.db, case_id)
    # Links only to the cases the reader may open; the others are a count (the JSON and
    # `ivr cases show` say as much: earlier_cases_from_same_number).
    mine = [e for e in earlier if (user().sees(e["region"]) or e["operator_id"] == user().id)
            and (e["flag"] == "none" or user().supervisor)]
    unassigned = case.operator_id is None and case.status != "closed"
    return render_template(
        "case.html", case=found, notes=notes, outcomes=OUTCOMES, words=words,
        timeline=reader().timeline(timeline), route_reason=case.route_reason_data,
        status_reason=case.status_reason_data,
        state=reader().state(case.status, operator.name if operator else None),
        intake_facts=answers,
        flag_texts=TRANSCRIPT_FLAGS, operator=operator.name if operator else None,
        has_audio=has_audio, caller_tz=case.caller_tz, outcome=case.outcome,
        eligible=queries.eligible(c.db) if user().supervisor else [], error=error, reason=reason,
        retention_days=c.settings.retention_days, earlier=mine,
        hidden=len([e for e in earlier if e not in mine and (e["flag"] == "none" or user().supervisor)]),
        story=story(found.get("path"), case.language, found.get("recording_seconds"), _,
                    LANGUAGE_NAMES.get(user().locale, LANGUAGE_NAMES["en"])),
        may_take=unassigned and me is not None and may_take(me, case.region, case.language),
        unassigned=unassigned, **probe.page(c, case),
        reopenable=case.status == "closed" and case.purged_at is None and case.flag != "confirmed",
        reply_most=MAX_REPLY, **extra)


@bp.route("/cases/<int:case_id>/audio")
def audio(case_id: int) -> Response:
    """The recording, decrypted for this request only: never cached, never at a public URL."""
    c = console()
    case = _case(case_id)
    with c.db.session() as s:
        rec = s.get(Recording, case.recording_id)
        try:
            wav = c.vault.open_audio(case, rec) if rec is not None else None
        except CryptoError:
            wav = None
    if wav is None:
        abort(404)
    with c.db.session() as s:
        heard = s.scalar(select(AuditEntry.id).where(
            AuditEntry.case_id == case_id, AuditEntry.actor == user().actor,
            AuditEntry.action == "audio-played", AuditEntry.at >= now() - LISTEN).limit(1))
        if heard is None:  # the first request of this listen
            s.add(AuditEntry(actor=user().actor, action="audio-played", case_id=case_id, at=now()))
    response = Response(wav, mimetype="audio/wav")
    response.headers["Content-Disposition"] = "inline"
    # Byte ranges: without them a browser cannot seek in the recording (it stays at 0:00).
    response.make_conditional(request, accept_ranges=True, complete_length=len(wav))
    return response


@bp.route("/cases/<int:case_id>/callback", methods=["POST"])
def callback(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    from ivr.jobs import telephony_for

    c = console()
    case = _case(case_id)
    if case.operator_id is None and user().supervisor and case.status != "closed":
        # The callback rings the case's operator: a supervisor takes it or names one first.
        flash(_("This case has no operator yet: take it or assign it to someone, then call back."))
        return redirect(url_for("console.case_page", case_id=case_id))
    if case.operator_id is None and not user().supervisor and case.status != "closed":
        # The callback rings the case's operator: she takes it, if it is hers to take.
        try:
            take_case(c.db, case_id, user().id, now(), actor=user().actor)
        except OperatorError as exc:
            return _take_refused(case_id, exc)
    elif case.operator_id != user().id and not user().supervisor and case.status != "closed":
        # Another operator's case: she takes it over to call back (the audit log says so).
        _reassign(case_id, user().id, said("took-to-call-back", name=user().name))
    if c.telephony is None:
        c.telephony = telephony_for(c.settings)
    try:
        start_callback(c.db, c.vault, c.telephony, c.settings.public_base_url, c.policy, case_id,
                       now(), actor=user().actor)
        flash(_("Calling your phone now."))
    except CallbackError as exc:
        flash(say(exc))
    return redirect(url_for("console.case_page", case_id=case_id))


@bp.route("/cases/<int:case_id>/take", methods=["POST"])
def take(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """"Take this case": an unassigned case in the user's regions and languages becomes theirs."""
    _case(case_id)
    try:
        take_case(console().db, case_id, user().id, now(), actor=user().actor)
    except OperatorError as exc:
        return _take_refused(case_id, exc)
    flash(_("The case is yours now."))
    return redirect(url_for("console.case_page", case_id=case_id))


def _take_refused(case_id: int, exc: OperatorError) -> tuple[str, int]:
    """The case page, saying in words why it could not be taken."""
    if isinstance(exc, NotAllowed):
        text = _("This case is not in your regions and languages: a supervisor can assign it.")
        return _case_view(case_id, text), 403
    words = {"the case is closed": _("The case is closed."),
             "the case was taken by someone else meanwhile": _("Someone else took this case a moment ago.")}
    return _case_view(case_id, words.get(str(exc), _("The case could not be taken."))), 409


@bp.route("/cases/<int:case_id>/note", methods=["POST"])
def note(case_id: int) -> WerkzeugResponse:
    c = console()
    case = _case(case_id)
    text = request.form.get("text", "").replace("\x00", "").strip()[:4000]
    if text:
        with c.db.session() as s:
            row = Note(case_id=case_id, operator_id=user().id, at=now())
            s.add(row)
            s.flush()
            row.text = c.vault.seal_note(case, row, text)
            s.add(AuditEntry(actor=user().actor, action="note-added", case_id=case_id))
            found = s.get(Case, case_id)
            if found is not None and found.operator_id == user().id and found.acted_at is None:
                found.acted_at = now()
        flash(_("Saved."))
    return redirect(url_for("console.case_page", case_id=case_id))


@bp.route("/cases/<int:case_id>/reply", methods=["POST"])
def reply(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """A reply for the caller, read to them when they call with their code (ivr/replies.py).
    Refused (empty, too long, data destroyed): the page again, with the words typed kept."""
    c = console()
    _case(case_id)
    text = request.form.get("text", "")
    try:
        add_reply(c.db, c.vault, case_id, text, actor=user().actor, operator_id=user().id, now=now())
    except ReplyError as exc:
        code = 409 if exc.said.code == "reply-data-destroyed" else 400
        return _case_view(case_id, reply_error=say(exc), reply_text=text[:2 * MAX_REPLY]), code
    flash(_("Reply saved: the caller hears it when they call with their code."))
    return redirect(url_for("console.case_page", case_id=case_id))


@bp.route("/cases/<int:case_id>/outcome", methods=["POST"])
def outcome(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    _case(case_id)
    chosen = request.form.get("outcome", "")
    if chosen not in OUTCOMES:  # the list starts empty: nothing chosen is not "helped"
        return _case_view(case_id, _("Choose an outcome first: nothing was saved.")), 400
    with console().db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.outcome = chosen
        case.acted_at = case.acted_at or now()
        s.add(AuditEntry(actor=user().actor, action="outcome", case_id=case_id, detail=chosen))
    flash(_("Saved."))
    return redirect(url_for("console.case_page", case_id=case_id))


def _reassign(case_id: int, operator_id: int | None, why: Said) -> None:
    c = console()
    with c.db.session() as s:
        case = s.get(Case, case_id)
        op = s.get(Operator, operator_id) if operator_id is not None else None
        if case is None or (operator_id is not None and (op is None or not op.active)):
            abort(400)
        move_case(s, case, operator_id)
        case.assigned_at = now()
        case.route_reason, case.route_reason_data = why.english()[:300], why.dumps()
        case.notified_at = None
        case.acted_at = now() if operator_id == user().id else None
        s.add(AuditEntry(actor=user().actor, action="reassigned", case_id=case_id,
                         **Said("reassigned-to", {**why.values, "operator": operator_id},
                                ((": ", why.code),)).entry()))


@bp.route("/cases/<int:case_id>/reassign", methods=["POST"])
def reassign(case_id: int) -> WerkzeugResponse:
    """A supervisor names the operator; an operator passes it on by the rule (not to self)."""
    c = console()
    case = _case(case_id)
    target = request.form.get("operator_id", "")
    if user().supervisor and re.fullmatch(r"[0-9]{1,9}", target):
        _reassign(case_id, int(target), said("reassigned-by-supervisor", name=user().name))
    else:
        offered = frozenset(int(x) for x in (case.offered_to or "").split(",") if x) | {user().id}
        try:
            assign_case(c.db, case_id, now(), actor=user().actor, exclude=offered)
        except OperatorError:
            abort(404)
    with c.db.session() as s:
        s.add(OutboxJob(job=NOTIFY, target_id=case_id))  # the new operator is told
    flash(_("Saved."))
    found = _case_or_none(case_id)
    return redirect(url_for("console.case_page", case_id=case_id) if found else url_for("console.queue_page"))


@bp.route("/cases/<int:case_id>/close", methods=["POST"])
def close(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """Close, with a reason and the box ticked that says what closing starts (no script: the
    CSP forbids inline script, so the confirmation is the server's)."""
    _case(case_id)
    reason = _line("reason", 200)
    if not reason:
        return _case_view(case_id, _("Say why the case is closed: it was not closed.")), 400
    if request.form.get("confirm") != "yes":
        text = _("Tick the box: the case's data will be destroyed. It was not closed.")
        return _case_view(case_id, text, reason), 400
    try:
        close_case(console().db, case_id, user().actor, reason)
    except CaseError:
        flash(_("The case was already closed."))
    else:
        flash(_("The case is closed."))
    return redirect(url_for("console.case_page", case_id=case_id))


@bp.route("/cases/<int:case_id>/reopen", methods=["POST"])
def reopen(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """Back into the queue while its data is still there: an operator who reopens it keeps it
    (when it is in their regions and languages); a supervisor gives it back to its operator,
    or by the rule."""
    c = console()
    case = _case(case_id)
    reason = _line("reason", 200)
    if not reason:
        return _case_view(case_id, _("Say why the case is reopened: it was not reopened.")), 400
    to = None
    if not user().supervisor:
        with c.db.session() as s:
            me = s.get(Operator, user().id)
            if me is not None and may_take(me, case.region, case.language):
                to = me.id
    try:
        given = reopen_case(c.db, c.vault, case_id, user().actor, reason, to=to)
    except CaseError as exc:
        text = (_("Its data has been destroyed: the case cannot be reopened.") if "destroyed" in str(exc)
                else _("The case is not closed."))
        return _case_view(case_id, text), 409
    if given != user().id:
        with c.db.session() as s:
            s.add(OutboxJob(job=NOTIFY, target_id=case_id))  # its operator (or supervisors) told
    flash(_("The case is open again."))
    found = _case_or_none(case_id)
    return redirect(url_for("console.case_page", case_id=case_id) if found else url_for("console.queue_page"))


# --- JSON -------------------------------------------------------------------------------------


@bp.route("/api/cases")
def api_cases() -> Response:
    rows = _queue(_filters())
    return jsonify([{"id": r.id, "status": r.status, "region": r.region, "language": r.language,
                     "created_at": r.created_at.isoformat(timespec="seconds"),
                     "callback_attempts": r.attempts, "operator_id": r.operator_id,
                     "consent": r.consent, "callback_status": r.callback_status, "overdue": r.overdue,
                     "intake": dict(r.intake), "urgent": r.urgent, "flag": r.flag or "none"}
                    for r in rows])


@bp.route("/api/cases/<int:case_id>")
def api_case(case_id: int) -> Response:
    c = console()
    _case(case_id)
    found = show_case(c.db, c.vault, case_id, actor=user().actor, now=now())
    assert found is not None
    if user().supervisor:  # other cases from the same number marked as possible probes
        found["same_number_as_flagged"] = flagged_siblings(c.db, case_id)
    return jsonify(found)


# --- supervisors and admins ---------------------------------------------------------------------


@bp.route("/operators")
@role("supervisor")
def operators_page() -> str:
    return _operators_page(None)


def _operators_page(error: str | None) -> str:
    """Every operator; the forms only for those the user may change, the number for admins."""
    c = console()
    return render_template("operators.html", operators=queries.operators(c.db), error=error,
                           roles=_roles(), may=lambda op: may_change(user().role, user().id, op),
                           regions=sorted(c.registry.regions.names()), languages=LANGUAGE_CODES)


@bp.route("/operators/<int:operator_id>/duty", methods=["POST"])
@role("supervisor")
def duty(operator_id: int) -> WerkzeugResponse:
    c = console()
    try:
        edit_operator(c.db, c.vault, operator_id, user().actor, by=user().role, by_id=user().id,
                      on_duty=request.form.get("on_duty") == "1")
    except NotAllowed as exc:
        abort(403, _(str(exc)))
    except OperatorError:
        abort(404)
    flash(_("Saved."))
    return redirect(url_for("console.operators_page"))


@bp.route("/operators", methods=["POST"])
@role("supervisor")
def operator_add() -> WerkzeugResponse | tuple[str, int]:
    c = console()
    f = request.form
    try:
        add_operator(c.db, c.vault, name=_line("name", 80), number=f.get("number", "").strip(),
                     languages=",".join(f.getlist("languages")), regions=",".join(f.getlist("regions")),
                     timezone=f.get("timezone", "Europe/Kyiv").strip(), hours=f.get("hours", "always"),
                     capacity=_int(f.get("capacity", "5")), role=_role(f.get("role", "operator")),
                     actor=user().actor, by=user().role)
    except NotAllowed as exc:
        abort(403, _(str(exc)))
    except OperatorError as exc:
        return _operators_page(say(exc)), 400
    flash(_("Saved."))
    return redirect(url_for("console.operators_page"))


@bp.route("/operators/<int:operator_id>", methods=["POST"])
@role("supervisor")
def operator_edit(operator_id: int) -> WerkzeugResponse | tuple[str, int]:
    """The same changes as `ivr operators edit`, by the same rules (ivr/operators.py); the
    number (an admin's act) only when a new one is given."""
    c = console()
    f = request.form
    try:
        edit_operator(c.db, c.vault, operator_id, user().actor, by=user().role, by_id=user().id,
                      sms=_sms, number=f.get("number", "").strip() or None,
                      languages=",".join(f.getlist("languages")) or None,
                      regions=",".join(f.getlist("regions")) or None,
                      timezone=(f.get("timezone") or "").strip() or None,
                      hours=f.get("hours") or None, capacity=_int(f.get("capacity", "")) or None,
                      role=_role(f.get("role", "")) if f.get("role") else None,
                      active=f.get("active") == "1")
    except NotAllowed as exc:
        abort(403, _(str(exc)))
    except OperatorError as exc:
        if "no operator" in str(exc):
            abort(404)
        return _operators_page(say(exc)), 400
    flash(_("Saved."))
    return redirect(url_for("console.operators_page"))


def _sms(to: str, body: str) -> str:
    from ivr.jobs import telephony_for

    c = console()
    if c.telephony is None:
        c.telephony = telephony_for(c.settings)
    return c.telephony.send_sms(to, body)


def _int(text: str) -> int:
    return int(text.strip()) if re.fullmatch(r"[0-9]{1,9}", text.strip()) else 0


def _roles() -> tuple[str, ...]:
    """A supervisor may name operators and supervisors; only an admin makes admins."""
    return ("operator", "supervisor", "admin") if user().admin else ("operator", "supervisor")


def _role(text: str) -> str:
    if text not in _roles():
        raise OperatorError("bad-role", roles=", ".join(_roles()))
    return text


@bp.route("/audit")
@role("supervisor")
def audit_page() -> str:
    return render_template("audit.html", entries=queries.audit(console().db))


@bp.route("/flows")
@role("admin")
def flows_page() -> str:
    from ivr.flow import dot

    registry = console().registry
    status = registry.status()
    graphs = {}
    for item in status:
        try:
            graphs[item.id] = _svg(dot(registry.get(item.id, None)))
        except Exception:
            graphs[item.id] = None
    return render_template("flows.html", flows=status, graphs=graphs,
                           problems=[str(p) for p in registry.problems])


def _svg(dot_source: str) -> str | None:
    """The flow graph as a picture, when Graphviz's `dot` is installed (Debian: graphviz)."""
    import shutil
    import subprocess

    if shutil.which("dot") is None:
        return None
    done = subprocess.run(["dot", "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=10)
    svg = done.stdout
    return svg[svg.index("<svg"):] if done.returncode == 0 and "<svg" in svg else None


@bp.route("/dashboard")
def dashboard() -> str:
    c, r = console(), reader()
    figures = queries.dashboard(c.db, user(), now(), c.policy.reoffer_after,
                                 c.policy.urgent_reoffer_after, r.tz)
    for key, name in (("regions", r.region), ("call_regions", r.region), ("languages", r.language)):
        figures[key] = [(name(code if code != "?" else None), n) for code, n in figures[key]]
    return render_template("dashboard.html", figures=figures)


from ivr.console import probe  # noqa: E402  (its routes and guard on this blueprint)
