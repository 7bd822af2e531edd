"""After a case is routed: telling its operator, re-offering it, and calling the caller back.

The order of things for a case (each step commits on its own, and is skipped when done):
1. `route` hands a new case to the rule (ivr/operators.py) once it is transcribed;
2. `notify` tells the operator by SMS (a case number and a console link, never the caller's
   number or words), or, when nobody could take it, every supervisor;
3. `reoffer_due` (the worker's housekeeper, each minute) passes a case its operator has not
   acted on within REOFFER_MINUTES to the next operator;
4. `start_callback` rings the operator from the hotline number; `OperatorLeg` answers that
   call's webhooks: a whisper (case, language, region), press 1, then
   `<Dial callerId answerOnBridge>` to the caller (handed out once per attempt), whose number
   only Twilio and this process ever see; whoever answers that phone hears a neutral question
   and must press 1 before the bridge (a machine hears nothing); the outcome lands on a
   `CallbackAttempt`, and a failed try is scheduled again inside the caller's consent window
   (`due_callbacks`), up to a limit.

Nobody is called without consent: the flow's `callback` variable (any, day or none) is kept
on the case, and no answer counts as none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ivr.operators import Candidate, Choice, OperatorError, assign_case, candidates, choose, supervisors
from ivr.providers import ProviderError
from ivr.reasons import Told, said
from ivr.storage import AuditEntry, CallbackAttempt, Case, Database, Operator, OutboxJob, Vault, utcnow
from ivr.voicemail import Retryable

log = logging.getLogger(__name__)

NOTIFY, CALLBACK = "notify_case", "callback_case"  # outbox job names (ivr/jobs.py runs them)
ANSWERED = "answered"
# What Twilio's status callback says of the operator's leg, as an attempt's outcome.
OPERATOR_OUTCOMES = {"busy": "operator-busy", "no-answer": "operator-no-answer",
                     "failed": "operator-failed", "canceled": "operator-no-answer"}
DIAL_OUTCOMES = {"completed": ANSWERED, "answered": ANSWERED, "busy": "busy",
                 "no-answer": "no-answer", "failed": "failed", "canceled": "canceled"}


class CallbackError(Told):
    """A callback that must not happen now, said in one line for the operator."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings callbacks follow (CALLBACK_DAYTIME, CALLBACK_RETRY_MINUTES, …)."""

    daytime: tuple[int, int] = (9 * 60, 21 * 60)  # minutes of the caller's local day
    retry_minutes: tuple[int, ...] = (15, 60, 240)  # waits after the 1st, 2nd, 3rd failed try
    reoffer_after: timedelta = timedelta(minutes=30)
    ring_timeout: int = 25  # seconds the operator's phone rings
    urgent_reoffer_after: timedelta = timedelta(minutes=10)  # URGENT_REOFFER_MINUTES

    @property
    def max_attempts(self) -> int:
        return len(self.retry_minutes) + 1


@dataclass(frozen=True, slots=True)
class Telephony:
    """Twilio's REST side as callbacks need it (TwilioProvider in production, the stand-in in
    tests): both send from the hotline's own number."""

    send_sms: Callable[[str, str], str]  # (to, body) -> message sid
    place_call: Callable[[str, str, str, int], str]  # (to, answer url, status url, timeout) -> sid


# --- the consent window (pure) ---------------------------------------------------------------


def in_window(consent: str | None, tz: str, now: datetime, daytime: tuple[int, int]) -> bool:
    """May the caller be called at `now`? `any`: yes; `day`: in daytime, their time; else no."""
    if consent == "any":
        return True
    if consent != "day":
        return False
    local = now.astimezone(ZoneInfo(tz))
    minute = local.hour * 60 + local.minute
    return daytime[0] <= minute < daytime[1]


