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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ivr.engine import Caller
from ivr.keys import unseal
from ivr.reasons import Said, said
from ivr.storage import (
    AuditEntry,
    Call,
    CallbackAttempt,
    Case,
    CodeEntry,
    Database,
    DataKey,
    Note,
    OutboxJob,
    Recording,
    Reply,
    Vault,
    utcnow,
)
from ivr.transcribe import Transcript

log = logging.getLogger(__name__)

PROCESS_RECORDING = "process_recording"
MAX_FETCH_ATTEMPTS = 6
# A recording this short (RecordingDuration, whole seconds) is a caller who pressed # or hung
# up at the tone: the worker's voice-activity detector decides whether anything was said.
# Longer ones are always kept: a whisper the detector misses must not lose a message.
SHORT_RECORDING = 2
EMPTY = "empty"  # a recording's status when nothing was said: no case, deleted at Twilio


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
    # The flow's fields the caller answered before the message ({who: front}), and whether one
    # of them is an urgent value: kept on the case (sealed; `urgent` in clear).
    intake: Mapping[str, str] = field(default_factory=dict)
    urgent: bool = False
    # What the caller did before the message (CallState.path); None when the call's state
    # was not known (a message left at the apology without it)
    path: tuple[str, ...] | None = None


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
            if r.status == "absent" or _known(s, r.recording_sid):
                return None
            # Twilio holds an empty recording: no case, but a job that deletes it there.
            rec = Recording(recording_sid=r.recording_sid, call_id=call.id, duration=0, status=EMPTY)
            s.add(rec)
            s.flush()
            empty = OutboxJob(job=PROCESS_RECORDING, target_id=rec.id)
            s.add(empty)
            s.flush()
            return empty.id
        if r.status != "completed" or _known(s, r.recording_sid):
            return None  # (known: an empty one, whose case was dropped or never made)
        rec = Recording(recording_sid=r.recording_sid, call_id=call.id, duration=r.duration)
        s.add(rec)
        s.flush()
        case = Case(call_id=call.id, recording_id=rec.id, data_key_id=vault.new_key(),
                    language=r.language or call.language, region=r.caller.region,
                    country=r.caller.country, flow=r.flow or call.flow, step=r.step or None,
                    consent=call.consent, caller_tz=r.timezone or None, urgent=r.urgent)
        s.add(case)
        s.flush()
        if r.number and not r.caller.withheld:
            _seal_number(vault, case, r.number)
        if r.intake:
            seal_intake(vault, case, r.intake)
        if r.path is not None:  # the topic is in it: sealed like the words
            case.path = vault.seal(case, "path", json.dumps(list(r.path)).encode())
        s.add(AuditEntry(actor="system", action="case-created", case_id=case.id))
        job = OutboxJob(job=PROCESS_RECORDING, target_id=rec.id)
        s.add(job)
        s.flush()
        log.info("voicemail received: case %s filed", case.id)  # a stage line (ivr serve shows these)
        log.debug("case %s: recording %s", case.id, r.recording_sid)
        return job.id


def _known(s: Session, sid: str) -> bool:
    return s.scalars(select(Recording.id).where(Recording.recording_sid == sid)).first() is not None


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
                                 **said("consent", consent=consent).entry()))


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


def seal_intake(vault: Vault, case: Case, answers: Mapping[str, str]) -> None:
    """The caller's keypad answers, sealed under the case's key like the transcript."""
    case.intake = vault.seal(case, "intake", json.dumps(dict(sorted(answers.items()))).encode())


