"""Replies from the hotline: an operator's words for a caller, read to them by <Say>.

An operator (the console) or the admin (`ivr cases reply`) writes a reply on a case, in the
caller's language; it is sealed under the case's key like a note, audited, and destroyed
with the case's data (ivr/voicemail.py purge). When the caller calls with their case's code,
their menu reads the replies to them, newest first (`replies_for_caller`), and each one read
is marked heard (`mark_heard`): the case shows whether and when.

A closed case may get a reply until its data is destroyed: a caller may still call with
their code after the case was closed (their follow-up reopens it), and what the hotline has
to tell them is often the closing word. Once purged (or its key gone), a reply is refused.

Length: at most MAX_LENGTH characters. It is read aloud on a phone line, so it must be short
enough to listen to (1,000 characters is about a minute of speech) and stay well inside
<Say>'s limits for every voice (Polly 3,000, Basic 4,096, Google 5,000 bytes of UTF-8: 1,000
Cyrillic letters are 2,000 bytes).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.engine import Speak
from ivr.keys import CryptoError
from ivr.reasons import Told
from ivr.storage import AuditEntry, Case, Database, Operator, Reply, Vault, utcnow

MAX_LENGTH = 1000


class ReplyError(Told):
    """A reply that cannot be left: empty, too long, no such case, or its data destroyed."""


@dataclass(frozen=True, slots=True)
class ForCaller:
    """A reply as the caller's menu reads it: `id` for `mark_heard`."""

    id: int
    text: str


def clean(text: str) -> str:
    """The reply as kept: control characters out (PostgreSQL refuses NUL), each line's
    spaces trimmed, lines kept (the page shows them as written)."""
    text = "".join(ch for ch in text.replace("\r\n", "\n") if ch in "\n\t" or ch >= " ")
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def add_reply(db: Database, vault: Vault, case_id: int, text: str, *, actor: str,
              operator_id: int | None = None, now: datetime | None = None) -> int:
    """Seal and keep a reply for the caller of `case_id`; returns its id. The audit entry
    says who wrote it, never what."""
    text = clean(text)
    if not text:
        raise ReplyError("reply-empty")
    if len(text) > MAX_LENGTH:
        raise ReplyError("reply-too-long", length=len(text), most=MAX_LENGTH)
    at = now or utcnow()
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise ReplyError("no-case", case=case_id)
        if case.purged_at is not None:
            raise ReplyError("reply-data-destroyed", case=case_id)
        if case.flag is not None:  # a possible probe: nothing goes back until a supervisor decides
            raise ReplyError("reply-flagged", case=case_id)
        try:
            vault.key_of(case.data_key_id)
        except CryptoError:  # a purge under way destroyed the key first
            raise ReplyError("reply-data-destroyed", case=case_id) from None
        row = Reply(case_id=case_id, operator_id=operator_id, actor=actor, created_at=at)
        s.add(row)
        s.flush()  # its id is part of what the seal is bound to
        row.text = vault.seal_reply(case, row, text)
        s.add(AuditEntry(actor=actor, action="reply-written", case_id=case_id, at=at))
        if operator_id is not None and case.operator_id == operator_id and case.acted_at is None:
            case.acted_at = at  # its operator acted on it: no re-offer
        return row.id


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None


def listing(s: Session, vault: Vault, case: Case, with_text: bool = True) -> list[dict[str, Any]]:
    """A case's replies, oldest first, as `ivr cases show` and the console give them: id, at,
    actor (operator:3, cli:olena), author (the operator's name, or the actor), heard_at
    (first heard; null: not yet), heard_count, and with `with_text` the text (null once the
    data is destroyed)."""
    rows = s.scalars(select(Reply).where(Reply.case_id == case.id).order_by(Reply.created_at, Reply.id)).all()
    names: dict[int | None, str] = {op_id: name for op_id, name in s.execute(
        select(Operator.id, Operator.name).where(
            Operator.id.in_({r.operator_id for r in rows if r.operator_id is not None})))}
    out = []
    for r in rows:
        found: dict[str, Any] = {
            "id": r.id, "at": _iso(r.created_at), "actor": r.actor,
            "author": names.get(r.operator_id, r.actor) if r.operator_id is not None else r.actor,
            "heard_at": _iso(r.heard_at), "heard_count": r.heard_count}
        if with_text:
            try:
                found["text"] = vault.open_reply(case, r)
            except CryptoError:
                found["text"] = None
        out.append(found)
    return out


def replies_for_caller(db: Database, vault: Vault, case_id: int) -> list[ForCaller]:
    """What the caller of `case_id` is read, newest first: every reply whose words are still
    there (none once the case's data is destroyed)."""
    with db.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.purged_at is not None:
            return []
        out = []
        for r in s.scalars(select(Reply).where(Reply.case_id == case_id, Reply.text.is_not(None))
                           .order_by(Reply.created_at.desc(), Reply.id.desc())):
            try:
                text = vault.open_reply(case, r)
            except CryptoError:
                return []  # the key is gone: a purge under way
            if text:
                out.append(ForCaller(r.id, text))
        return out


def mark_heard(db: Database, reply_id: int, now: datetime) -> None:
    """The caller was read this reply: the first time is kept (`heard_at`), each is counted,
    and the case's timeline says so."""
    with db.session() as s:
        row = s.get(Reply, reply_id, with_for_update=True)
        if row is None:
            return
        row.heard_at = row.heard_at or now
        row.heard_count += 1
        s.add(AuditEntry(actor="caller", action="reply-heard", case_id=row.case_id, at=now))


# Characters a voice reads as words the operator did not write ("smiling face"), or not at
# all: emoji and other pictographs, and the joiners and variation selectors between them.
_UNSPOKEN = re.compile("[\u200d\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")


def spoken(text: str, voice: str, locale: str) -> Speak:
    """A reply as <Say> reads it in the caller's voice: one paragraph (line breaks become
    pauses of a full stop's length: a comma-less list of lines would run together), without
    emoji and symbols. XML escaping is the TwiML builder's (quotes, <, & are safe)."""
    kept = "".join(" " if unicodedata.category(ch) in ("So", "Cs", "Co") else ch
                   for ch in _UNSPOKEN.sub("", text))
    lines = [" ".join(line.split()) for line in kept.split("\n")]
    said = " ".join(line if line[-1] in ".!?…:;," else line + "."
                    for line in lines if line)
    return Speak(said, voice, locale)
