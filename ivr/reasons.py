"""What the service says about a case, kept as data: a code and its values.

A route reason, a status reason, an audit entry's detail and a refusal are each a `Said`:
`english()` is the sentence tools and logs read (the `route_reason`, `status_reason` and
`detail` columns keep it, word for word as before), and the console renders the same code
and values in its reader's language (ivr/console/i18n.py), with the values shown for that
reader (a region's name, an operator's name, a time in their time zone). The data is stored
beside the English (`route_reason_data`, `status_reason_data`, `audit.data`, JSON).

Values are named for what they are, and the console shows them by name: `region`,
`language`, `operator` (an id), `outcome`, `consent`, `fields` (operator settings); the rest
(counts, names, engines) are shown as they are. `detail` is technical English for admins:
the English sentence keeps it; a translation may leave it out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Value = str | int | bool | None
Translate = Callable[[str], str]

# code -> the English sentence (`%(name)s` for each value). A code missing here is said as its
# values' `text`. Every sentence has its Ukrainian in ivr/console/i18n.py (tests check).
ENGLISH: dict[str, str] = {
    # why a case went to whom (ivr/operators.py choose); `route` builds it from parts
    "route-region": "region %(region)s, language %(language)s",
    "route-candidates": "%(candidates)s candidate(s)",
    "route-excluded": "(not %(excluded)s offered before)",
    "route-on-duty": "%(on_duty)s on duty",
    "route-with-room": "%(with_room)s with room",
    "route-chose": "chose %(name)s (%(open)s open case(s), least loaded)",
    "route-chose-tie": "chose %(name)s (%(open)s open case(s), least loaded, longest since a case)",
    "route-unassigned": "unassigned, escalated to supervisors",
    "route-urgent": "urgent (caller's answer): first in the queue, re-offered sooner",  # said last
    "took-to-call-back": "took the case to call back (%(name)s)",
    "reassigned-by-supervisor": "reassigned by a supervisor (%(name)s)",
    "reassigned-to": "to operator %(operator)s",
    "taken-by": "taken by %(name)s",
    "reopened-own": "reopened by its operator",
    "reopened-back": "reopened: back to its operator",  # then why (a code of its own)
    # why a case's words are missing, or its callbacks stopped
    "no-model": "not transcribed: no model for %(language)s",
    "not-transcribed": "not transcribed: %(detail)s",
    "not-fetched": "%(detail)s; Twilio does not have it",
    "not-fetched-kept": "%(detail)s; kept at Twilio, not deleted",
    "unreadable-kept": "unreadable recording: %(detail)s; kept at Twilio, not deleted",
    "callback-gave-up": "callback: gave up after %(attempts)s attempts",
    # audit details
    "transcribed-by": "%(engine)s",
    "transcribed-other-language": "%(engine)s; spoken: %(spoken)s; chose %(chose)s",
    "consent": "callback: %(consent)s",
    "outside-window": "outside the caller's window (%(window)s)",
    "window-closed": "the caller's window closed before the bridge",
    "attempt": "attempt %(attempt)s",
    "attempt-by": "attempt %(attempt)s by operator %(operator)s",
    "after-attempts": "after %(attempts)s attempts",
    "told": "told: %(operators)s",
    "nobody-to-tell": "no supervisor to tell: nobody was told",
    "sms-failed": "the SMS to %(operators)s could not be sent",
    "found-at-provider": "filed from Twilio's list of recordings: no webhook reported it",
    "operator": "operator %(operator)s",
    "operator-added": "operator %(operator)s %(name)s",
    "operator-edited": "operator %(operator)s: %(fields)s",
    "operators-read": "operators %(operators)s",
    "sign-in-attack": "operator %(operator)s: %(failures)s failed sign-ins within %(minutes)s minutes",
    "number-change-told": "operator %(operator)s: number change told to the old number",
    "password-change-told": "operator %(operator)s: password change told to the operator",
    "second-factor-change-told": "operator %(operator)s: second-factor change told to the operator",
    # the probe flag (ivr/probes.py)
    "flagged-to-supervisors": "marked as a possible probe: for supervisors only",
    "callbacks-stopped": "the callbacks planned for it were cancelled",
    "flag-cleared-back": "probe flag cleared: back to its operator",
    "closed-as-probe": "closed as a probe",
    "flagged-case": "case %(case)s is marked as a possible probe: supervisors decide",
    "not-flagged": "case #%(case)s is not marked as a possible probe",
    "confirmed-probe": "case #%(case)s was confirmed as a probe: it cannot be reopened",
    "no-flag-reason": "say why the call looks like a probe",
    # refusals an operator reads in the console
    "no-case": "no case #%(case)s",
    "case-closed": "case %(case)s is closed",
    "case-already-closed": "case #%(case)s is already closed",
    "no-consent": "case %(case)s: the caller did not agree to a callback",
    "number-withheld": "case %(case)s: the caller's number was withheld",
    "no-operator": "case %(case)s has no operator yet: take it or assign it first",
    "ringing-now": "case %(case)s: a callback is ringing now",
    "gave-up-already": "case %(case)s: gave up after %(attempts)s attempts",
    "scheduled-later": "case %(case)s: outside the caller's safe hours (%(window)s); "
                       "scheduled for %(later)s their time",
    "not-placed": "case %(case)s: the call to your phone could not be placed: try again in a few "
                  "minutes",
    "bad-time-zone": "unknown time zone %(zone)r (like Europe/Kyiv)",
    "bad-hours": "hours %(part)r: write them like `mon-fri 09:00-18:00; sat 10:00-14:00`",
    "bad-time-of-day": "hours %(part)r: not a time of day",
    "empty-hours": "hours are empty: give them like `mon-fri 09:00-18:00`, or `always`",
    "bad-list": "%(what)s must be a comma-separated list like ru,uk",
    "bad-number": "the operator's number must be in E.164 form, like +380441234567",
    "bad-capacity": "capacity must be from 1 to %(most)s open cases",
    "no-name": "the operator needs a name",
    "name-taken": "there is already an operator named %(name)r",
    "bad-text": "%(what)s must be one line of at most %(longest)s characters",
    "bad-role": "role must be one of %(roles)s",
    # a reply for the caller refused (ivr/replies.py)
    "reply-empty": "the reply is empty: nothing was saved",
    "reply-too-long": "the reply has %(length)s characters; at most %(most)s are read to the caller",
    "reply-data-destroyed": "case #%(case)s: its data was destroyed; no reply can be left",
    "reply-flagged": "case #%(case)s is marked as a possible probe: no reply goes to the caller",
}


@dataclass(frozen=True, slots=True)
class Said:
    """A sentence as data: `code` (a key of ENGLISH) and its `values`; `parts` joins several
    (a route reason is region, counts and choice)."""

    code: str
    values: Mapping[str, Value] = field(default_factory=dict)
    parts: tuple[tuple[str, str], ...] = ()  # (separator, code) said after this one

    @property
    def outcome(self) -> str:
        """The code that says what came of it: the last part's (route-chose, route-unassigned)."""
        codes = [code for _sep, code in self.parts if code != "route-urgent"]
        return codes[-1] if codes else self.code

    def english(self) -> str:
        return self.render(lambda text: text, lambda _key, value: str(value))

    def render(self, translate: Translate, show: Callable[[str, Value], str]) -> str:
        """The sentence in a language: `translate` an English sentence, `show` a named value."""
        shown = {key: show(key, value) for key, value in self.values.items()}
        out = ""
        for sep, code in (("", self.code), *self.parts):
            template = ENGLISH.get(code)
            text = translate(template) % _Lenient(shown) if template else \
                translate(str(self.values.get("text", "")))
            out += sep + text
        return out

    def dumps(self) -> str:
        found: dict[str, Any] = {"code": self.code, "values": dict(self.values)}
        if self.parts:
            found["parts"] = [list(p) for p in self.parts]
        return json.dumps(found, ensure_ascii=False, separators=(",", ":"))

    def entry(self, longest: int = 500) -> dict[str, str]:
        """The audit entry's `detail` (English) and `data` (this, as JSON)."""
        return {"detail": self.english()[:longest], "data": self.dumps()}


class _Lenient(dict[str, str]):
    """A template may leave out a value (a translation drops the technical `detail`)."""

    def __missing__(self, key: str) -> str:
        return ""


def said(code: str, **values: Value) -> Said:
    return Said(code, values)


def loads(text: str | Mapping[str, Any] | None) -> Said | None:
    """The sentence stored as JSON (or read from it), or None (no data: a row written before
    it was kept)."""
    if not text:
        return None
    try:
        found = json.loads(text) if isinstance(text, str) else text
        return Said(str(found["code"]), dict(found.get("values") or {}),
                    tuple((str(sep), str(code)) for sep, code in found.get("parts") or ()))
    except (ValueError, KeyError, TypeError):
        return None


class Told(Exception):
    """A refusal said as data: `str()` is the English, `said` the code the console renders.

    Built from a code of ENGLISH and its values, or (older call sites, the command line) from
    plain English text, which the console then shows as it is."""

    def __init__(self, code: str, **values: Value) -> None:
        self.said = Said(code, values) if code in ENGLISH else Said("", {"text": code})
        super().__init__(self.said.english())
