"""Reading YAML written by people: values with their line and column, problems said plainly.

Flows, regions and flow tests are all edited by hand. `Doc` walks `yaml.compose` nodes, which
keep the position of every value and show duplicate keys that `yaml.safe_load` would silently
merge, and records each problem as `file:line:col: message (hint)`.

A file may also be hostile (or just wrong in a big way): `read_file` refuses one over its
size limit before reading it, and `compose` refuses nesting deeper than `MAX_DEPTH` and
more values than `MAX_VALUES` before PyYAML's (recursive) composer can build them, and
again once aliases are counted as the copies they stand for. Nothing here recurses
without a bound.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from ivr.limits import MAX_DEPTH, MAX_PROBLEMS, MAX_VALUES

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

    def guess(self, word: str, choices: Iterable[str]) -> str:
        """`did_you_mean`, while the problems are few enough to be shown at all: a file of
        thousands of unknown keys is not worth a fuzzy match each."""
        return did_you_mean(word, choices) if len(self.problems) < MAX_PROBLEMS else ""

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
                self.problem(key_node, f"unknown key `{key}` in {what}", self.guess(key, allowed))
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
        if isinstance(node, ScalarNode) and node.value and not node.style:  # yes, no, ~ (plain)
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


def size_text(size: int) -> str:
    """A file size as people say it: 51.2 MB, 1 MB, 800 kB."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f}".removesuffix(".0") + " MB"
    return f"{-(-size // 1000)} kB"


def read_file(path: Path, limit: int, what: str = "a flow file") -> tuple[str | None, Problem | None]:
    """The text of a hand-edited file, or the problem that stops it being read.

    The size is checked before reading (and the read is bounded too, in case the file grows
    meanwhile), so a huge file costs nothing but a `stat`.
    """
    try:
        size = path.stat().st_size
        if size <= limit:
            with path.open("rb") as f:
                data = f.read(limit + 1)
            size = len(data)
        if size > limit:
            return None, Problem(
                str(path), 1, 1, f"the file is {size_text(size)}; {what} may be at most "
                f"{size_text(limit)}", "split it into smaller files",
            )
        return data.decode("utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        return None, Problem(str(path), 1, 1, f"cannot read the file: {reason}")


class _Refused(Exception):
    """A limit reached while reading: where, what and what to do."""

    def __init__(self, mark: Any, message: str, hint: str) -> None:
        self.line: int = mark.line + 1 if mark else 1
        self.col: int = mark.column + 1 if mark else 1
        self.message, self.hint = message, hint


DEEP = (f"lists and mappings nest more than {MAX_DEPTH} levels deep here",
        "a flow never needs that many: look for brackets that are not closed")
MANY = (f"the file holds more than {MAX_VALUES:,} values", "split it into smaller files")
# libyaml when PyYAML has it (about ten times faster); the pure-Python parser words the
# syntax errors people see, so a file libyaml refuses is read again by it for the message.
_FAST: Any = getattr(yaml, "CSafeLoader", None)


class _GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth counter in its composer (which recurses per level)
    and a count of values, so it stops at the limits instead of the stack's end."""

    depth = 0
    count = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Refused(self._mark(), *MANY)
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor: Any) -> SequenceNode:
        self._deeper()
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        self._deeper()
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self.depth -= 1

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.depth -= 1
            raise _Refused(self._mark(), *DEEP)

    def _mark(self) -> Any:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event.start_mark


def _prescan(text: str) -> None:
    """Walk libyaml's events (a loop, no recursion) and stop at the first limit reached, so
    its recursive composer only ever sees a file within them."""
    parser = _FAST(text)
    try:
        depth = count = 0
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.NodeEvent):
                count += 1
                if count > MAX_VALUES:
                    raise _Refused(event.start_mark, *MANY)
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise _Refused(event.start_mark, *DEEP)
    finally:
        parser.dispose()


def _compose(text: str) -> Node | None:
    if _FAST is not None:
        try:
            _prescan(text)
            return yaml.compose(text, Loader=_FAST)
        except yaml.YAMLError:
            pass  # read again below, for the message people know
    loader = _GuardedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _expanded_size(root: Node) -> int | Node:
    """How many values the file holds with aliases expanded, stopping past MAX_VALUES; or
    the node that contains itself (`&a [*a]`). Iterative: a post-order walk with a memo."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if not isinstance(node, CollectionNode):
            sizes[key] = 1
            continue
        children: list[Node] = (
            [n for pair in node.value for n in pair] if isinstance(node, MappingNode)
            else list(node.value)
        )
        if done:
            active.discard(key)
            sizes[key] = min(MAX_VALUES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        active.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                return child
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def compose(text: str, doc: Doc) -> Node | None:
    try:
        node = _compose(text)
    except _Refused as refused:
        doc.problems.append(Problem(doc.file, refused.line, refused.col, refused.message,
                                    refused.hint))
        return None
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
    if node is not None:
        size = _expanded_size(node)
        if isinstance(size, Node):
            doc.problem(size, "this value contains itself through an alias (`*name`)",
                        "use an alias only for a value defined before and outside it")
            return None
        if size > MAX_VALUES:
            doc.problem(node, f"the file holds more than {MAX_VALUES:,} values, counting "
                        "each alias (`*name`) as a copy of what it names",
                        "use fewer aliases, or split the file")
            return None
    if node is None:
        doc.problems.append(Problem(doc.file, 1, 1, "the file is empty"))
    return node