def open_intake(vault: Vault, case: Case) -> dict[str, str]:
    """The caller's keypad answers ({} when none were given or kept)."""
    sealed = vault.open(case, "intake")
    found = json.loads(sealed) if sealed is not None else {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _seal_number(vault: Vault, case: Case, number: str) -> None:
    case.number = vault.seal(case, "number", number.encode())
    case.caller_hash = vault.number_hash(number)


# --- the worker side -------------------------------------------------------------------


class Retryable(Exception):
    """A step failed for a reason that may pass (network, Twilio 5xx): try the job again.

    `missing`: Twilio answered 404 for the audio. Twilio documents that a new recording may
    not be available at once, so that is retried too; only after the last try is it an answer.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


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
    # wav -> whether anyone speaks in it (ivr.transcribe.has_speech); None: every short
    # recording is taken as a message
    speech: Callable[[bytes], bool] | None = None


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
            # Not "done": a job for a recording this database never had came from another
            # install sharing the Redis (see REDIS_NAMESPACE), or from before a restore.
            log.warning("job for recording %s: no such recording in this database (another "
                        "install's job, or a restored database?); nothing done", recording_id)
            return "missing"
        case_id = s.scalars(select(Case.id).where(Case.recording_id == recording_id)).first()
        sid, stored, status = rec.recording_sid, rec.audio is not None, rec.status
    if case_id is None or status == EMPTY:
        return _forget_empty(db, vault, tools, recording_id)
    if status in ("done", "failed") or sid is None:  # sid None: purged already
        tools.after(case_id)
        return status
    if not stored and _fetch_and_seal(db, vault, tools, recording_id, sid) == EMPTY:
        return _forget_empty(db, vault, tools, recording_id)
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
        log.info("case %s: audio stored, %s", case_id, "deleted at Twilio" if delete_error is None
                 else "not yet deleted at Twilio (tried again)")
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
    """(id, reported at) of recordings reported before `older_than` ago and still not done
    (an empty one not yet deleted at Twilio included)."""
    cutoff = utcnow() - older_than
    with db.session() as s:
        rows = s.execute(select(Recording.id, Recording.reported_at).where(
            or_(Recording.status.in_(("reported", "stored")),
                (Recording.status == EMPTY) & Recording.deleted_at_provider.is_(None)),
            Recording.reported_at <= cutoff))
        return [(row.id, row.reported_at) for row in rows]


def _forget_empty(db: Database, vault: Vault, tools: Tools, recording_id: int) -> str:
    """Nothing was said: delete the recording at Twilio, then drop its case (with the key that
    sealed its number) so no operator ever sees an empty message. Run again, it finishes.

    The key is destroyed at once, its epoch retired by the next hourly purge (Vault.discard):
    a rotation per silent call would be one a caller could force."""
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        rec.status, rec.audio, rec.audio_bytes = EMPTY, None, None
        sid, deleted = rec.recording_sid, rec.deleted_at_provider is not None
    if sid is not None and not deleted:
        tools.delete(sid)  # Retryable: the job runs again
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        rec.deleted_at_provider = rec.deleted_at_provider or utcnow()
        rec.error = None
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).first()
        call = s.get(Call, rec.call_id)
        if call is not None:
            call.note = f"recording {sid} held no speech: no case, deleted at the provider"
        key = dropped = None
        if case is not None:
            key, dropped = case.data_key_id, case.id
            s.execute(delete(AuditEntry).where(AuditEntry.case_id == case.id))
            s.execute(delete(CodeEntry).where(CodeEntry.case_id == case.id))  # a PIN being chosen
            s.delete(case)
    if key is not None:
        vault.discard([key])  # its epoch is retired by the next purge, once for all of them
    if dropped is not None:
        log.info("case %s: nothing said, dropped (deleted at Twilio)", dropped)
    else:
        log.info("voicemail received: nothing said, no case (deleted at Twilio)")
    log.debug("recording %s held no speech", sid)
    return EMPTY


def _fetch_and_seal(db: Database, vault: Vault, tools: Tools, recording_id: int, sid: str) -> str:
    """Fetch, check and seal the audio; EMPTY when a short recording holds no speech."""
    try:
        wav = tools.fetch(sid)
        tools.check_audio(wav)
    except Retryable as exc:
        with db.session() as s:  # committed before the job raises, so the count survives
            rec = s.get(Recording, recording_id)
            assert rec is not None
            rec.attempts += 1
            rec.error = str(exc)[:300]
            give_up, tries = rec.attempts >= MAX_FETCH_ATTEMPTS, rec.attempts
        if not give_up:
            raise
        reason = f"could not fetch the recording after {tries} tries: {exc}"
        gone = exc.missing and _delete_quietly(tools, sid)
        with db.session() as s:
            rec = s.get(Recording, recording_id)
            assert rec is not None
            if gone:  # Twilio says it has no such recording, to the end: nothing is left there
                rec.deleted_at_provider = utcnow()
                _fail(s, rec, said("not-fetched", detail=reason))
            else:
                _fail(s, rec, said("not-fetched-kept", detail=reason))
        return "failed"
    except ValueError as exc:
        with db.session() as s:
            rec = s.get(Recording, recording_id)
            assert rec is not None
            _fail(s, rec, said("unreadable-kept", detail=str(exc)))
        return "failed"
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        short = (rec.duration or 0) <= SHORT_RECORDING
    if short and tools.speech is not None and not _speaks(tools.speech, wav):
        return EMPTY
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).one()
        assert rec is not None
        rec.audio = vault.seal_audio(case, wav)
        rec.audio_bytes = len(wav)
        rec.stored_at = utcnow()
        rec.status = "stored"
        rec.error = None
    return "stored"


def _speaks(speech: Callable[[bytes], bool], wav: bytes) -> bool:
    """Whether anyone speaks in `wav`; a detector that fails keeps the message (the safe side)."""
    try:
        return speech(wav)
    except Exception:
        log.exception("speech detection failed; the recording is kept as a message")
        return True


# Said on a failed case whose recording we have no good copy of: deleting it at Twilio would
# destroy the message, so it stays there, known (the listing skips it), for a person.
KEPT_AT_TWILIO = "kept at Twilio, not deleted"


def _delete_quietly(tools: Tools, sid: str) -> bool:
    """Delete at the provider; False when it would not (the recording stays, and is said to)."""
    try:
        tools.delete(sid)
    except Retryable:
        return False
    return True


def _fail(s: Session, rec: Recording, why: Said) -> None:
    reason = why.english()
    rec.status, rec.error = "failed", reason[:300]
    case = s.scalars(select(Case).where(Case.recording_id == rec.id)).first()
    if case is not None:
        case.status, case.status_reason = "transcription_failed", reason[:200]
        case.status_reason_data = why.dumps()
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
    why: Said | None = None
    try:
        heard = tools.transcribe(language, wav, flow)
        engine, reason = heard.engine, None
    except NoModel as exc:
        why = said("no-model", language=language)
        engine, reason = "", f"not transcribed: {exc}"[:200]
    except ValueError as exc:
        why = said("not-transcribed", detail=str(exc))
        engine, reason = "", f"not transcribed: {exc}"[:200]
    with db.session() as s:
        rec = s.get(Recording, recording_id)
        case = s.scalars(select(Case).where(Case.recording_id == recording_id)).one()
        assert rec is not None
        done = utcnow()
        if heard is not None:
            _file_transcript(vault, case, heard)
            case.status, case.status_reason, case.status_reason_data = "transcribed", None, None
            case.transcribed_at = done  # only when there are words
            why = said("transcribed-by", engine=engine)
            if heard.language != heard.chosen_language:
                engine += f"; spoken: {heard.language}; chose {heard.chosen_language}"
                why = said("transcribed-other-language", engine=heard.engine, spoken=heard.language,
                           chose=heard.chosen_language)
        else:
            # No words: `transcribed_at` stays empty. The failure's time and reason are its
            # audit entry (`transcription_failed`, the reason as detail) and `status_reason`.
            case.status, case.status_reason = "transcription_failed", reason
            case.status_reason_data = why.dumps() if why is not None else None
        s.add(AuditEntry(actor="system", action=case.status, case_id=case.id,
                         detail=engine or reason, at=done, data=why.dumps() if why else None))
        case_id = case.id
    if heard is not None:
        log.info("case %s: transcribed (%s, %.0f s of audio in %.1f s%s)", case_id, heard.language,
                 heard.audio_seconds, heard.processing_seconds,
                 f"; {', '.join(heard.flags)}" if heard.flags else "")
    else:
        log.info("case %s: %s", case_id, reason)


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


# What a purged call or recording keeps of its length: <30 s, 30-60 s, 1-3 min, 3+ min.
LENGTHS = (0, 30, 60, 180)


def length_bucket(seconds: int | None) -> int | None:
    """The lower bound of the length's bucket: a count survives, an exact length does not."""
    if seconds is None:
        return None
    return max(b for b in LENGTHS if seconds >= b) if seconds >= 0 else 0


def _day(when: datetime | None) -> datetime | None:
    return when.replace(hour=0, minute=0, second=0, microsecond=0) if when is not None else None


CASE_TIMES = ("created_at", "transcribed_at", "routed_at", "closed_at", "assigned_at", "notified_at",
              "acted_at", "next_callback_at")


def purge(db: Database, vault: Vault, older_than: timedelta,
          delete_call: Callable[[str], None] | None = None,
          delete_recording: Callable[[str], None] | None = None) -> int:
    """Destroy the data of cases closed longer ago than `older_than`: keys first.

    The keys are destroyed and their key epoch retired in one step (Vault.shred), so no copy
    of them anywhere opens again; so are the copies of the keys of empty messages dropped
    since the last run (Vault.discard), and their callers' hashes (a new number-hash key).
    The case row stays with its region, language, status and outcome (anonymous counts);
    the number, audio, transcript, intake answers (and `urgent`),
    notes and replies are removed, provider ids dropped, times kept to
    the day and lengths to a bucket, so nothing leads back to the call. Calls whose cases
    are all purged are then deleted at Twilio (`forget_calls`), and so is a recording that
    was never deleted there (a download that failed for good keeps it at Twilio for a person
    to fetch): until then its sid stays, so the listing at Twilio does not file it again as
    a new case (`forget_recordings`).
    """
    cutoff = utcnow() - older_than
    with db.session() as s:
        due = s.execute(select(Case.id, Case.data_key_id).where(
            Case.closed_at.is_not(None), Case.closed_at < cutoff, Case.purged_at.is_(None))).all()
    # Keys of dropped empty messages, destroyed since the last rotation: their epoch goes now.
    dropped = vault.discarded()
    if due or dropped:
        # The purged callers' hashes may survive in the database's history: the key that
        # made them goes too, after the live cases are hashed again under a new one.
        old_hash_keys = rehash_callers(db, vault, due_before=cutoff, new_key=True)
        # A crash after this and before the rows below are emptied is repaired by the next
        # run: the cases are still due, their keys already gone.
        vault.shred([row.data_key_id for row in due] + old_hash_keys)
    else:
        rehash_callers(db, vault)  # hashes a racing web process made under the old key
    with db.session() as s:
        for case in s.scalars(select(Case).where(Case.id.in_([row.id for row in due]))):
            rec = s.get(Recording, case.recording_id)
            if rec is not None:
                rec.audio = rec.audio_bytes = rec.error = None
                if rec.deleted_at_provider is not None:
                    rec.recording_sid = None  # else forget_recordings deletes it at Twilio first
                rec.duration = length_bucket(rec.duration)
                rec.reported_at = _day(rec.reported_at) or rec.reported_at
                rec.stored_at, rec.deleted_at_provider = _day(rec.stored_at), _day(rec.deleted_at_provider)
            case.number = case.transcript = case.transcript_words = case.caller_hash = case.caller_tz = None
            case.intake, case.urgent = None, False  # the answers, and the one kept in clear
            case.path = case.flag_reason = None  # the flag itself stays: a count of probes
            case.code_hash = case.pin_hash = case.code_locked_until = None  # no longer reachable
            s.execute(delete(CodeEntry).where(CodeEntry.case_id == case.id))
            case.status_reason = case.route_reason = case.offered_to = None
            case.status_reason_data = case.route_reason_data = None
            for name in CASE_TIMES:
                setattr(case, name, _day(getattr(case, name)))
            case.purged_at = _day(utcnow())
            s.execute(update(Note).where(Note.case_id == case.id).values(text=None))
            for note in s.scalars(select(Note).where(Note.case_id == case.id)):
                note.at = _day(note.at) or note.at
            s.execute(update(Reply).where(Reply.case_id == case.id).values(text=None))  # as notes
            for reply in s.scalars(select(Reply).where(Reply.case_id == case.id)):
                reply.created_at = _day(reply.created_at) or reply.created_at
                reply.heard_at = _day(reply.heard_at)
            for attempt in s.scalars(select(CallbackAttempt).where(CallbackAttempt.case_id == case.id)):
                attempt.seconds = length_bucket(attempt.seconds)
                attempt.started_at = _day(attempt.started_at) or attempt.started_at
                attempt.confirmed_at, attempt.ended_at = _day(attempt.confirmed_at), _day(attempt.ended_at)
            for entry in s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)):
                entry.at = _day(entry.at) or entry.at
            s.add(AuditEntry(actor="system", action="purged", case_id=case.id, at=case.purged_at))
    forget_calls(db, cutoff, delete_call)
    forget_recordings(db, delete_recording)
    if due:
        db.compact()
        log.info("purged the data of %d closed case(s)", len(due))
    if dropped:
        log.info("retired the key epoch of %d dropped empty message(s)", dropped)
    return len(due)