def next_in_window(consent: str | None, tz: str, after: datetime,
                   daytime: tuple[int, int]) -> datetime | None:
    """The first moment from `after` the caller may be called; None when never."""
    if consent not in ("any", "day"):
        return None
    if in_window(consent, tz, after, daytime):
        return after
    zone = ZoneInfo(tz)
    local = after.astimezone(zone)
    day: date = local.date()
    if local.hour * 60 + local.minute >= daytime[0]:
        day += timedelta(days=1)
    opens = datetime.combine(day, time(daytime[0] // 60, daytime[0] % 60), tzinfo=zone)
    return opens.astimezone(after.tzinfo)


def describe_window(consent: str | None, tz: str, daytime: tuple[int, int]) -> str:
    if consent == "any":
        return "any time"
    if consent == "day":
        return f"daytime {_hhmm(daytime[0])}-{_hhmm(daytime[1])} {tz}"
    return "no callback"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def ring_list(found: list[Candidate], region: str, language: str, now: datetime,
              limit: int) -> list[int]:
    """Operators a live transfer rings at once: the same match as a case (region, language,
    on duty in their hours), least loaded first; capacity is for cases, not live calls."""
    ready = [c for c in found if region in c.regions and language in c.languages
             and c.on_duty and c.hours.is_open(now)]
    never = datetime.min.replace(tzinfo=now.tzinfo)
    ready.sort(key=lambda c: (c.open_cases, c.last_assigned_at or never, c.id))
    return [c.id for c in ready[:limit]]


def live_numbers(db: Database, vault: Vault, region: str, language: str, now: datetime,
                 limit: int) -> tuple[str, ...]:
    """The numbers a live transfer rings for a caller of `region` speaking `language`."""
    ids = ring_list(candidates(db, region, language), region, language, now, limit)
    if not ids:
        return ()
    with db.session() as s:
        ops = {op.id: op for op in s.scalars(select(Operator).where(Operator.id.in_(ids)))}
        return tuple(vault.open_operator_number(ops[i]) for i in ids)


# --- routing and notifying --------------------------------------------------------------------


def route(db: Database, case_id: int, now: datetime | None = None) -> Choice | None:
    """Assign a new case once (the worker's last stage); None when it was routed before."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.routed_at is not None or case.status == "closed" \
                or case.flag is not None:
            return None
    choice = assign_case(db, case_id, now)
    if choice.operator_id is not None:
        with db.session() as s:
            _offered(s, case_id, choice.operator_id)
            op = s.get(Operator, choice.operator_id)
            log.info("case %s: routed to %s", case_id, op.name if op else f"operator {choice.operator_id}")
    else:
        log.info("case %s: no operator to route it to (%s)", case_id, choice.reason)
    return choice


def _offered(s: Session, case_id: int, operator_id: int) -> None:
    case = s.get(Case, case_id)
    assert case is not None
    ids = [x for x in (case.offered_to or "").split(",") if x]
    if str(operator_id) not in ids:
        case.offered_to = ",".join([*ids, str(operator_id)])[-300:].lstrip(",")


def console_link(base_url: str, case_id: int) -> str:
    return f"{base_url}/console/cases/{case_id}"


# What an operator's phone reads, in the language they chose for the console (Operator.locale):
# a case number, a link and for supervisors the region and language, nothing of the caller.
CASE_SMS = {"uk": "Гаряча лінія: справа {case} тепер ваша. Відкрийте її: {link}",
            "en": "Hotline: case {case} is yours. Open it: {link}"}
ESCALATION_SMS = {
    "uk": "Гаряча лінія: справу {case} ({region}, {language}) не може взяти жоден оператор на зміні. "
          "Призначте її: {link}",
    "en": "Hotline: case {case} ({region}, {language}) has no operator on duty. Please assign it: "
          "{link}",
}
LANGUAGE_WORDS = {"uk": {"ru": "російська", "uk": "українська", "en": "англійська"},
                  "en": {"ru": "Russian", "uk": "Ukrainian", "en": "English"}}
Titles = Callable[[str, str], str]  # (region, locale) -> the region's name for that reader


def _sms(texts: dict[str, str], locale: str | None, **values: object) -> str:
    return texts.get(locale or "uk", texts["en"]).format(**values)


def _plain(region: str, _locale: str) -> str:
    return region


def _language(code: str | None, locale: str | None) -> str:
    words = LANGUAGE_WORDS.get(locale or "uk", LANGUAGE_WORDS["en"])
    return words.get(code or "", code or "?")


def notify(db: Database, vault: Vault, tel: Telephony, base_url: str, case_id: int,
           now: datetime | None = None, titles: Titles | None = None) -> int:
    """Tell the case's operator, or every supervisor when it has none; once per assignment.

    The SMS says a case number and where to open it, nothing of the caller. Returns how many
    messages went out. A failure Twilio may get over raises `Retryable` (the job retries);
    one it will not (a bad number) is written into the case's timeline.
    """
    now = now or utcnow()
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.notified_at is not None or case.status == "closed" \
                or case.flag is not None:  # a possible probe: no SMS about it (ivr/probes.py)
            return 0
        link = console_link(base_url, case.id)
        if case.operator_id is not None:
            op = s.get(Operator, case.operator_id)
            assert op is not None
            targets = [(op.id, vault.open_operator_number(op), _sms(CASE_SMS, op.locale, case=case.id,
                                                                    link=link))]
            action = "sms-sent"
        else:
            targets = []
            for sup_id in supervisors(db):
                sup = s.get(Operator, sup_id)
                assert sup is not None
                targets.append((sup.id, vault.open_operator_number(sup), _sms(
                    ESCALATION_SMS, sup.locale, case=case.id, link=link,
                    region=(titles or _plain)(case.region or "?", sup.locale),
                    language=_language(case.language, sup.locale))))
            action = "escalated"
    sent: list[str] = []
    failed: list[str] = []
    told: list[str] = []  # operator ids, for the console (the sids are for the admin)
    refused: list[str] = []
    for op_id, number, body in targets:
        try:
            sent.append(f"operator {op_id}: {tel.send_sms(number, body)}")
            told.append(str(op_id))
        except ProviderError as exc:
            if exc.retryable and not sent:
                raise Retryable(str(exc)) from None
            failed.append(f"operator {op_id}: {exc}")
            refused.append(str(op_id))
    with db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        # `notified_at` says someone was told: with no supervisor, or every message refused,
        # it stays empty and the timeline says why (once per assignment: `unnotified` does
        # not try again what Twilio refused for good).
        if sent:
            case.notified_at = now
            s.add(AuditEntry(actor="system", action=action, case_id=case_id, at=now,
                             detail="; ".join(sent)[:500],
                             data=said("told", operators=",".join(told)).dumps()))
        elif not targets:
            s.add(AuditEntry(actor="system", action=action, case_id=case_id, at=now,
                             **said("nobody-to-tell").entry()))
        if failed:
            s.add(AuditEntry(actor="system", action="sms-failed", case_id=case_id, at=now,
                             detail="; ".join(failed)[:500],
                             data=said("sms-failed", operators=",".join(refused)).dumps()))
    if action == "escalated":
        log.warning("case %s has no operator: escalated to %d supervisor(s)", case_id, len(sent))
    elif sent:
        log.info("case %s: operator told by SMS", case_id)
    return len(sent)


def reoffer_due(db: Database, policy: Policy, now: datetime | None = None) -> list[int]:
    """Pass on the cases nobody acted on in time; returns the cases to notify again.

    A case offered to an operator who did not act goes to the next one (never back to anyone
    it was offered to); with nobody left it is unassigned and escalated. An unassigned case
    has nobody to wait for: it is taken up at the first tick someone can take it (however
    recently it was filed), oldest first, each taking a place of the operators' capacity, and
    without telling supervisors again meanwhile. REOFFER_MINUTES is only for assigned cases;
    an urgent one (an intake answer such as "at the front") waits URGENT_REOFFER_MINUTES, and
    urgent cases take up places first.
    """
    now = now or utcnow()
    cutoff = now - policy.reoffer_after
    urgent_cutoff = now - min(policy.urgent_reoffer_after, policy.reoffer_after)
    with db.session() as s:
        rows = s.execute(select(Case.id, Case.operator_id, Case.offered_to, Case.region,
                                Case.language).where(
            Case.status == "routed", Case.acted_at.is_(None), Case.flag.is_(None),
            Case.operator_id.is_(None) | (Case.assigned_at <= cutoff)
            | (Case.urgent.is_(True) & (Case.assigned_at <= urgent_cutoff)))
            .order_by(Case.urgent.desc(), Case.created_at, Case.id)).all()
    again: list[int] = []
    # Within one tick places only fill up: once nobody can take a region's cases in a language,
    # the older case's answer stands for the younger ones (a backlog of thousands in a region
    # nobody covers costs one look, not thousands).
    nobody: set[tuple[str, str, frozenset[int]]] = set()
    for row in rows:
        offered = frozenset(int(x) for x in (row.offered_to or "").split(",") if x)
        region, language = row.region or "", row.language or ""
        if row.operator_id is None:  # read afresh: the cases before it took their places
            if (region, language, offered) in nobody:
                continue
            found = choose(candidates(db, region, language), region, language, now, offered)
            if found.operator_id is None:
                nobody.add((region, language, offered))
                continue
        try:
            choice = assign_case(db, row.id, now, exclude=offered)
        except OperatorError:  # flagged as a possible probe meanwhile: not re-offered
            continue
        if row.operator_id is None and choice.operator_id is None:
            continue  # taken meanwhile by someone else's case: stays for the next tick
        with db.session() as s:
            case = s.get(Case, row.id)
            assert case is not None
            if row.operator_id is not None:  # a take-up is not a re-offer
                case.reoffers += 1
            if choice.operator_id is not None:
                _offered(s, row.id, choice.operator_id)
            s.add(OutboxJob(job=NOTIFY, target_id=row.id))
        again.append(row.id)
    if again:
        log.info("re-offered %d case(s) nobody had acted on", len(again))
    return again


# --- callbacks ---------------------------------------------------------------------------------


def start_callback(db: Database, vault: Vault, tel: Telephony, base_url: str, policy: Policy,
                   case_id: int, now: datetime | None = None, actor: str = "system") -> int:
    """Ring the case's operator; when they answer, `OperatorLeg` bridges them to the caller.

    Returns the attempt's id. Refuses (CallbackError) what must not happen: no consent, no
    number, a closed case, no operator, a call already ringing, the attempts used up. Outside
    the caller's window it schedules the call for when the window opens and says so.
    """
    now = now or utcnow()
    later = ""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise CallbackError("no-case", case=case_id)
        if case.status == "closed":
            raise CallbackError("case-closed", case=case_id)
        if case.flag is not None:
            raise CallbackError("flagged-case", case=case_id)
        if case.consent not in ("any", "day"):
            raise CallbackError("no-consent", case=case_id)
        if case.number is None:
            raise CallbackError("number-withheld", case=case_id)
        if case.operator_id is None:
            raise CallbackError("no-operator", case=case_id)
        if case.callback_status == "calling":
            raise CallbackError("ringing-now", case=case_id)
        if case.callback_status == "gave_up":
            raise CallbackError("gave-up-already", case=case_id, attempts=case.callback_attempts)
        tz = case.caller_tz or "UTC"
        if not in_window(case.consent, tz, now, policy.daytime):
            opens = next_in_window(case.consent, tz, now, policy.daytime)
            assert opens is not None
            window = describe_window(case.consent, tz, policy.daytime)
            case.callback_status, case.next_callback_at = "scheduled", opens
            s.add(AuditEntry(actor=actor, action="callback-scheduled", case_id=case_id,
                             **said("outside-window", window=window, consent=case.consent,
                                    zone=tz).entry()))
            later = opens.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
            consent = case.consent
    if later:  # committed: the housekeeper places it when the window opens
        raise CallbackError("scheduled-later", case=case_id, window=window, later=later,
                            consent=consent, zone=tz)
    with db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.operator_id is not None
        op = s.get(Operator, case.operator_id)
        assert op is not None
        operator_number = vault.open_operator_number(op)
        attempt = CallbackAttempt(case_id=case_id, operator_id=op.id, started_at=now)
        s.add(attempt)
        s.flush()
        attempt_id = attempt.id
        case.callback_attempts += 1
        case.callback_status, case.next_callback_at = "calling", None
        case.acted_at = case.acted_at or now
        s.add(AuditEntry(actor=actor, action="callback-started", case_id=case_id,
                         **said("attempt-by", attempt=case.callback_attempts, operator=op.id).entry()))
    answer = f"{base_url}/twilio/callback/answer?a={attempt_id}"
    status = f"{base_url}/twilio/callback/status?a={attempt_id}"
    try:
        sid = tel.place_call(operator_number, answer, status, policy.ring_timeout)
    except ProviderError as exc:
        finish(db, policy, attempt_id, "operator-failed", now)
        log.warning("callback attempt %s for case %s could not be placed (HTTP %s, Twilio code %s)",
                    attempt_id, case_id, exc.status, exc.code)
        raise CallbackError("not-placed", case=case_id) from None
    with db.session() as s:
        found = s.get(CallbackAttempt, attempt_id)
        assert found is not None
        found.call_sid = sid
    log.info("callback attempt %s for case %s: ringing operator %s", attempt_id, case_id, op.id)
    return attempt_id


def finish(db: Database, policy: Policy, attempt_id: int, outcome: str,
           now: datetime | None = None, seconds: int | None = None) -> None:
    """Record an attempt's outcome once, and decide what comes next for its case."""
    now = now or utcnow()
    with db.session() as s:
        attempt = s.get(CallbackAttempt, attempt_id)
        if attempt is None or attempt.outcome is not None:
            return  # Twilio delivers twice; the first word stands
        attempt.outcome, attempt.ended_at, attempt.seconds = outcome, now, seconds
        case = s.get(Case, attempt.case_id)
        assert case is not None
        s.add(AuditEntry(actor="system", action="callback-" + outcome, case_id=case.id,
                         **said("attempt", attempt=attempt.id).entry()))
        if outcome == ANSWERED:
            case.callback_status, case.next_callback_at = "answered", None
        elif case.flag is not None:  # a possible probe: no further try (ivr/probes.py)
            case.callback_status, case.next_callback_at = "none", None
        elif case.callback_attempts >= policy.max_attempts:
            case.callback_status, case.next_callback_at = "gave_up", None
            why = said("callback-gave-up", attempts=case.callback_attempts)
            case.status_reason, case.status_reason_data = why.english(), why.dumps()
            s.add(AuditEntry(actor="system", action="callback-gave-up", case_id=case.id,
                             **said("after-attempts", attempts=case.callback_attempts).entry()))
        else:
            wait = timedelta(minutes=policy.retry_minutes[max(0, case.callback_attempts - 1)])
            case.callback_status = "scheduled"
            case.next_callback_at = next_in_window(case.consent, case.caller_tz or "UTC",
                                                   now + wait, policy.daytime)


QUEUED_LEASE = timedelta(minutes=10)
NOTIFY_LEASE = timedelta(minutes=5)


# What `notify` writes when it ran to the end for an assignment with nobody told (no supervisor
# to tell, or a refusal Twilio will repeat): the backstop does not try it again. (An
# escalation that told someone set `notified_at` as well.)
TRIED = ("escalated", "sms-failed")


def unnotified(db: Database, now: datetime | None = None) -> list[int]:
    """Cases whose SMS never went (its job lost with Redis, or retried out while Twilio was
    down): queued again (housekeeper), at most once per NOTIFY_LEASE. Not a case `notify`
    already finished for this assignment with nobody told (see TRIED)."""
    now = now or utcnow()
    cutoff = now - NOTIFY_LEASE
    tried = select(AuditEntry.id).where(AuditEntry.case_id == Case.id, AuditEntry.action.in_(TRIED),
                                        AuditEntry.at >= Case.assigned_at).exists()
    with db.session() as s:
        ids = list(s.scalars(select(Case.id).where(Case.status == "routed", Case.notified_at.is_(None),
                                                   Case.assigned_at <= cutoff, Case.flag.is_(None),
                                                   ~tried)))
        waiting = set(s.scalars(select(OutboxJob.target_id).where(
            OutboxJob.job == NOTIFY, OutboxJob.target_id.in_(ids),
            (OutboxJob.enqueued_at.is_(None)) | (OutboxJob.enqueued_at > cutoff)))) if ids else set()
        again = [i for i in ids if i not in waiting]
        for case_id in again:
            s.add(OutboxJob(job=NOTIFY, target_id=case_id))
    if again:
        log.warning("%d case(s) whose operator was never told: notifying again", len(again))
    return again


def due_callbacks(db: Database, policy: Policy, now: datetime | None = None) -> list[int]:
    """Queue the scheduled callbacks that are due (housekeeper): ids of the cases queued.

    One waits while its operator is off duty; one whose window closed meanwhile moves to the
    window's next opening.
    """
    now = now or utcnow()
    with db.session() as s:
        cases = s.scalars(select(Case).where(Case.callback_status.in_(("scheduled", "queued")),
                                             Case.next_callback_at <= now,
                                             Case.status != "closed", Case.flag.is_(None))).all()
        if not cases:
            return []
        on_duty = {c.id for c in candidates(db) if c.on_duty and c.hours.is_open(now)}
        queued: list[int] = []
        for case in cases:
            if case.callback_status == "queued":  # its job was lost (Redis emptied): again
                log.warning("callback of case %s was queued but never placed: queued again", case.id)
            tz = case.caller_tz or "UTC"
            if not in_window(case.consent, tz, now, policy.daytime):
                case.next_callback_at = next_in_window(case.consent, tz, now, policy.daytime)
                continue
            if case.operator_id not in on_duty:
                continue
            # A lease: placing the call clears it; a job Redis lost is queued again after it.
            case.callback_status, case.next_callback_at = "queued", now + QUEUED_LEASE
            s.add(OutboxJob(job=CALLBACK, target_id=case.id))
            queued.append(case.id)
    return queued


# --- the operator's leg -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Whisper:
    """What the operator hears on answering: enough to know whom they call, nothing more."""

    case_id: int
    language: str  # the caller's
    region: str
    speak_in: str  # the operator's: uk, en or ru


WHISPER_LANGUAGES = ("uk", "en", "ru")  # the operator's language the whisper is said in


@dataclass(frozen=True, slots=True)
class Bridge:
    number: str  # the caller's, for the <Number> noun only
    caller_id: str  # what the caller's phone shows


CALLEE_LANGUAGES = ("ru", "uk", "en")


@dataclass(frozen=True, slots=True)
class Done:
    reason: str  # cancelled, ended, unanswered, gone, window, replayed, machine


class OperatorLeg:
    """The webhooks of a callback call (`/twilio/callback/*?a=ATTEMPT`), as decisions.

    The attempt id in the URL is no secret: every request is signed by Twilio, and the id
    opens nothing without the database.
    """

    def __init__(self, db: Database, vault: Vault, policy: Policy,
                 caller_id: Callable[[str], str]) -> None:
        self.db, self.vault, self.policy, self.caller_id = db, vault, policy, caller_id

    def _live(self, s: Session, attempt_id: int) -> tuple[CallbackAttempt, Case] | None:
        attempt = s.get(CallbackAttempt, attempt_id)
        if attempt is None or attempt.outcome is not None:
            return None
        case = s.get(Case, attempt.case_id)
        if case is None or case.status == "closed" or case.number is None or case.flag is not None:
            return None  # closed, or marked a possible probe meanwhile: no bridge
        return attempt, case

    def answered(self, attempt_id: int) -> Whisper | Done:
        with self.db.session() as s:
            live = self._live(s, attempt_id)
            if live is None:
                return Done("gone")
            attempt, case = live
            op = s.get(Operator, attempt.operator_id)
            spoken = op.languages.split(",") if op is not None else []
            speak_in = next((lang for lang in WHISPER_LANGUAGES if lang in spoken), "en")
            return Whisper(case.id, case.language or "ru", case.region or "", speak_in)

    def language(self, attempt_id: int) -> str:
        """The language the operator of an attempt hears (for every answer after the whisper)."""
        with self.db.session() as s:
            attempt = s.get(CallbackAttempt, attempt_id)
            op = s.get(Operator, attempt.operator_id) if attempt is not None else None
            spoken = op.languages.split(",") if op is not None else []
        return next((lang for lang in WHISPER_LANGUAGES if lang in spoken), "en")

    def pressed(self, attempt_id: int, digits: str, now: datetime | None = None) -> Bridge | Done:
        """The operator's key after the whisper: 1 hands out the bridge, exactly once.

        The request is signed, but a signed request can be captured and replayed: the bridge
        (which carries the caller's number) is claimed with a conditional UPDATE, so only the
        first request for an attempt gets it; any other gets a neutral goodbye and a log line.
        """
        now = now or utcnow()
        if digits != "1":
            finish(self.db, self.policy, attempt_id, "not-confirmed", now)
            return Done("cancelled")
        with self.db.session() as s:
            found = s.get(CallbackAttempt, attempt_id)
            if found is not None and found.confirmed_at is not None:
                return self._replayed(attempt_id)  # during the call or long after it
            live = self._live(s, attempt_id)
            if live is None:
                return Done("gone")
            attempt, case = live
            if not in_window(case.consent, case.caller_tz or "UTC", now, self.policy.daytime):
                # The operator took long enough for the window to close: not now.
                attempt.outcome, attempt.ended_at = "not-confirmed", now
                case.callback_status = "scheduled"
                case.next_callback_at = next_in_window(case.consent, case.caller_tz or "UTC",
                                                       now, self.policy.daytime)
                s.add(AuditEntry(actor="system", action="callback-scheduled", case_id=case.id,
                                 **said("window-closed").entry()))
                return Done("window")
            claimed: int = s.execute(
                update(CallbackAttempt)
                .where(CallbackAttempt.id == attempt_id, CallbackAttempt.confirmed_at.is_(None),
                       CallbackAttempt.outcome.is_(None))
                .values(confirmed_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if claimed != 1:  # a concurrent copy of this request got there first
                return self._replayed(attempt_id)
            number = self.vault.open(case, "number")
            if number is None:
                return Done("gone")
            return Bridge(number.decode(), self.caller_id(case.region or ""))

    @staticmethod
    def _replayed(attempt_id: int) -> Done:
        log.warning("callback attempt %s: the bridge was asked for again (a replayed or repeated "
                    "request); refused", attempt_id)
        return Done("replayed")

    # --- the caller's phone, before the bridge (<Number url=…>) ---------------------------

    def callee_answered(self, attempt_id: int, answered_by: str,
                        now: datetime | None = None) -> str | Done:
        """Whoever picked up the caller's phone: the language to ask them in, or Done when
        nothing must be said (a machine, or an attempt that is over)."""
        with self.db.session() as s:
            attempt = s.get(CallbackAttempt, attempt_id)
            case = s.get(Case, attempt.case_id) if attempt is not None else None
            if attempt is None or case is None or attempt.outcome is not None \
                    or attempt.confirmed_at is None or attempt.callee_confirmed_at is not None:
                return Done("gone")
            flagged = case.flag is not None
            language = case.language if case.language in CALLEE_LANGUAGES else "ru"
        if flagged:  # marked a possible probe while the caller's phone rang: nothing is said
            finish(self.db, self.policy, attempt_id, "canceled", now)
            return Done("gone")
        if answered_by.startswith(("machine", "fax")):
            finish(self.db, self.policy, attempt_id, "machine", now)
            return Done("machine")
        return language

    def callee_pressed(self, attempt_id: int, digits: str, now: datetime | None = None) -> bool:
        """The key pressed at the caller's phone: True bridges (once); anything else, or
        silence (`digits` empty), ends that leg and counts as an unanswered try."""
        now = now or utcnow()
        flagged = select(Case.id).where(Case.id == CallbackAttempt.case_id,
                                        Case.flag.is_not(None)).exists()
        if digits == "1":
            with self.db.session() as s:
                claimed: int = s.execute(
                    update(CallbackAttempt)
                    .where(CallbackAttempt.id == attempt_id, CallbackAttempt.outcome.is_(None), ~flagged,
                           CallbackAttempt.confirmed_at.is_not(None),
                           CallbackAttempt.callee_confirmed_at.is_(None))
                    .values(callee_confirmed_at=now)
                ).rowcount  # type: ignore[attr-defined]
            if claimed == 1:
                return True
            log.warning("callback attempt %s: the caller's key came again or too late; refused",
                        attempt_id)
            return False
        finish(self.db, self.policy, attempt_id, "callee-not-confirmed", now)
        return False

    def bridged(self, attempt_id: int, dial_status: str, seconds: str,
                now: datetime | None = None) -> Done:
        outcome = DIAL_OUTCOMES.get(dial_status, "failed")
        if outcome == ANSWERED:
            with self.db.session() as s:
                attempt = s.get(CallbackAttempt, attempt_id)
                if attempt is not None and attempt.callee_confirmed_at is None:
                    # Their phone answered but nobody pressed the key (hung up, a voicemail
                    # that beat the detection): no bridge was made.
                    outcome = "callee-not-confirmed"
        finish(self.db, self.policy, attempt_id, outcome, now,
               int(seconds) if seconds.isdigit() and outcome == ANSWERED else None)
        with self.db.session() as s:
            attempt = s.get(CallbackAttempt, attempt_id)
            final = attempt.outcome if attempt is not None else None
        return Done("ended" if final == ANSWERED else "unanswered")

    def status(self, attempt_id: int, call_status: str, now: datetime | None = None) -> None:
        """The operator's leg ended: busy, no answer, or hung up before a bridge."""
        if call_status in OPERATOR_OUTCOMES:
            finish(self.db, self.policy, attempt_id, OPERATOR_OUTCOMES[call_status], now)
        elif call_status == "completed":
            with self.db.session() as s:
                attempt = s.get(CallbackAttempt, attempt_id)
                confirmed = attempt is not None and attempt.confirmed_at is not None
            finish(self.db, self.policy, attempt_id, "failed" if confirmed else "not-confirmed", now)
