"""The caller's path through the flow, told in the reader's words.

The engine keeps a short list of events per call (ivr/engine.py: `language:uk`, `topic:surrender`,
`operator:unanswered`, …); the case keeps it sealed. Here each event becomes one sentence, in
English for `_()` to translate, so the console says "Chose the language: Ukrainian" instead of
a code. An event this module does not know is said as it is, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

TOPICS = {"mobilised": "called up or mobilised", "surrender": "how to surrender safely"}
OPERATOR = {
    "answered": "Asked for an operator: was put through to one.",
    "unanswered": "Asked for an operator: operators were rung, nobody answered (busy).",
    "closed": "Asked for an operator: out of the operators' hours.",
    "nobody": "Asked for an operator: nobody was on duty.",
}


def story(path: list[str] | None, language: str | None, seconds: int | None,
          _: Callable[[str], str], languages: Mapping[str, str]) -> list[str]:
    """One sentence per event of `path`, then the message; `_` translates, `languages` names
    the languages in the reader's own (ivr/console/i18n.py LANGUAGE_NAMES)."""
    if path is None:
        lines = [_("This call's path through the menus was not kept (a call from before it was, "
                   "or a message left after a fault).")]
    else:
        lines = []
        for event in path:
            kind, _sep, value = event.partition(":")
            if kind == "language":
                lines.append(_("Chose the language: %(language)s.") % {
                    "language": languages.get(value, value)})
            elif kind == "topic":
                lines.append(_("Topic: %(topic)s.") % {"topic": _(TOPICS.get(value, value))})
            elif kind == "operator":
                lines.append(_(OPERATOR[value]) if value in OPERATOR else event)
            elif event == "menu:failed":
                lines.append(_("Did not answer a menu (silence or wrong keys) and was taken on."))
            else:
                lines.append(event)
        if not any(e.startswith("language:") for e in path):
            lines.insert(0, _("Did not choose a language; the menus spoke %(language)s.") % {
                "language": languages.get(language or "", language or "?")})
        if not any(e.startswith("operator:") for e in path):
            lines.append(_("Did not ask for an operator."))
    if seconds:
        lines.append(_("Left a message of %(seconds)s s.") % {"seconds": seconds})
    else:
        lines.append(_("Left a message."))
    return lines