def rehash_callers(db: Database, vault: Vault, due_before: datetime | None = None,
                   new_key: bool = False) -> list[int]:
    """Hash the number of every live case again under the current number-hash key (a new
    one with `new_key`) where it was made under another, leaving out the cases closed before
    `due_before` (being purged: their number must not be hashed under a key that lives on).
    Returns the other number-hash keys, for the caller to destroy. In batches; each row only
    if its hash did not change meanwhile."""
    if new_key:
        vault.new_key("number-hash")
    key_id, key = vault.hash_key()
    prefix, last = f"{key_id}:", 0
    table = Case.metadata.tables["cases"]
    while True:
        query = select(Case.id, Case.data_key_id, Case.number, Case.caller_hash).where(
            Case.id > last, Case.caller_hash.is_not(None), Case.number.is_not(None),
            Case.purged_at.is_(None), ~Case.caller_hash.startswith(prefix))
        if due_before is not None:
            query = query.where(or_(Case.closed_at.is_(None), Case.closed_at >= due_before))
        with db.session() as s:
            rows = s.execute(query.order_by(Case.id).limit(1000)).all()
        if not rows:
            break
        last = rows[-1].id
        data_keys = vault.keys_of(r.data_key_id for r in rows)
        changes = []
        for r in rows:
            plain = data_keys.get(r.data_key_id)
            number = unseal(plain, r.number, f"case:{r.id}:number").decode() if plain else None
            changes.append({"b_id": r.id, "b_old": r.caller_hash,
                            "b_new": vault.number_hash(number, (key_id, key)) if number else None})
        with db.session() as s:
            s.connection().execute(
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.caller_hash == bindparam("b_old"))
                .values(caller_hash=bindparam("b_new")), changes)
    with vault.keys.session() as k:
        return list(k.scalars(select(DataKey.id).where(DataKey.purpose == "number-hash",
                                                       DataKey.wrapped.is_not(None), DataKey.id != key_id)))


