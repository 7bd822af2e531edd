"""Flow tests a flow editor writes: "a caller from this number presses these keys, must hear
this and end here", kept next to the flows in `flows/tests/*.yaml`.

Each scenario is a real call through the production path: the app factory, the signed
webhooks, the engine and the TwiML adapter, with the Twilio stand-in as the phone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from flask import Flask
from yaml.nodes import MappingNode, SequenceNode

from ivr.casecode import PlantedCase
from ivr.config import Settings
from ivr.errors import StateError
from ivr.limits import MAX_FILE_BYTES
from ivr.standin import CallLog, FlaskTransport, Phone, ScriptedCaller
from ivr.twiml import decode_state
from ivr.yamldoc import Doc, compose, did_you_mean, read_file

# Flow tests always have an operator phone to ring, whatever TRANSFER_NUMBERS says here;
# whether it answers is up to the scenario (`answer`, `busy`, `no-answer` in `press`).
TEST_OPERATOR = "+15005550001"
# `operators: none` runs a scenario with nobody on duty (no operator phone to ring).
# `case: {code: "123456789012", pin: "2468", language: uk}`: a case the call can reach with
# that code and PIN (in memory: no database, nothing kept).
SCENARIO_KEYS = {"name", "from", "at", "press", "hears", "not_hears", "ends_at", "ended", "visits", "keeps",
                 "operators", "case"}


@dataclass
class Scenario:
    where: str
    name: str
    flow: str
    spec: dict[str, Any]


@dataclass
class Result:
    where: str
    name: str
    problems: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    turns: list[tuple[list[str], set[str]]] = field(default_factory=list)  # see CallLog

    @property
    def ok(self) -> bool:
        return not self.problems


def scenario_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    return out


def read(path: Path, default_flow: str) -> tuple[list[Scenario], list[str]]:
    """The scenarios of one file, and what is wrong with the file itself."""
    doc = Doc(str(path))
    text, problem = read_file(path, MAX_FILE_BYTES, "a scenario file")
    if text is None:
        return [], [str(problem)]
    root = compose(text, doc)
    if root is None or not isinstance(root, MappingNode):
        if root is not None:
            doc.problem(root, "a scenario file is a mapping with `scenarios:`")
        return [], [str(p) for p in doc.problems]
    top = doc.mapping(root, "the scenario file") or {}
    doc.keys(root, top, {"scenarios"}, {"flow"}, "the scenario file")
    flow = doc.string(top["flow"][1], "`flow`") if "flow" in top else default_flow
    items = top["scenarios"][1] if "scenarios" in top else None
    scenarios: list[Scenario] = []
    if items is not None and not isinstance(items, SequenceNode):
        doc.problem(items, "`scenarios` must be a list, each item starting with `- `")
        items = None
    for item in items.value if items is not None else []:
        entry = doc.mapping(item, "a scenario")
        if entry is None:
            continue
        doc.keys(item, entry, {"name", "press"}, SCENARIO_KEYS - {"name", "press"}, "a scenario")
        spec = yaml.safe_load(yaml.serialize(item))
        where = f"{path}:{item.start_mark.line + 1}"
        scenarios.append(Scenario(where, str(spec.get("name", "?")), flow or default_flow, spec))
    return scenarios, [str(p) for p in doc.problems]


def run_files(settings: Settings, files: list[Path]) -> list[Result]:
    results: list[Result] = []
    apps: dict[tuple[str, str], Flask] = {}
    for path in files:
        scenarios, problems = read(path, settings.entry_flow)
        if problems:
            results.append(Result(str(path), "the file itself", problems))
            continue
        for sc in scenarios:
            results.append(run(settings, sc, apps))
    return results


def run(settings: Settings, sc: Scenario, apps: dict[tuple[str, str], Flask]) -> Result:
    from ivr import create_app

    result = Result(sc.where, sc.name)
    spec = sc.spec
    at = str(spec.get("at", ""))
    nobody = str(spec.get("operators", "")) == "none"
    key = (sc.flow, at + ("/nobody" if nobody else ""))
    if key not in apps:
        clock = None
        if at:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                result.problems.append(f"`at: {at}` is not a time like 2026-11-25T22:30+02:00")
                return result
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            clock = lambda: when  # noqa: E731
        apps[key] = create_app(
            settings.replace(entry_flow=sc.flow, transfer_numbers=() if nobody else (TEST_OPERATOR,),
                             log_level="WARNING"),
            clock=clock, voicemail=False,  # a scenario's message is not a case
        )
    planted = spec.get("case")
    apps[key].extensions["ivr"].codes = PlantedCase(
        str(planted.get("code", "")), str(planted.get("pin", "")), str(planted.get("language", "")),
    ) if isinstance(planted, dict) else None
    phone = Phone(FlaskTransport(apps[key]), settings.public_base_url, settings.twilio_auth_token,
                  settings.twilio_account_sid, settings.hotline_number)
    presses = [str(p) for p in spec.get("press") or []]
    log = phone.call(str(spec.get("from", "+79161234567")), ScriptedCaller(presses))
    result.heard = [h.text for h in log.heard if h.kind in ("say", "play")]
    result.turns = log.turns
    result.problems += check(spec, log)
    return result


def check(spec: dict[str, Any], log: CallLog) -> list[str]:
    problems = [f"Twilio would fail: {e}" for e in log.errors]
    heard = "\n".join(h.text for h in log.heard if h.kind in ("say", "play")).casefold()
    pos = 0
    for words in _texts(spec.get("hears")):
        found = heard.find(words.casefold(), pos)
        if found < 0:
            where = "at all" if words.casefold() not in heard else "after the text before it"
            problems.append(f"did not hear {words!r} {where}")
        else:
            pos = found + len(words)
    for words in _texts(spec.get("not_hears")):
        if words.casefold() in heard:
            problems.append(f"heard {words!r}, which it must not")
    last = log.steps[-1] if log.steps else "(none)"
    if "ends_at" in spec and str(spec["ends_at"]) != last:
        hint = did_you_mean(str(spec["ends_at"]), log.steps)
        problems.append(f"ended at step `{last}`, not `{spec['ends_at']}`" + (f" ({hint})" if hint else ""))
    if "ended" in spec and str(spec["ended"]) != log.ended:
        problems.append(f"the call ended by {log.ended}, not {spec['ended']}")
    for step in _texts(spec.get("visits")):
        if step not in log.steps:
            problems.append(f"never visited step `{step}` (visited: {', '.join(log.steps)})")
    if isinstance(spec.get("keeps"), dict):
        problems += _kept(spec["keeps"], log)
    return problems


def _kept(keeps: dict[str, Any], log: CallLog) -> list[str]:
    """`keeps: {who: front, people: 3, company: null}`: the call's fields (variables) as the
    hotline last carried them; null for a question skipped."""
    token = parse_qs(urlsplit(log.last_action).query).get("s", [""])[0]
    try:
        variables = dict(decode_state(token).variables) if token else {}
    except StateError:
        variables = {}
    problems = []
    for name, want in keeps.items():
        got = variables.get(str(name))
        if want is None and got is not None:
            problems.append(f"kept `{name}` = `{got}`, but it was to be skipped")
        elif want is not None and got != str(want):
            problems.append(f"kept `{name}` = `{got}`, not `{want}`" if got is not None
                            else f"did not keep `{name}` (expected `{want}`)")
    return problems


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
