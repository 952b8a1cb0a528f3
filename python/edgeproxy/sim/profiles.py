"""Per-task behaviour of a simulated model: how often it is right, how fast, how verbose, how
flaky (the market a simulated provider plays; docs/simulator.md, "Market profiles").

A ``ModelProfile`` maps task names to a ``TaskProfile``; a task it does not list uses its
``default``. The simulated model decides right or wrong per request from ``quality`` with a seeded
draw (``sim/play.py``), so a run is reproducible; the answer text is then really right or really
wrong, and an eval's grader judges the text, never a flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskProfile:
    """One model on one task.

    - ``quality``: the probability that an answer is right (0..1).
    - ``ttft``: seconds before the first visible token (before ``time_scale``), not counting
      the hidden reasoning tokens, which are generated at ``tokens_per_second`` before it.
    - ``tokens_per_second``: generation speed of every token, hidden or visible (0 or inf:
      unpaced).
    - ``verbosity``: billed output tokens per visible token (>= 1). The extra tokens are hidden
      reasoning (``usage.completion_tokens_details.reasoning_tokens``): same rate card, more
      tokens, higher cost per answer; the seeds' "3x the tokens" trap is ``verbosity: 3``.
    - ``error_rate``: the probability that a request fails (0..1): a stream breaks with an
      in-stream ``overloaded_error`` half-way through the answer (the tokens sent are billed), a
      non-stream request gets a 529.
    """

    quality: float = 1.0
    ttft: float = 0.05
    tokens_per_second: float = 200.0
    verbosity: float = 1.0
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_unit("quality", self.quality)
        _check_unit("error_rate", self.error_rate)
        if not (isinstance(self.ttft, int | float) and 0 <= self.ttft < math.inf):
            raise ValueError(f"profile ttft must be a finite number >= 0, got {self.ttft!r}")
        tps = self.tokens_per_second
        if not isinstance(tps, int | float) or math.isnan(tps) or tps < 0:
            raise ValueError(f"profile tokens_per_second must be >= 0, got {tps!r}")
        verbosity = self.verbosity
        if not isinstance(verbosity, int | float) or not 1 <= verbosity <= 100:
            raise ValueError(f"profile verbosity must be in [1, 100], got {verbosity!r}")

    @property
    def token_interval(self) -> float:
        """Seconds per generated token (0: unpaced)."""
        tps = self.tokens_per_second
        return 0.0 if tps == 0 or math.isinf(tps) else 1.0 / tps

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, base: TaskProfile | None = None) -> TaskProfile:
        """From decoded JSON; fields it leaves out keep ``base``'s values (the defaults when
        ``base`` is None). ValueError names what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("a task profile must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValueError(
                f"unknown task profile field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"task profile {name} must be a number, got {value!r}")
            values[str(name)] = float(value)
        return replace(base or cls(), **values)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """A model's behaviour per task; ``default`` for tasks it does not list."""

    tasks: Mapping[str, TaskProfile] = field(default_factory=lambda: MappingProxyType({}))
    default: TaskProfile = field(default_factory=TaskProfile)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", MappingProxyType(dict(self.tasks)))

    def for_task(self, task: str | None) -> TaskProfile:
        if task is None:
            return self.default
        return self.tasks.get(task, self.default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default.to_dict(),
            "tasks": {name: p.to_dict() for name, p in self.tasks.items()},
        }

    @classmethod
    def from_dict(cls, data: object) -> ModelProfile:
        """A whole profile: ``{"default": {...}, "tasks": {"qa": {...}, ...}}`` (both optional;
        a task's fields default to the profile's ``default``)."""
        return cls().merged(data)

    def merged(self, data: object) -> ModelProfile:
        """This profile with the fields ``data`` gives changed (a task not listed yet starts
        from ``default``): how the control API degrades one model on one task live."""
        if not isinstance(data, Mapping):
            raise ValueError("a model profile must be a JSON object")
        unknown = sorted(set(map(str, data)) - {"default", "tasks"})
        if unknown:
            raise ValueError(
                f"unknown model profile field(s) {', '.join(unknown)}; known: default, tasks"
            )
        default = self.default
        if data.get("default") is not None:
            default = TaskProfile.from_dict(data["default"], default)
        tasks = dict(self.tasks)
        given = data.get("tasks") or {}
        if not isinstance(given, Mapping):
            raise ValueError("profile tasks must be a JSON object of task name -> profile")
        for name, task in given.items():
            if not isinstance(name, str) or not name:
                raise ValueError("a task name must be a non-empty string")
            tasks[name] = TaskProfile.from_dict(task, tasks.get(name, default))
        return ModelProfile(tasks, default)


def _check_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"profile {name} must be a number in [0, 1], got {value!r}")