def forget_recordings(db: Database, delete_recording: Callable[[str], None] | None) -> int:
    """Recordings of purged cases still at Twilio: deleted there, then their sid dropped. A
    deletion that fails stays for the next run; without `delete_recording` nothing is done.
    Returns how many were forgotten."""
    if delete_recording is None:
        return 0
    purged = select(Case.id).where(Case.recording_id == Recording.id, Case.purged_at.is_not(None)).exists()
    with db.session() as s:
        due = s.execute(select(Recording.id, Recording.recording_sid)
                        .where(Recording.recording_sid.is_not(None), purged)).all()

    def forget(row_id: int) -> None:
        with db.session() as s:
            s.execute(update(Recording).where(Recording.id == row_id)
                      .values(recording_sid=None, deleted_at_provider=_day(utcnow())))

    return _delete_at_twilio([(row_id, str(sid), forget) for row_id, sid in due], delete_recording,
                             "recording(s) of purged cases")


def forget_calls(db: Database, cutoff: datetime, delete_call: Callable[[str], None] | None) -> int:
    """Calls older than `cutoff` whose cases are all purged (or that made none), and the
    operator's legs of purged cases' callbacks: deleted at Twilio (whose call log keeps the
    numbers), then their sid dropped and a call's time and length coarsened. A deletion that
    fails stays for the next run (hourly); without `delete_call` nothing is forgotten.
    Returns how many calls were forgotten."""
    if delete_call is None:
        return 0
    open_case = select(Case.id).where(Case.call_id == Call.id, Case.purged_at.is_(None)).exists()
    with db.session() as s:
        calls = s.execute(select(Call.id, Call.call_sid).where(
            Call.call_sid.is_not(None), Call.started_at < cutoff, ~open_case)).all()
        # The operator's legs of callbacks (the legs to the caller are not ours to know)
        legs = s.execute(select(CallbackAttempt.id, CallbackAttempt.call_sid)
                         .join(Case, Case.id == CallbackAttempt.case_id)
                         .where(CallbackAttempt.call_sid.is_not(None), Case.purged_at.is_not(None))).all()

    def forget_call(row_id: int) -> None:
        with db.session() as s:
            call = s.get(Call, row_id)
            assert call is not None
            call.call_sid, call.seconds = None, length_bucket(call.seconds)
            call.started_at = _day(call.started_at) or call.started_at
            call.note = None

    def forget_leg(row_id: int) -> None:
        with db.session() as s:
            s.execute(update(CallbackAttempt).where(CallbackAttempt.id == row_id).values(call_sid=None))

    due: list[tuple[int, str, Callable[[int], None]]] = [(i, str(sid), forget_call) for i, sid in calls]
    due += [(i, str(sid), forget_leg) for i, sid in legs]
    return _delete_at_twilio(due, delete_call, "call(s)")


def _delete_at_twilio(due: list[tuple[int, str, Callable[[int], None]]], delete: Callable[[str], None],
                      what: str) -> int:
    """Delete each sid at Twilio (one already gone counts as deleted), then forget it here; a
    deletion that fails stays for the next purge. Returns how many were forgotten."""
    forgotten = failed = 0
    for row_id, sid, forget in due:
        try:
            delete(sid)
        except Retryable:
            failed += 1
            continue
        forget(row_id)
        forgotten += 1
    if failed:
        log.warning("%d %s could not be deleted at Twilio yet; trying again at the next purge", failed, what)
    return forgotten
