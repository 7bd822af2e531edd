"""How the console says things to the one reading it: in their language and their time zone.

A `Reader` is made per request (views.py) and handed to the templates as `r`. Everything a
page shows that is not the operators' or the callers' own words goes through it: a case's
state (from its status and operator, so that two words on a page never contradict each
other), reasons and timeline entries (kept as codes and values, ivr/reasons.py), times (one
format, `05.12.2026 14:11`, in the reader's zone, named once per page), ages, regions (their
`names` in regions.yaml), languages, roles and hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.console.i18n import times, translate
from ivr.reasons import Said, Value, loads
from ivr.routing import Regions

DATE_TIME = "%d.%m.%Y %H:%M"
LANGUAGES = {"ru": "Russian", "uk": "Ukrainian", "en": "English"}
ROLES = {"operator": "operator", "supervisor": "supervisor", "admin": "admin"}
CONSENTS = {"any": "any time", "day": "daytime only"}
# What an audit entry's action says; an action missing here is shown as its code.
ACTIONS = {
    "call": "call to the hotline",
    "case-created": "case created",
    "consent": "the caller answered about a callback",
    "transcribed": "transcribed",
    "transcription_failed": "could not be transcribed",
    "recording-failed": "the recording could not be fetched or read",
    "found-at-provider": "found at Twilio without a report",
    "assigned": "given to an operator",
    "unassigned": "no operator could take it",
    "reassigned": "passed to another operator",
    "sms-sent": "SMS sent",
    "sms-failed": "SMS not sent",
    "escalated": "supervisors told: no operator",
    "transcript-read": "transcript read",
    "audio-played": "recording listened to",
    "note-added": "note added",
    "reply-written": "reply to the caller written",
    "reply-heard": "the caller heard a reply",
    "outcome": "outcome set",
    "closed": "case closed",
    "reopened": "case reopened",
    "taken": "case taken",
    "flagged": "marked as a possible probe",
    "flag-cleared": "probe flag cleared",
    "probe-confirmed": "confirmed as a probe",
    "purged": "the caller's data destroyed (retention)",
    "callback-scheduled": "callback scheduled",
    "callback-started": "callback started",
    "callback-answered": "callback: the caller answered",
    "callback-busy": "callback: the caller's line was busy",
    "callback-no-answer": "callback: the caller did not answer",
    "callback-failed": "callback: the call failed",
    "callback-canceled": "callback: cancelled",
    "callback-operator-busy": "callback: the operator's line was busy",
    "callback-operator-no-answer": "callback: the operator did not answer",
    "callback-operator-failed": "callback: the operator's phone could not be called",
    "callback-not-confirmed": "callback: the operator did not press 1",
    "callback-callee-not-confirmed": "callback: the caller did not confirm",
    "callback-gave-up": "callback: no more attempts",
    "signed-in": "signed in",
    "signed-out": "signed out",
    "totp-enrolled": "second factor set up",
    "totp-reset": "second factor reset",
    "password-set": "password set",
    "sign-in-attack": "many failed sign-ins",
    "operator-added": "operator added",
    "operator-edited": "operator changed",
    "operator-number-changed": "operator's phone number changed",
    "operator-numbers-read": "operators' phone numbers read",
}
# Callback attempts' outcomes (ivr/callbacks.py) as the case page lists them.
OUTCOMES = {
    "answered": "the caller answered", "busy": "the caller's line was busy",
    "no-answer": "the caller did not answer", "failed": "the call failed", "canceled": "cancelled",
    "operator-busy": "the operator's line was busy", "operator-no-answer": "the operator did not answer",
    "operator-failed": "the operator's phone could not be called",
    "not-confirmed": "the operator did not press 1", "callee-not-confirmed": "the caller did not confirm",
}
# A case's callback_status (ivr/storage.py Case) as the reader sees it.
CALLBACKS = {"none": "no callback planned", "waiting": "waiting for its operator",
             "calling": "calling now", "queued": "about to ring", "scheduled": "scheduled",
             "answered": "the caller answered", "gave_up": "no more attempts"}
ACTORS = {"system": "system", "caller": "caller"}
READS = ("transcript-read", "audio-played")  # summed up per reader in the timeline
DAYS = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat",
        "sun": "Sun", "daily": "daily", "always": "always"}


def zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        try:
            return ZoneInfo(candidate or "")
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


class Names(Mapping[int, str]):
    """Operators' names by id, read from `load` when a page first names one."""

    def __init__(self, load: Callable[[], dict[int, str]]) -> None:
        self._load = load
        self._found: dict[int, str] | None = None

    def _names(self) -> dict[int, str]:
        if self._found is None:
            self._found = self._load()
        return self._found

    def __getitem__(self, key: int) -> str:
        return self._names()[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


@dataclass
class Reader:
    """The one reading the page: their language, their time zone, the clock, and the names of
    regions and operators the page may mention."""

    locale: str
    tz: ZoneInfo
    now: datetime
    regions: Regions
    operators: Mapping[int, str] = field(default_factory=dict)  # id -> name
    daytime: tuple[int, int] = (9 * 60, 21 * 60)

    def _(self, text: str) -> str:
        return translate(self.locale, text)

    # --- times ---

    def when(self, at: datetime | str | None) -> str:
        """A time in the reader's zone, the one format of the console: 05.12.2026 14:11."""
        found = _time(at)
        return found.astimezone(self.tz).strftime(DATE_TIME) if found else "—"

    def clock(self, at: datetime | str | None) -> str:
        """Only the time of day, for today's events: 14:11; another day gets the date too."""
        found = _time(at)
        if found is None:
            return "—"
        local = found.astimezone(self.tz)
        same_day = local.date() == self.now.astimezone(self.tz).date()
        return local.strftime("%H:%M") if same_day else local.strftime(DATE_TIME)

    def zone_name(self) -> str:
        """The zone, said once per page: Europe/Kyiv (UTC+02:00)."""
        offset = self.now.astimezone(self.tz).strftime("%z")
        return f"{self.tz.key} (UTC{offset[:3]}:{offset[3:]})"

    def local_now(self, tz: str | None) -> str:
        """The time now where the caller is (their region's zone): 21:14."""
        return self.now.astimezone(zone(tz, "UTC")).strftime("%H:%M")

    def age(self, at: datetime | str | None) -> str:
        found = _time(at)
        if found is None:
            return "—"
        minutes = max(0, int((self.now - found).total_seconds() // 60))  # a clock behind: 0
        if minutes < 60:
            return self._("%(n)s min") % {"n": minutes}
        if minutes < 48 * 60:
            return self._("%(n)s h") % {"n": minutes // 60}
        return self._("%(n)s d") % {"n": minutes // 1440}

    # --- names ---

    def region(self, name: str | None) -> str:
        return self.regions.region(name).title(self.locale) if name else "—"

    def language(self, code: str | None) -> str:
        return self._(LANGUAGES[code]) if code in LANGUAGES else (code or "—")

    def languages(self, codes: str) -> str:
        return ", ".join(self.language(c) for c in codes.split(",") if c)

    def region_list(self, names: str) -> str:
        return ", ".join(self.region(n) for n in names.split(",") if n)

    def role(self, role: str) -> str:
        return self._(ROLES.get(role, role))

    def hours(self, spec: str) -> str:
        """`mon-fri 09:00-18:00` with the days in the reader's language: пн-пт 09:00-18:00."""
        out = spec.lower()
        for word, english in sorted(DAYS.items(), key=lambda kv: -len(kv[0])):
            out = out.replace(word, "\0" + english + "\0")
        return "".join(self._(part) if part in DAYS.values() else part for part in out.split("\0"))

    def operator(self, operator_id: int | str | None) -> str:
        try:
            found = self.operators.get(int(operator_id)) if operator_id is not None else None
        except ValueError:
            found = None
        return found or (f"#{operator_id}" if operator_id is not None else "—")

    def actor(self, actor: str) -> str:
        """Who did it: an operator's name, the system, the caller, the admin at the server."""
        kind, _sep, rest = actor.partition(":")
        if kind == "operator" and rest:
            return self.operator(rest)
        if kind in ("cli", "admin"):
            return self._("admin (server command)")
        return self._(ACTORS.get(kind, kind))

    def consent(self, consent: str | None) -> str:
        return self._(CONSENTS.get(consent or "", "no callback"))

    def safe_hours(self, consent: str | None, tz: str | None) -> str:
        """The caller's consent window: "лише вдень, 09:00-21:00 (Europe/Moscow)"."""
        if consent == "day":
            start, end = self.daytime
            return (f"{self._('daytime only')}, {start // 60:02d}:{start % 60:02d}-"
                    f"{end // 60:02d}:{end % 60:02d} ({tz or 'UTC'})")
        return self.consent(consent)

    # --- a case ---

    def state(self, status: str, operator: str | None) -> str:
        """What a case is now, from its status and operator: the words never contradict."""
        if status == "closed":
            return self._("closed")
        if operator:
            return self._("assigned to %(name)s") % {"name": operator}
        if status == "routed":
            return self._("waiting for an operator")
        return self._("being processed")

    def callback(self, status: str | None) -> str:
        return self._(CALLBACKS.get(status or "none", status or ""))

    def outcome(self, outcome: str | None) -> str:
        return self._(OUTCOMES.get(outcome or "", outcome or "…"))

    def heard(self, at: datetime | str | None, count: int = 1) -> str:
        """Whether and when the caller heard a reply (ivr/replies.py): the first time, and how
        often when more than once."""
        if _time(at) is None:
            return self._("not heard yet")
        if count > 1:
            return self._("first heard %(when)s; heard %(times)s") % {
                "when": self.when(at), "times": times(self.locale, count)}
        return self._("heard %(when)s") % {"when": self.when(at)}

    def seconds(self, n: int | None) -> str:
        return self._("%(n)s s") % {"n": n} if n else ""

    def said(self, found: Said | str | Mapping[str, Any] | None, plain: str | None = None) -> str:
        """A reason or detail kept as data, in the reader's words; without data (a row from
        before), `plain` as written (the English of old rows, or a person's own words)."""
        if not isinstance(found, Said):
            found = loads(found)
        if found is None:
            return self._(plain) if plain else ""
        values = dict(found.values)
        if "consent" in values and "window" in values:
            values["window"] = self.safe_hours(str(values["consent"]), str(values.get("zone") or ""))
        return replace(found, values=values).render(self._, self._value)

    def _value(self, key: str, value: Value) -> str:
        if value is None:
            return ""
        text = str(value)
        if key == "region":
            return self.region(text)
        if key in ("language", "spoken", "chose"):
            return self.language(text).lower() if self.locale == "uk" else self.language(text)
        if key == "operator":
            return self.operator(text)
        if key == "operators":
            return ", ".join(self.operator(x) for x in text.split(",") if x) or "—"
        if key == "consent":
            return self.consent(text)
        if key == "fields":
            return ", ".join(self._(FIELD_NAMES.get(f.strip(), f.strip())) for f in text.split(","))
        if key == "roles":
            return ", ".join(self.role(r.strip()) for r in text.split(","))
        if key == "what":
            return self._(FIELD_NAMES.get(text, text))
        return text

    def action(self, action: str) -> str:
        return self._(ACTIONS.get(action, action))

    def detail(self, action: str, detail: str | None, data: str | Mapping[str, Any] | None) -> str:
        """An audit entry's detail for this reader."""
        if data:
            return self.said(data)
        if action == "outcome" and detail:
            return self._(detail)  # the outcome's own code: helped, no contact, …
        return self._(detail) if detail else ""  # a person's words, or an old row's English

    def timeline(self, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
        """What happened to a case, oldest first, in the reader's words. Readings are summed up
        per reader ("transcript read 9 times, last 14:11"), at the place of the last; each
        stays in the audit log."""
        rows = list(entries)
        last: dict[tuple[str, str], int] = {}
        count: dict[tuple[str, str], int] = {}
        for i, e in enumerate(rows):
            if e["action"] in READS:
                key = (e["actor"], e["action"])
                last[key], count[key] = i, count.get(key, 0) + 1
        out: list[dict[str, str]] = []
        for i, e in enumerate(rows):
            action, actor = e["action"], e["actor"]
            if action in READS:
                key = (actor, action)
                if last[key] != i:
                    continue
                n = count[key]
                what = self.action(action) + (
                    self._(", %(times)s, last %(last)s") % {"times": times(self.locale, n),
                                                           "last": self.clock(e["at"])}
                    if n > 1 else "")
                out.append({"at": self.when(e["at"]), "who": self.actor(actor), "what": what,
                            "detail": ""})
                continue
            detail = self.detail(action, e.get("detail"), e.get("data"))
            if action == "call" and e.get("seconds"):
                detail = self.seconds(int(e["seconds"]))
            out.append({"at": self.when(e["at"]), "who": self.actor(actor), "what": self.action(action),
                        "detail": detail})
        return out


FIELD_NAMES = {"name": "the name", "number": "phone number", "languages": "languages",
               "regions": "regions", "timezone": "the time zone", "hours": "hours",
               "capacity": "capacity", "role": "role", "on_duty": "on duty", "active": "active"}


def _time(at: datetime | str | None) -> datetime | None:
    if at is None or at == "":
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)

