"""Reading YAML written by people: values with their line and column, problems said plainly.

Flows, regions and flow tests are all edited by hand. `Doc` walks `yaml.compose` nodes, which
keep the position of every value and show duplicate keys that `yaml.safe_load` would silently
merge, and records each problem as `file:line:col: message (hint)`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    col: int
    message: str
    hint: str = ""
    warning: bool = False
    note: bool = False  # for the reader's information (privacy, say): neither error nor warning

    def __str__(self) -> str:
        kind = "note: " if self.note else "warning: " if self.warning else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.col}: {kind}{self.message}{hint}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


class Doc:
    """One YAML document being read: turns nodes into values and records problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node, message: str, hint: str = "", warning: bool = False,
                note: bool = False) -> None:
        mark = node.start_mark
        self.problems.append(
            Problem(self.file, mark.line + 1, mark.column + 1, message, hint, warning or note, note)
        )

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.problem(node, f"{what} must be a mapping of `key: value` lines")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str | int) or isinstance(key, bool):
                self.problem(key_node, f"{what} has a key that is not a name")
                continue
            name = str(key)
            if name in out:
                first = out[name][0].start_mark.line + 1
                self.problem(key_node, f"duplicate key `{name}` in {what} (first at line {first})")
                continue
            out[name] = (key_node, value_node)
        return out

    def keys(
        self,
        node: Node,
        found: dict[str, tuple[Node, Node]],
        required: set[str],
        optional: set[str],
        what: str,
    ) -> None:
        allowed = required | optional
        for key, (key_node, _) in found.items():
            if key not in allowed:
                self.problem(key_node, f"unknown key `{key}` in {what}", did_you_mean(key, allowed))
        for key in sorted(required - found.keys()):
            self.problem(node, f"{what} needs `{key}`")

    def value(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except (yaml.constructor.ConstructorError, ValueError):
                return None  # e.g. a date like 2027-13-45 or an unknown `!tag`: a wrong value
        return None

    def string(self, node: Node, what: str) -> str | None:
        value = self.value(node)
        if isinstance(node, ScalarNode) and value is not None and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
        if isinstance(node, ScalarNode) and node.value and node.style is None:  # yes, no, ~
            meaning = "a yes/no value" if isinstance(value, bool) else "empty"
            self.problem(
                node, f"{what}: YAML reads `{node.value}` as {meaning}, not as words",
                f'put it in quotes: "{node.value}"',
            )
        else:
            self.problem(node, f"{what} must be a non-empty text")
        return None

    def name(self, node: Node, what: str) -> str | None:
        text = self.string(node, what)
        if text is not None and not NAME.match(text):
            self.problem(
                node, f"{what} `{text}` is not a valid name", "use letters, digits, `_` or `-`"
            )
            return None
        return text

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        value = self.value(node)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.problem(node, f"{what} must be a whole number from {low} to {high}")
        return None

    def boolean(self, node: Node, what: str) -> bool | None:
        value = self.value(node)
        if isinstance(value, bool):
            return value
        self.problem(node, f"{what} must be `true` or `false`")
        return None

    def strings(self, node: Node, what: str) -> tuple[str, ...]:
        """A single text or a list of texts."""
        if isinstance(node, SequenceNode):
            items = [self.string(n, what) for n in node.value]
            return tuple(i for i in items if i is not None)
        one = self.string(node, what)
        return (one,) if one is not None else ()


def compose(text: str, doc: Doc) -> Node | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        hint = ""
        if "quoted scalar" in what and exc.context_mark:
            mark = exc.context_mark  # the opening quote, not the end of the file
            what, hint = "a quote is never closed", "end the text with the same quote mark"
        elif "flow mapping" in what or "flow sequence" in what:
            mark = exc.context_mark or mark  # the opening bracket
            pair = "`{` here is not closed by `}`" if "mapping" in what else "`[` here is not closed by `]`"
            what, hint = f"a {pair}", "or its items are not separated by commas"
        elif "'\\t'" in what:
            what, hint = "a tab character", "indent with spaces, not tabs"
        elif "mapping values are not allowed" in what:
            what, hint = "unexpected `:` here", (
                'if it is part of a text, put the whole text in quotes ("…"); '
                "else check the indentation"
            )
        elif "expected <block end>" in what or "could not find expected ':'" in what:
            what, hint = "the indentation is wrong here", (
                "keys at one level must start in the same column; check the line above too"
            )
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.problems.append(Problem(doc.file, line, col, f"YAML syntax error: {what}", hint))
        return None
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(doc.file, 1, 1, f"YAML error: {exc}"))
        return None
    if node is None:
        doc.problems.append(Problem(doc.file, 1, 1, "the file is empty"))
    return node
