"""The project's exceptions.

    IvrError                  anything this project raises on purpose
    ├── ConfigError           settings are missing or wrong; one line each says which and what to set
    ├── FlowError             flows on disk have problems (`.problems` lists every one)
    ├── EngineError           a flow reached a state the engine cannot go on from (our bug, or
    │                         a flow the validator let through); the caller hears an apology
    ├── FlowNotServed         a call needs a flow no good version of which is loaded (its file
    │                         is broken and nothing is archived); also a KeyError
    └── StateError            a call-state token from an action URL could not be read

Errors a user made (a bad flow, a bad setting) carry a message meant for that user: where
and what to do. Everything else is our bug: a stack trace in the log, and a calm sentence
to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.yamldoc import Problem


class IvrError(Exception):
    pass


class ConfigError(IvrError):
    """`.problems`: one line per wrong setting, each saying what to set (ivr.config.explain)."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class FlowError(IvrError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class EngineError(IvrError):
    pass


class FlowNotServed(IvrError, KeyError):
    def __str__(self) -> str:
        return f"flow {self.args[0]!r} is not served (see the flow problems in the log)"


class StateError(IvrError):
    pass
