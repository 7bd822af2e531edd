"""Where a caller is calling from: the caller's region, from the number alone.

Twilio's FromCountry/FromState fields are often empty and say nothing about occupied
territories, so the region comes from `From` itself: `phonenumbers` parses and validates
it, then the longest matching E.164 prefix of `flows/regions.yaml` wins, then the country.
A withheld number is a normal case, not an error: it gets the fallback region.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from yaml.nodes import MappingNode

from ivr.engine import Caller
from ivr.yamldoc import Doc, Problem, compose

# What Twilio sends in `From` when a caller hides their number.
WITHHELD = {"", "anonymous", "restricted", "unknown", "private", "+266696687", "+7378742833"}


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    prefixes: tuple[str, ...] = ()  # E.164 prefixes such as +7978
    countries: tuple[str, ...] = ()  # phonenumbers region codes such as RU


@dataclass(frozen=True, slots=True)
class Regions:
    regions: tuple[Region, ...]
    fallback: str

    def names(self) -> set[str]:
        return {r.name for r in self.regions} | {self.fallback}

    def which(self, number: str) -> tuple[Caller, str]:
        """The caller's region and the rule that decided it (for people, not for logs)."""
        raw = (number or "").strip()
        if raw.lower() in WITHHELD:
            return Caller(True, None, self.fallback), "withheld number"
        try:
            parsed = phonenumbers.parse(raw if raw.startswith("+") else "+" + raw, None)
        except phonenumbers.NumberParseException:
            return Caller(True, None, self.fallback), "not a phone number"
        if not phonenumbers.is_possible_number(parsed):
            return Caller(True, None, self.fallback), "not a possible phone number"
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        country = phonenumbers.region_code_for_number(parsed)
        best: tuple[int, Region | None] = (0, None)
        for region in self.regions:
            for prefix in region.prefixes:
                if e164.startswith(prefix) and len(prefix) > best[0]:
                    best = (len(prefix), region)
        if best[1] is not None:
            prefix = max((p for p in best[1].prefixes if e164.startswith(p)), key=len)
            return Caller(False, country, best[1].name), f"prefix {prefix}"
        for region in self.regions:
            if country and country in region.countries:
                return Caller(False, country, region.name), f"country {country}"
        return Caller(False, country, self.fallback), "no rule matched"


DEFAULT = Regions((), "elsewhere")


def load_regions(path: Path) -> tuple[Regions, list[Problem]]:
    """Read regions.yaml; a missing file means every caller is in the fallback region."""
    if not path.is_file():
        return DEFAULT, []
    doc = Doc(str(path))
    root = compose(path.read_text(encoding="utf-8"), doc)
    if root is None:
        return DEFAULT, doc.problems
    if not isinstance(root, MappingNode):
        doc.problem(root, "regions.yaml must be a mapping with `regions` and `fallback`")
        return DEFAULT, doc.problems
    top = doc.mapping(root, "regions.yaml") or {}
    doc.keys(root, top, {"regions", "fallback"}, set(), "regions.yaml")
    fallback = doc.name(top["fallback"][1], "`fallback`") if "fallback" in top else None
    regions: list[Region] = []
    for name, (_key_node, node) in (
        (doc.mapping(top["regions"][1], "`regions`") or {}) if "regions" in top else {}
    ).items():
        entry = doc.mapping(node, f"region `{name}`")
        if entry is None:
            continue
        doc.keys(node, entry, set(), {"prefixes", "countries"}, f"region `{name}`")
        prefixes = doc.strings(entry["prefixes"][1], "a prefix") if "prefixes" in entry else ()
        for p in prefixes:
            if not (p.startswith("+") and p[1:].isdigit()):
                doc.problem(entry["prefixes"][1], f"`{p}` is not an E.164 prefix", "write it like +7978")
        countries = doc.strings(entry["countries"][1], "a country") if "countries" in entry else ()
        regions.append(Region(name, prefixes, countries))
    if any(not p.warning for p in doc.problems) or fallback is None:
        return DEFAULT, doc.problems
    return Regions(tuple(regions), fallback), doc.problems
