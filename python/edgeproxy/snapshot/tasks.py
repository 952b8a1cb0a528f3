"""The compiled ``tasks:`` section of a policy: the task categories, the rules that assign them
(first match wins), and the learned classifier for what the rules leave (docs/tasks.md).

Built once per load by ``policy/tasks.py``: regexes and keywords are compiled then, the model
file is read and checked then; ``routing/tasks.py`` classifies requests against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from edgeproxy._core import TaskModel, TextPattern

DEFAULT_TASK = "default"
"""The task of a request nothing else decided, unless its route names another
(``default_task``); always a known task."""

DEFAULT_MIN_CONFIDENCE = 0.6
"""Below this probability the classifier's answer is not taken: the route's default task is."""

ResponseFormat = Literal["json", "json_object", "json_schema", "text"]


@dataclass(frozen=True, slots=True)
class Range:
    """``min <= n <= max``; either bound may be absent (never both)."""

    min: int | None = None
    max: int | None = None

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int) or isinstance(n, bool):
            return False
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    def __str__(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min}-{self.max}"
        return f">= {self.min}" if self.min is not None else f"<= {self.max}"


@dataclass(frozen=True, slots=True)
class TaskRule:
    """One rule of ``tasks.rules``: every condition it sets must hold (at least one is set)."""

    index: int  # its place in tasks.rules (decisions name it)
    task: str
    name: str | None = None
    routes: frozenset[str] | None = None  # route names or aliases the app called
    tools: bool | None = None  # the request offers tools (true) or none (false)
    response_format: ResponseFormat | None = None
    prompt_tokens: Range | None = None  # counted in ``Tasks.tokenizer``
    max_tokens: Range | None = None  # max_completion_tokens, else max_tokens
    messages: Range | None = None  # the number of messages
    system_regex: str | None = None
    system_keywords: tuple[str, ...] = ()
    # Compiled once at load. Not compared: two rules are equal when they are written alike.
    regex: TextPattern | None = field(default=None, compare=False, repr=False)
    keywords: TextPattern | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """How decisions name the rule: ``rules[2]`` or ``rules[2] (json-out)``."""
        return f"rules[{self.index}]" + (f" ({self.name})" if self.name else "")

    def conditions(self) -> list[str]:
        """Its conditions in words, in the order they are checked."""
        out = []
        if self.routes is not None:
            out.append(f"route in {', '.join(sorted(self.routes))}")
        if self.tools is not None:
            out.append("tools offered" if self.tools else "no tools")
        if self.response_format is not None:
            out.append(f"response_format {self.response_format}")
        if self.messages is not None:
            out.append(f"messages {self.messages}")
        if self.max_tokens is not None:
            out.append(f"max_tokens {self.max_tokens}")
        if self.system_regex is not None:
            out.append(f"system prompt matches /{self.system_regex}/")
        if self.system_keywords:
            out.append(f"system prompt has {' | '.join(self.system_keywords)}")
        if self.prompt_tokens is not None:
            out.append(f"prompt_tokens {self.prompt_tokens}")
        return out

    def describe(self) -> str:
        """One line: ``rules[0] (json-out): extraction if response_format json, no tools``."""
        return f"{self.label}: {self.task} if {', '.join(self.conditions())}"


class ModelFile(NamedTuple):
    """Which model file a policy loaded: where, and its content's digest (a retrained model at
    the same path is a change ``policy diff`` reports)."""

    path: str
    digest: str  # the file's XXH3-128, hex


@dataclass(frozen=True, slots=True)
class TaskClassifier:
    """The learned classifier: asked when no rule matched."""

    model_file: ModelFile
    model: TaskModel = field(compare=False, repr=False)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE


@dataclass(frozen=True, slots=True)
class Tasks:
    """A policy's task settings. The default (no ``tasks:`` section) gives every request the
    route's default task."""

    categories: tuple[str, ...] = ()
    explicit: bool = True  # the app may name the task (x-edgeproxy-task, metadata.task)
    tokenizer: str = "o200k_base"  # the encoding prompt_tokens conditions count in
    rules: tuple[TaskRule, ...] = ()
    classifier: TaskClassifier | None = None

    def knows(self, name: str) -> bool:
        """True for a declared task and for ``DEFAULT_TASK``."""
        return name == DEFAULT_TASK or name in self.categories

    @property
    def counts_prompt(self) -> bool:
        """Some rule may need the prompt's token count."""
        return any(rule.prompt_tokens is not None for rule in self.rules)
