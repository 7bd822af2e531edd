"""Where a caller is calling from: the caller's region, from the number alone.

Twilio's FromCountry/FromState fields are often empty and say nothing about occupied
territories, so the region comes from `From` itself: `phonenumbers` parses and validates
it, then the longest matching E.164 prefix of `flows/regions.yaml` wins, then the country.
A withheld number is a normal case, not an error: it gets the fallback region.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from yaml.nodes import MappingNode, Node, SequenceNode

from ivr.engine import Caller
from ivr.limits import MAX_FILE_BYTES
from ivr.yamldoc import Doc, Problem, compose, did_you_mean, read_file

# What Twilio sends in `From` when a caller hides their number.
WITHHELD = {"", "anonymous", "restricted", "unknown", "private", "+266696687", "+7378742833"}


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    prefixes: tuple[str, ...] = ()  # E.164 prefixes such as +7978
    countries: tuple[str, ...] = ()  # phonenumbers region codes such as RU
    language: str = "ru"  # the language its callers most likely speak (routing uses it)
    # The callers' time zone, for a "daytime only" callback (a Russian mobile number does not
    # say which of Russia's eleven zones it is in, so the region says which to assume).
    timezone: str = "UTC"
    caller_id: str | None = None  # the number callers of this region see when called back
    # What operators read for it, per language ((uk, Крим), (en, Crimea)): see `title`.
    names: tuple[tuple[str, str], ...] = ()

    def title(self, language: str) -> str:
        """The region's name in `language`; else in English, else in any language it has, else
        its name in the files (a region without `names`)."""
        found = dict(self.names)
        return found.get(language) or found.get("en") or next(iter(found.values()), self.name)


@dataclass(frozen=True, slots=True)
class Regions:
    regions: tuple[Region, ...]
    fallback: str

    def names(self) -> set[str]:
        return {r.name for r in self.regions} | {self.fallback}

    def region(self, name: str) -> Region:
        return next((r for r in self.regions if r.name == name), Region(name))

    def language(self, name: str) -> str:
        return self.region(name).language

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

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")
E164 = re.compile(r"^\+[1-9]\d{6,14}\Z")


def load_regions(path: Path) -> tuple[Regions, list[Problem]]:
    """Read regions.yaml; a missing file means every caller is in the fallback region.

    Names every problem at its line: a prefix that is not E.164 or starts with no country
    code, a country phonenumbers does not know, a prefix or country given to two regions, a
    fallback that is not declared.
    """
    if not path.is_file():
        return DEFAULT, []
    doc = Doc(str(path))
    text, problem = read_file(path, MAX_FILE_BYTES, "regions.yaml")
    if text is None:
        assert problem is not None
        return DEFAULT, [problem]
    root = compose(text, doc)
    if root is None:
        return DEFAULT, doc.problems
    if not isinstance(root, MappingNode):
        doc.problem(root, "regions.yaml must be a mapping with `regions` and `fallback`")
        return DEFAULT, doc.problems
    top = doc.mapping(root, "regions.yaml") or {}
    doc.keys(root, top, {"regions", "fallback"}, set(), "regions.yaml")
    fallback = doc.name(top["fallback"][1], "`fallback`") if "fallback" in top else None
    regions: list[Region] = []
    owner: dict[str, str] = {}  # a prefix or country -> the region that has it
    entries = (doc.mapping(top["regions"][1], "`regions`") or {}) if "regions" in top else {}
    for name, (_key_node, node) in entries.items():
        entry = doc.mapping(node, f"region `{name}`")
        if entry is None:
            continue
        doc.keys(node, entry, set(),
                 {"prefixes", "countries", "language", "timezone", "caller_id", "names"},
                 f"region `{name}`")
        prefixes = _items(doc, entry, "prefixes", name, owner, _check_prefix)
        countries = _items(doc, entry, "countries", name, owner, _check_country)
        language = "ru"
        if "language" in entry:
            given = doc.string(entry["language"][1], "`language`")
            if given is not None and not LANGUAGE_CODE.match(given):
                doc.problem(entry["language"][1], f"`{given}` is not a language code", "like ru, uk or en")
            language = given or language
        timezone = _optional(doc, entry, "timezone", _check_timezone) or "UTC"
        caller_id = _optional(doc, entry, "caller_id", _check_number)
        names = _names(doc, entry["names"][1], name) if "names" in entry else ()
        regions.append(Region(name, prefixes, countries, language, timezone, caller_id, names))
    if fallback is not None and fallback not in entries:
        doc.problem(top["fallback"][1], f"the fallback region `{fallback}` is not declared under `regions`",
                    f"add `{fallback}: {{language: ru}}` there: a region with no prefixes")
    if any(not p.warning for p in doc.problems) or fallback is None:
        return DEFAULT, doc.problems
    return Regions(tuple(regions), fallback), doc.problems


def _names(doc: Doc, node: Node, region: str) -> tuple[tuple[str, str], ...]:
    """`names: {uk: Крим, en: Crimea}`: a language code and one line of at most 60 characters."""
    found = doc.mapping(node, f"`names` of region `{region}`")
    kept: list[tuple[str, str]] = []
    for language, (key_node, value_node) in (found or {}).items():
        if not LANGUAGE_CODE.match(language):
            doc.problem(key_node, f"`{language}` is not a language code", "like uk or en")
            continue
        text = doc.string(value_node, f"the {language} name of region `{region}`")
        if text is None:
            continue
        if len(text) > 60 or "\n" in text:
            doc.problem(value_node, f"the {language} name of region `{region}` is too long",
                        "one line of at most 60 characters")
            continue
        kept.append((language, text))
    return tuple(kept)


def _items(
    doc: Doc, entry: dict[str, tuple[Node, Node]], key: str, region: str, owner: dict[str, str],
    check: Callable[[str], tuple[str, str] | None],
) -> tuple[str, ...]:
    if key not in entry:
        return ()
    node = entry[key][1]
    nodes = node.value if isinstance(node, SequenceNode) else [node]
    kept: list[str] = []
    for item in nodes:
        text = doc.string(item, "a prefix" if key == "prefixes" else "a country")
        if text is None:
            continue
        wrong = check(text)
        if wrong:
            doc.problem(item, wrong[0], wrong[1])
            continue
        if text in owner:
            doc.problem(item, f"`{text}` is in two regions: `{owner[text]}` and `{region}`",
                        "a number must belong to one region")
            continue
        owner[text] = region
        kept.append(text)
    return tuple(kept)


def _optional(doc: Doc, entry: dict[str, tuple[Node, Node]], key: str,
              check: Callable[[str], tuple[str, str] | None]) -> str | None:
    if key not in entry:
        return None
    node = entry[key][1]
    text = doc.string(node, f"`{key}`")
    if text is None:
        return None
    wrong = check(text)
    if wrong:
        doc.problem(node, wrong[0], wrong[1])
        return None
    return text


def _check_timezone(name: str) -> tuple[str, str] | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"`{name}` is not a time zone", "write it like Europe/Moscow or Europe/Kyiv"
    return None


def _check_number(number: str) -> tuple[str, str] | None:
    if not E164.match(number):
        return f"`{number}` is not a phone number in E.164 form", "write it like +380441234567"
    return None


def _check_prefix(prefix: str) -> tuple[str, str] | None:
    if not (prefix.startswith("+") and prefix[1:].isdigit() and 2 <= len(prefix) <= 16):
        return f"`{prefix}` is not an E.164 prefix", "write it like +7978"
    digits = prefix[1:]
    if not any(phonenumbers.region_codes_for_country_code(int(digits[:n])) for n in (1, 2, 3)):
        return f"`{prefix}` starts with no country calling code", "like +7 (Russia) or +380 (Ukraine)"
    return None


def _check_country(code: str) -> tuple[str, str] | None:
    if code not in phonenumbers.SUPPORTED_REGIONS:
        return (f"`{code}` is not a country code phonenumbers knows",
                did_you_mean(code, phonenumbers.SUPPORTED_REGIONS) or "like RU or UA")
    return None
