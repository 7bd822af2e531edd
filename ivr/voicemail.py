"""From a recording Twilio reports to a case an operator can act on, losing nothing.

The web side (`note_recording`) only writes ids and sealed data in one transaction, with an
outbox row for the job, and answers Twilio at once. The worker side (`process_recording`)
is a sequence of steps that each commit before the next begins (fetch and seal the audio;
delete it from Twilio; transcribe), so a worker killed at any point leaves a state the next
attempt simply continues from, and never a duplicate case: a recording sid makes at most one
recording row and one case, whatever Twilio delivers twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ivr.engine import Caller
from ivr.storage import AuditEntry, Call, Case, Database, Note, OutboxJob, Recording, Vault, utcnow
from ivr.transcribe import Transcript

log = logging.getLogger(__name__)

PROCESS_RECORDING = "process_recording"
MAX_FETCH_ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class Reported:
    """What Twilio told us about a recording (action or status callback): ids, no audio."""

    call_sid: str
    recording_sid: str
    status: str  # completed, absent, in-progress; "completed" for a Record action
    duration: int
    number: str  # the caller's From, "" when the callback does not carry it
    caller: Caller
    flow: str = ""
    flow_version: str = ""
    step: str = ""
    language: str = ""
    consent: str = ""  # the flow's `callback` variable when the message was recorded
    timezone: str = ""  # the caller's region's, for a daytime-only callback


# Compiled once: the duplicate delivery is the common webhook (action + status callback).
_SEEN = (select(Case.id, Case.number.is_(None).label("no_number"))
         .join(Recording, Recording.id == Case.recording_id)
         .where(Recording.recording_sid == bindparam("sid")))


def note_recording(db: Database, vault: Vault, r: Reported) -> int | None:
    """Record a reported recording durably; return the outbox job id to enqueue, if any."""
    with db.session() as s:
        if r.status == "completed" and r.duration > 0:
            # Delivered before (the action and the status callback both report it, and Twilio
            # retries): one indexed read, and nothing else to do.
            seen = s.execute(_SEEN, {"sid": r.recording_sid}).first()
            if seen is not None:
                if seen.no_number and r.number and not r.caller.withheld:
                    # The status callback (no From) came first: the action has the number,
                    # and with it the region and country the callback could not know.
                    case = s.get(Case, seen.id)
                    assert case is not None
                    _seal_number(vault, case, r.number)
                    case.region, case.country = r.caller.region, r.caller.country
                    case.caller_tz = r.timezone or case.caller_tz
                return None
        call = s.scalars(select(Call).where(Call.call_sid == r.call_sid)).first()
        if call is None:
            call = Call(call_sid=r.call_sid, flow=r.flow or None,
                        flow_version=r.flow_version or None, language=r.language or None,
                        region=r.caller.region, consent=r.consent or None)
            s.add(call)
            s.flush()
        elif r.consent and call.consent is None:
            call.consent = r.consent
        if r.status == "absent" or (r.status == "completed" and r.duration <= 0):
            call.note = f"recording {r.recording_sid} was empty or absent"
            return None
        if r.status != "completed":
            return None
        rec = Recording(recording_sid=r.recording_sid, call_id=call.id, duration=r.duration)
        s.add(rec)
        s.flush()
        case = Case(call_id=call.id, recording_id=rec.id, data_key_id=vault.new_key(),
                    language=r.language or call.language, region=r.caller.region,
                    country=r.caller.country, flow=r.flow or call.flow, step=r.step or None,
                    consent=call.consent, caller_tz=r.timezone or None)
        s.add(case)
        s.flush()
        if r.number and not r.caller.withheld:
            _seal_number(vault, case, r.number)
        s.add(AuditEntry(actor="system", action="case-created", case_id=case.id))
        job = OutboxJob(job=PROCESS_RECORDING, target_id=rec.id)
        s.add(job)
        s.flush()
        log.info("case %s created for recording %s", case.id, r.recording_sid)
        return job.id


def note_consent(db: Database, call_sid: str, consent: str) -> None:
    """The caller's answer to "may we call you back?", for the call and its case(s).

    Asked after the message in the hotline flow (the case exists already) or before it (the
    case takes it from the call when it is made): either order ends the same.
    """
    with db.session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).first()
        if call is None:
            call = Call(call_sid=call_sid)
            s.add(call)
            s.flush()
        call.consent = consent
        for case in s.scalars(select(Case).where(Case.call_id == call.id)):
            if case.consent != consent:
                case.consent = consent
                if case.routed_at is not None and case.callback_status in ("none", "waiting"):
                    # Routed already (the worker can be quicker than the caller's key press).
                    case.callback_status = callback_status(case.consent, case.number is not None)
                s.add(AuditEntry(actor="caller", action="consent", case_id=case.id,
                                 detail=f"callback: {consent}"))


def note_calls_ended(db: Database, ended: list[tuple[str, str, int, datetime]]) -> None:
    """Inbound calls that ended (their status callbacks): (sid, region, seconds, when), kept
    as rows with region, start and length, for the counts (no number). One upsert each, in
    one transaction, no ORM."""
    if not ended:
        return
    insert = sqlite_insert if db.backend == "sqlite" else postgresql_insert
    stmt = insert(Call)
    stmt = stmt.on_conflict_do_update(index_elements=[Call.call_sid],
                                      set_={"seconds": stmt.excluded.seconds})
    with db.engine.begin() as conn:
        conn.execute(stmt, [{"call_sid": sid, "region": region, "seconds": seconds,
                             "started_at": at - timedelta(seconds=seconds)}
                            for sid, region, seconds, at in ended])


class CallTally:
    """Ended calls noted in memory and written in one batch every few seconds (by the web
    process's flusher thread): a status callback then costs no database write of its own.
    These are counts, not cases: a process that dies loses at most a few seconds of them."""

    MAX = 10_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._ended: list[tuple[str, str, int, datetime]] = []

    def add(self, call_sid: str, region: str, seconds: int, when: datetime) -> None:
        with self._lock:
            if len(self._ended) >= self.MAX:  # the database has been away for long: keep the newest
                del self._ended[: self.MAX // 10]
            self._ended.append((call_sid, region, seconds, when))

    def flush(self) -> int:
        with self._lock:
            ended, self._ended = self._ended, []
        try:
            note_calls_ended(self.db, ended)
        except Exception:
            with self._lock:  # back in line for the next flush
                self._ended[:0] = ended[-self.MAX:]
            raise
        return len(ended)


def callback_status(consent: str | None, has_number: bool) -> str:
    """Before any attempt: "waiting" (for its operator to call back) or "none" (no consent,
    or no number to call)."""
    return "waiting" if consent in ("any", "day") and has_number else "none"


def _seal_number(vault: Vault, case: Case, number: str) -> None:
    case.number = vault.seal(case, "number", number.encode())
    case.caller_hash = vault.number_hash(number)


# --- the worker side -------------------------------------------------------------------


class Retryable(Exception):
    """A step failed for a reason that may pass (network, Twilio 5xx): try the job again."""


@dataclass(frozen=True, slots=True)
class Tools:
    """What processing needs from outside, handed in so tests can use real local parts."""

    fetch: Callable[[str], bytes]  # recording sid -> WAV bytes (raises Retryable or ValueError)
    delete: Callable[[str], None]  # recording sid -> deleted at the provider
    check_audio: Callable[[bytes], None]  # raises ValueError with a reason for bad audio
    # (chosen language, wav, flow id) -> what was heard (ivr.transcribe.listen)
    transcribe: Callable[[str, bytes, str | None], Transcript]
    # Called with the case id once its text is in (or could not be had): routing, by default
    # nothing. It is called again when a job is run again, so it must be idempotent.
    after: Callable[[int], None] = lambda _case_id: None


class NoModel(Exception):
    """Raised by `Tools.transcribe` when no engine covers the language: `no model for uk`."""


def process_recording(db: Database, vault: Vault, tools: Tools, recording_id: int) -> str:
    """Fetch and seal, delete at the provider, transcribe. Returns the recording's status.

    Each stage commits before the next and is skipped when already done, so a run that
    was killed or failed is simply run again. A provider that will not delete does not hold
    up the transcript: the job transcribes, then raises Retryable to try the delete again.
    """
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        if rec is None:
            return "missing"
        case_id = s.scalars(select(Case.id).where(Case.recording_id == recording_id)).one()
        sid, stored, status = rec.recording_sid, rec.audio is not None, rec.status
    if status in ("done", "failed"):
        tools.after(case_id)
        return status
    if not stored:
        _fetch_and_seal(db, vault, tools, recording_id, sid)
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        failed, deleted = rec.status == "failed", rec.deleted_at_provider is not None
    if failed:
        tools.after(case_id)
        return "failed"
    delete_error: Retryable | None = None
    if not deleted:
        try:
            tools.delete(sid)
        except Retryable as exc:
            delete_error = exc
        with db.session() as s:
            rec = s.get(Recording, recording_id)
            assert rec is not None
            if delete_error is None:
                rec.deleted_at_provider, rec.error = utcnow(), None
            else:
                rec.error = f"not yet deleted at the provider: {delete_error}"[:300]
    _transcribe(db, vault, tools, recording_id)
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        rec.status = "stored" if delete_error is not None else "done"
    tools.after(case_id)
    if delete_error is not None:
        raise delete_error
    return "done"


def unfinished(db: Database, older_than: timedelta) -> list[tuple[int, datetime]]:
    """(id, reported at) of recordings reported before `older_than` ago and still not done."""
    cutoff = utcnow() - older_than
    with db.session() as s:
        rows = s.execute(select(Recording.id, Recording.reported_at).where(
            Recording.status.in_(("reported", "stored")), Recording.reported_at <= cutoff))
        return [(row.id, row.reported_at) for row in rows]


def _fetch_and_seal(db: Database, vault: Vault, tools: Tools, recording_id: int, sid: str) -> None:
    try:
        wav = tools.fetch(sid)
        tools.check_audio(wav)
    except Retryable as exc:
        with db.session() as s:  # committed before the job raises, so the count survives
            rec = s.get(Recording, recording_id)
            assert rec is not None
            rec.attempts += 1
            rec.error = str(exc)[:300]
            give_up = rec.attempts >= MAX_FETCH_ATTEMPTS
            if give_up:
                _fail(s, rec, f"could not fetch the recording after {rec.attempts} tries: {exc}")
        if not give_up:
            raise
        return
    except ValueError as exc:
        with db.session() as s:
            rec = s.get(Recording, recording_id)
            assert rec is not None
            _fail(s, rec, f"unreadable recording: {exc}")
        return
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).one()
        assert rec is not None
        rec.audio = vault.seal_audio(case, wav)
        rec.audio_bytes = len(wav)
        rec.stored_at = utcnow()
        rec.status = "stored"
        rec.error = None


def _fail(s: Session, rec: Recording, reason: str) -> None:
    rec.status, rec.error = "failed", reason[:300]
    case = s.scalars(select(Case).where(Case.recording_id == rec.id)).first()
    if case is not None:
        case.status, case.status_reason = "transcription_failed", reason[:200]
        s.add(AuditEntry(actor="system", action="recording-failed", case_id=case.id))
    log.warning("recording %s failed: %s", rec.recording_sid, reason)


def _transcribe(db: Database, vault: Vault, tools: Tools, recording_id: int) -> None:
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).one()
        assert rec is not None
        if case.status != "new":  # transcribed in an earlier run
            return
        wav = vault.open_audio(case, rec)
        language, flow = case.language or "", case.flow
    assert wav is not None
    heard: Transcript | None = None
    try:
        heard = tools.transcribe(language, wav, flow)
        engine, reason = heard.engine, None
    except NoModel as exc:
        engine, reason = "", f"not transcribed: {exc}"[:200]
    except ValueError as exc:
        engine, reason = "", f"not transcribed: {exc}"[:200]
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).one()
        assert rec is not None
        if heard is not None:
            _file_transcript(vault, case, heard)
            case.status, case.status_reason = "transcribed", None
            if heard.language != heard.chosen_language:
                engine += f"; spoken: {heard.language}; chose {heard.chosen_language}"
        else:
            case.status, case.status_reason = "transcription_failed", reason
        case.transcribed_at = utcnow()
        s.add(AuditEntry(actor="system", action=case.status, case_id=case.id,
                         detail=engine or reason))


def _file_transcript(vault: Vault, case: Case, heard: Transcript) -> None:
    """The words sealed, each word's confidence sealed with them; language, mean confidence
    and the guard's flags in clear (numbers and codes, nothing the caller said)."""
    case.transcript = vault.seal(case, "transcript", heard.text.encode())
    words = [[w.text, round(w.probability, 3)] for w in heard.words]
    case.transcript_words = vault.seal(case, "transcript_words",
                                       json.dumps(words, ensure_ascii=False).encode())
    case.transcript_engine = heard.engine
    case.transcript_language = heard.language
    case.transcript_confidence = heard.confidence
    case.transcript_flags = ",".join(heard.flags) or None


# --- retention -------------------------------------------------------------------------


def purge(db: Database, vault: Vault, older_than: timedelta) -> int:
    """Destroy the data of cases closed longer ago than `older_than`: keys first.

    The case row stays with its region, language, status and dates (anonymous counts); the
    number, audio and transcript become unreadable with the key, then are removed.
    """
    cutoff = utcnow() - older_than
    count = 0
    with db.session() as s:
        cases = s.scalars(select(Case).where(Case.closed_at.is_not(None), Case.closed_at < cutoff,
                                             Case.purged_at.is_(None))).all()
        for case in cases:
            vault.destroy(case.data_key_id)
            rec = s.get(Recording, case.recording_id)
            if rec is not None:
                rec.audio = None
            case.number = case.transcript = case.transcript_words = None
            s.execute(update(Note).where(Note.case_id == case.id).values(text=None))
            case.caller_hash = None
            case.purged_at = utcnow()
            s.add(AuditEntry(actor="system", action="purged", case_id=case.id))
            count += 1
    if count:
        log.info("purged the data of %d closed case(s)", count)
    return count
