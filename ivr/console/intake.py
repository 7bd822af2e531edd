"""The caller's intake answers in the console: the queue's tags and filter, the case's facts.

The answers are codes a flow declares (`fields:` in flows/*.yaml, ivr/flow.py `Field`), each
with its label in the console's languages; here they become words in the reader's language.
An answer no served flow declares any more is shown as its code, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ivr.flow import Field
from ivr.yamldoc import NAME  # a field's name, as the loader takes it


@dataclass(frozen=True, slots=True)
class Tag:
    field: str
    text: str
    urgent: bool


def _label(field: Field | None, name: str, lang: str) -> str:
    return (field.label.get(lang) or field.label.get("en") or name) if field else name


def tags(answers: Mapping[str, str], fields: Mapping[str, Field], lang: str) -> list[Tag]:
    """Short tags for the queue, in the order the flow declares its fields: a choice by its
    label ("На фронті"), a number with its field's label ("Скільки людей: 5")."""
    order = [n for n in fields if n in answers] + sorted(n for n in answers if n not in fields)
    out = []
    for name in order:
        field, value = fields.get(name), answers[name]
        if field is None or field.number:
            text = f"{_label(field, name, lang)}: {value}"
        else:
            text = field.shown(value, lang)
        out.append(Tag(name, text, bool(field and value in field.urgent)))
    return out


def facts(answers: Mapping[str, str], fields: Mapping[str, Field], lang: str) -> list[tuple[str, str]]:
    """(question, answer) for the case page; a question skipped is not listed."""
    order = [n for n in fields if n in answers] + sorted(n for n in answers if n not in fields)
    return [(_label(fields.get(n), n, lang),
             fields[n].shown(answers[n], lang) if n in fields else answers[n]) for n in order]


def choices(fields: Mapping[str, Field], lang: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The queue filter's choices, per field with values: (field label, [(name=value, label)])."""
    return [(_label(f, name, lang), [(f"{name}={v}", f.shown(v, lang)) for v in f.values])
            for name, f in fields.items() if not f.number]


def parse_filter(raw: str | None, fields: Mapping[str, Field]) -> tuple[str, str] | None:
    """`who=front` from the query string, if it names a declared field and one of its values."""
    name, _, value = (raw or "").partition("=")
    if not (NAME.match(name) and name in fields and fields[name].allows(value)):
        return None
    return name, value
