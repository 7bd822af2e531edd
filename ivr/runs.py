"""How far one answer to Twilio can go: the runs of steps the engine walks without waiting.

A webhook's answer is one run of the engine: say, set, language, branch and goto steps one
after another until a step waits for the caller. The engine stops a call whose run is longer
than MAX_AUTOMATIC_STEPS, and Twilio refuses an answer over MAX_TWIML_BYTES; the loader
refuses a flow where either can happen, worked out here on the flow model (no I/O, no
recursion: a chain of hundreds of steps is a loop, not a deep stack).
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape

from yaml.nodes import Node

from ivr.flow import (
    Branch,
    CaseCode,
    Digits,
    Flow,
    Goto,
    Hangup,
    Menu,
    Prompt,
    Record,
    Say,
    SetLanguage,
    SetVariables,
    Step,
    Transfer,
    variables_set,
)
from ivr.limits import (
    ANSWER_BYTES,
    MAX_AUTOMATIC_STEPS,
    MAX_TWIML_BYTES,
    MAX_VARIABLE_CHARS,
    UTTERANCE_BYTES,
)
from ivr.yamldoc import Doc

At = tuple[str, str]  # (flow id, step name)


def _prompt_bytes(prompt: Prompt | None) -> int:
    """The most one prompt adds to a TwiML answer, in its longest language."""
    if not prompt:
        return 0
    return UTTERANCE_BYTES + max(
        max(len(escape(t.text).encode()), 3 * len((t.audio or "").encode()))
        for t in prompt.values()
    )


def _step_bytes(step: Step) -> int:
    match step:
        case Say():
            return _prompt_bytes(step.prompt) + (UTTERANCE_BYTES if step.pause else 0)
        case Menu():
            hints = sum(len(escape(w, {'"': "&quot;"}).encode()) + 2
                        for o in step.options for ws in o.words.values() for w in ws)
            extra = max(_prompt_bytes(step.no_input), _prompt_bytes(step.wrong_key))
            return _prompt_bytes(step.prompt) + extra + hints
        case Digits() | CaseCode():
            return _prompt_bytes(step.prompt) + _prompt_bytes(step.wrong_key)
        case SetLanguage() | Record() | Transfer() | Hangup():
            return _prompt_bytes(step.prompt)
    return 0


def state_bytes(sets: Mapping[str, Mapping[str, Step]]) -> int:
    """The longest call state (JSON, then base64) that the action URLs may carry."""
    names = {k for steps in sets.values() for s in steps.values() for k in variables_set(s)}
    raw = 200 + sum(len(n) + 6 * MAX_VARIABLE_CHARS + 8 for n in names)
    return -(-raw * 4 // 3)


class Runs:
    """The longest runs of steps one answer can walk, as the engine walks them.

    A run starts at any step (every step is reachable, so the longest runs start where a
    call starts or resumes) and goes on through say, set, language, branch and goto steps,
    through a transfer that finds nobody to ring (to `no_answer`) or is out of hours (to
    `out_of_hours`), and ends at a menu, record, hangup or a transfer that rings. Worked out
    once per step, iteratively, with the path kept for the message.
    """

    def __init__(self, flows: Mapping[str, Mapping[str, Step]], state_bytes: int,
                 follow: Mapping[str, Flow] | None = None) -> None:
        self.flows = flows
        self.follow = follow  # the set a goto leads into; None: a goto ends the run here
        self.state_bytes = state_bytes
        self.steps: dict[At, tuple[int, At | None]] = {}
        self.bytes: dict[At, tuple[int, At | None]] = {}
        self.cycle: list[At] | None = None

    def after(self, at: At) -> list[At]:
        flow_id, name = at
        step = self.flows[flow_id].get(name)
        match step:
            case Say() | SetLanguage() | SetVariables():
                nxt = [step.next]
            case Branch():
                nxt = [c.next for c in step.when] + [step.otherwise]
            case Transfer():
                nxt = [step.no_answer] + (
                    [step.out_of_hours] if step.hours and step.out_of_hours else []
                )
            case Goto() if self.follow is not None and step.flow in self.follow:
                target = self.follow[step.flow]
                return [(target.id, step.step or target.start)]
            case _:
                nxt = []
        return [(flow_id, n) for n in dict.fromkeys(nxt)]

    def walk(self, start: At) -> None:
        """Fill in the longest runs from `start`, or set `.cycle`."""
        if start in self.steps:
            return
        on_path = {start}
        path = [start]
        stack = [iter(self.after(start))]
        while stack:
            for nxt in stack[-1]:
                if nxt in self.steps:
                    continue
                if nxt in on_path:
                    self.cycle = path[path.index(nxt):]
                    return
                on_path.add(nxt)
                path.append(nxt)
                stack.append(iter(self.after(nxt)))
                break
            else:
                stack.pop()
                at = path.pop()
                on_path.discard(at)
                after = self.after(at)
                longest = max(after, key=lambda a: self.steps[a][0], default=None)
                heaviest = max(after, key=lambda a: self.bytes[a][0], default=None)
                step = self.flows[at[0]][at[1]]
                self.steps[at] = (1 + (self.steps[longest][0] if longest else 0), longest)
                self.bytes[at] = (
                    _step_bytes(step) + (self.bytes[heaviest][0] if heaviest else 0), heaviest
                )

    def path(self, start: At, table: dict[At, tuple[int, At | None]]) -> list[At]:
        out: list[At] = []
        at: At | None = start
        while at is not None:
            out.append(at)
            at = table[at][1]
        return out


def _chain(path: list[At], home: str) -> str:
    names = [f"`{s}`" if f == home else f"`{f}: {s}`" for f, s in path]
    if len(names) > 6:
        names = [*names[:3], "…", *names[-2:]]
    return " -> ".join(names)


def check_runs(doc: Doc, runs: Runs, flow_id: str, steps: Mapping[str, Step],
                nodes: Mapping[str, Node]) -> None:
    """Refuse a flow where one answer walks more steps than the engine allows, or says more
    than one TwiML answer can hold."""
    for name in steps:
        runs.walk((flow_id, name))
        if runs.cycle:
            doc.problem(
                nodes[runs.cycle[0][1]] if runs.cycle[0][0] == flow_id else nodes[name],
                "these steps loop without waiting for the caller when no operator can be rung: "
                + _chain([*runs.cycle, runs.cycle[0]], flow_id),
                "send `no_answer` to a menu or record step",
            )
            return
    mine = [(flow_id, name) for name in steps]
    longest = max(mine, key=lambda a: runs.steps[a][0])
    count = runs.steps[longest][0]
    if count > MAX_AUTOMATIC_STEPS:
        doc.problem(
            nodes[longest[1]],
            f"{count} steps in a row run without waiting for the caller "
            f"({_chain(runs.path(longest, runs.steps), flow_id)}); a call stops after "
            f"{MAX_AUTOMATIC_STEPS}", "put a menu or record step among them",
        )
    heaviest = max(mine, key=lambda a: runs.bytes[a][0])
    size = runs.bytes[heaviest][0] + ANSWER_BYTES + 3 * runs.state_bytes
    if size > MAX_TWIML_BYTES:
        chain = runs.path(heaviest, runs.bytes)
        what = (f"step `{heaviest[1]}` says" if len(chain) == 1
                else f"the steps {_chain(chain, flow_id)} say")
        doc.problem(
            nodes[heaviest[1]],
            f"{what} too much for one answer to Twilio: about {size:,} bytes of TwiML, "
            f"over the limit of {MAX_TWIML_BYTES:,}",
            "shorten the prompts, or put a menu between them",
        )
