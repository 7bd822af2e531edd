"""Nothing stays at Twilio unknown: file every recording the webhooks never reported.

A report can be lost before it reaches us (our server down for longer than Twilio tries, a
network cut, a disk that died with its spool). The recording itself is still at Twilio, so
the worker's housekeeper lists the account's recordings now and then (RECONCILE_MINUTES) and
makes a case of each one the service does not know, with what Twilio still knows: the
call's `From` (for the region, and sealed as the number), no flow and no consent (a person
decides whether to call back), the region's usual language. Then it goes through the normal
pipeline: fetched, sealed, deleted at Twilio, transcribed.

Skipped: recordings not `completed` (still in progress or failed at Twilio), those younger
than `settle` (their webhook may still be on its way), those the database knows (including
failed ones deliberately kept at Twilio) and those waiting in this machine's spool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import select

from ivr.providers import AtTwilio
from ivr.reasons import said
from ivr.routing import Regions
from ivr.storage import AuditEntry, Case, Database, Recording, Vault, utcnow
from ivr.voicemail import Reported, note_recording

log = logging.getLogger(__name__)

SETTLE = timedelta(minutes=2)
BATCH = 200


def reconcile(db: Database, vault: Vault, listed: Iterable[AtTwilio], call_from: Callable[[str], str],
              delete: Callable[[str], None], regions: Regions, spooled: Callable[[], set[str]],
              settle: timedelta = SETTLE, now: datetime | None = None) -> list[int]:
    """File the unknown recordings; returns the outbox job ids made (the caller flushes)."""
    cutoff = (now or utcnow()) - settle
    candidates = [r for r in listed if r.status == "completed"
                  and r.created is not None and r.created <= cutoff]
    unknown: list[AtTwilio] = []
    for at in range(0, len(candidates), BATCH):
        batch = candidates[at:at + BATCH]
        with db.session() as s:
            known = set(s.scalars(select(Recording.recording_sid).where(
                Recording.recording_sid.in_([r.sid for r in batch]))))
        unknown += [r for r in batch if r.sid not in known]
    if not unknown:
        return []
    waiting = spooled()
    jobs: list[int] = []
    for r in unknown:
        if r.sid in waiting:
            continue
        if r.duration == 0:  # an empty message: nothing to keep, nothing to leave there
            delete(r.sid)
            log.warning("deleted empty recording %s found at Twilio", r.sid)
            continue
        number = call_from(r.call_sid) if r.call_sid else ""
        caller = regions.which(number)[0]
        region = regions.region(caller.region)
        job = note_recording(db, vault, Reported(
            call_sid=r.call_sid[:64] or f"unknown-{r.sid}", recording_sid=r.sid,
            status="completed", duration=max(1, r.duration), number=number, caller=caller,
            language=region.language, timezone=region.timezone))
        if job is None:
            continue  # noted meanwhile (a late webhook, a drained spool)
        with db.session() as s:
            case_id = s.scalars(select(Case.id).join(Recording, Recording.id == Case.recording_id)
                                .where(Recording.recording_sid == r.sid)).one()
            s.add(AuditEntry(actor="system", action="found-at-provider", case_id=case_id,
                             **said("found-at-provider").entry()))
        jobs.append(job)
    if jobs:
        log.warning("filed %d recording(s) found at Twilio that no webhook had reported", len(jobs))
    return jobs
