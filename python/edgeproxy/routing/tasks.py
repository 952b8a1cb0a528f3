"""Every request gets a task: the first of these that decides (docs/tasks.md).

1. **explicit**: the app names it, in the ``x-edgeproxy-task`` header, else in ``metadata.task``
   (when ``tasks.explicit``); a name the policy does not declare is refused (``UnknownTask``);
2. **rule**: the first of ``tasks.rules`` whose conditions all hold;
3. **classifier**: the learned model, when its best task's probability reaches
   ``min_confidence``;
4. **default**: the route's ``default_task``.

A pure function of the compiled ``Tasks``, the route, the headers and the parsed body: no I/O,
no clock; regexes were compiled and the model loaded when the policy was. The one thing it may
wait for is the prompt's token count, asked for only when a rule with ``prompt_tokens`` has
every other condition met. The request path calls::

    decision = await classify(policy.tasks, route, request.headers, body, self._prompt_count)
    if isinstance(decision, UnknownTask):
        raise ClientError(400, decision.message, param=decision.param, code="unknown_task")

``headers`` is any mapping with ``get`` (aiohttp's headers are case-insensitive; a plain dict
must use the lower-case name); ``body`` is the parsed OpenAI-shaped request;
``count_prompt(encoding)`` returns the prompt's tokens in that encoding (the exchange's shared
count, or ``PromptTokens.count``). ``classify_now`` is the same with a synchronous count
(``policy explain``, tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeproxy.snapshot import DEFAULT_TASK, Route, TaskRule, Tasks

TASK_HEADER = "x-edgeproxy-task"
"""The request header that names a task, and the response header that says which one ran."""

MAX_RULE_TEXT = 64 * 1024
"""Characters of the system prompt that ``system_regex`` and ``system_keywords`` look at."""

MAX_CLASSIFIER_TEXT = 64 * 1024
"""Characters the classifier is handed: the first and last halves of a longer text (the model
then keeps its own ``max_bytes`` of head and tail)."""

_SYSTEM_ROLES = ("system", "developer")


class TaskSource(StrEnum):
    """What decided a request's task."""

    HEADER = "header"  # x-edgeproxy-task
    METADATA = "metadata"  # metadata.task in the body
    RULE = "rule"
    CLASSIFIER = "classifier"
    DEFAULT = "default"  # the route's default_task


@dataclass(frozen=True, slots=True)
class TaskDecision:
    """A request's task and why it is that one."""

    task: str
    source: TaskSource
    rule: TaskRule | None = None  # the rule that matched (source RULE)
    # The classifier's best task and its probability, when it was asked (source CLASSIFIER, or
    # DEFAULT when the probability was below min_confidence).
    label: str | None = None
    confidence: float | None = None
    min_confidence: float | None = None
    route: str = ""  # the route whose default_task it is (source DEFAULT)

    @property
    def why(self) -> str:
        """One line, e.g. ``rules[1] (json-out)``, ``classifier: qa 0.93``,
        ``default of route 'chat' (classifier: qa 0.41 < 0.6)``."""
        match self.source:
            case TaskSource.HEADER:
                return f"header {TASK_HEADER}"
            case TaskSource.METADATA:
                return "metadata.task in the body"
            case TaskSource.RULE:
                assert self.rule is not None
                return self.rule.label
            case TaskSource.CLASSIFIER:
                return f"classifier: {self.label} {self.confidence:.2f}"
        why = f"default of route {self.route!r}" if self.route else "default"
        if self.label is not None:
            why += f" (classifier: {self.label} {self.confidence:.2f} < {self.min_confidence:g})"
        return why

    def log_fields(self) -> dict[str, str | int | float]:
        """Flat fields for the access log and span attributes: ``task``, ``task_source``, and
        ``task_rule`` (the rule's index) or ``task_label``/``task_score`` when they apply."""
        out: dict[str, str | int | float] = {"task": self.task, "task_source": self.source.value}
        if self.rule is not None:
            out["task_rule"] = self.rule.index
            if self.rule.name:
                out["task_rule_name"] = self.rule.name
        if self.label is not None and self.confidence is not None:
            out["task_label"] = self.label
            out["task_score"] = round(self.confidence, 4)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "source": self.source.value,
            "rule": None if self.rule is None else self.rule.index,
            "rule_name": None if self.rule is None else self.rule.name,
            "label": self.label,
            "confidence": self.confidence,
            "why": self.why,
        }


@dataclass(frozen=True, slots=True)
class UnknownTask:
    """The app named a task the policy does not declare: the request is refused (400)."""

    source: TaskSource  # HEADER or METADATA
    given: str  # what the app sent (for logs; the message quotes it only if it is a name)
    known: tuple[str, ...]

    @property
    def param(self) -> str | None:
        """The body field at fault (for the client's error), or None for the header."""
        return "metadata.task" if self.source is TaskSource.METADATA else None

    @property
    def message(self) -> str:
        where = TASK_HEADER if self.source is TaskSource.HEADER else "metadata.task"
        shown = repr(self.given) if _looks_like_name(self.given) else "a value"
        return (
            f"{where} names {shown}, which is not a task this proxy knows "
            f"(known: {', '.join(self.known)})."
        )


def _looks_like_name(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "_.-") for c in text)


@dataclass(frozen=True, slots=True)
class _NeedsCount:
    rule: int  # resume at this rule once the prompt is counted


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def system_prompt(body: Mapping[str, Any]) -> str:
    """The system and developer messages' text, first ``MAX_RULE_TEXT`` characters."""
    parts = [
        text_of(m.get("content"))
        for m in _messages(body)
        if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES
    ]
    return "\n".join(parts)[:MAX_RULE_TEXT]


def classifier_text(messages: Any) -> str:
    """What the classifier reads of a conversation: the system and developer messages, then
    every user message, one per line (not the assistant's: the app's instructions and the
    user's requests say what the task is). Training reads examples the same way."""
    if not isinstance(messages, list):
        return ""
    system = []
    user = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in _SYSTEM_ROLES:
            system.append(text_of(m.get("content")))
        elif role == "user":
            user.append(text_of(m.get("content")))
    text = "\n".join(system + user)
    if len(text) > MAX_CLASSIFIER_TEXT:
        half = MAX_CLASSIFIER_TEXT // 2
        text = text[:half] + "\n" + text[-half:]
    return text


def _explicit(
    tasks: Tasks, headers: Mapping[str, str], body: Mapping[str, Any]
) -> TaskDecision | UnknownTask | None:
    """The app's own name for the task: a decision, an ``UnknownTask``, or None."""
    named = headers.get(TASK_HEADER)
    source = TaskSource.HEADER
    if named is not None:
        named = named.strip()
    if not named:
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("task") is None:
            return None
        named = metadata["task"]
        source = TaskSource.METADATA
        if not isinstance(named, str):
            return UnknownTask(source, "", _known(tasks))
    if tasks.knows(named):
        return TaskDecision(named, source)
    return UnknownTask(source, named, _known(tasks))


def _known(tasks: Tasks) -> tuple[str, ...]:
    if DEFAULT_TASK in tasks.categories:
        return tasks.categories
    return (*tasks.categories, DEFAULT_TASK)


class _Request:
    """What rules look at, each read once and only when a rule asks."""

    __slots__ = ("_system", "asked", "body", "route")

    def __init__(self, route: Route, body: Mapping[str, Any]) -> None:
        self.route = route
        self.body = body
        asked = body.get("model")
        self.asked = asked if isinstance(asked, str) else route.name
        self._system: str | None = None

    @property
    def system(self) -> str:
        if self._system is None:
            self._system = system_prompt(self.body)
        return self._system

    def tools_offered(self) -> bool:
        tools, functions = self.body.get("tools"), self.body.get("functions")
        return bool(isinstance(tools, list) and tools) or bool(
            isinstance(functions, list) and functions
        )

    def response_format(self) -> str:
        rf = self.body.get("response_format")
        kind = rf.get("type") if isinstance(rf, dict) else None
        return kind if isinstance(kind, str) else "text"

    def max_tokens(self) -> int | None:
        for name in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None


def _holds(rule: TaskRule, request: _Request, prompt_tokens: int | None) -> bool | None:
    """Whether every condition of ``rule`` holds; None when only the prompt count is left to
    check and it is not known yet (the cheap conditions are checked first)."""
    if rule.routes is not None and not (
        request.asked in rule.routes or request.route.name in rule.routes
    ):
        return False
    if rule.tools is not None and request.tools_offered() != rule.tools:
        return False
    if rule.response_format is not None:
        kind = request.response_format()
        wanted = rule.response_format
        if wanted == "json":
            if kind not in ("json_object", "json_schema"):
                return False
        elif kind != wanted:
            return False
    if rule.messages is not None and len(_messages(request.body)) not in rule.messages:
        return False
    if rule.max_tokens is not None and request.max_tokens() not in rule.max_tokens:
        return False
    if rule.regex is not None and not rule.regex.is_match(request.system):
        return False
    if rule.keywords is not None and not rule.keywords.is_match(request.system):
        return False
    if rule.prompt_tokens is not None:
        if prompt_tokens is None:
            return None
        return prompt_tokens in rule.prompt_tokens
    return True


def _decide(
    tasks: Tasks,
    route: Route,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    prompt_tokens: int | None = None,
    start: int = 0,
) -> TaskDecision | UnknownTask | _NeedsCount:
    if start == 0 and tasks.explicit:
        explicit = _explicit(tasks, headers, body)
        if explicit is not None:
            return explicit
    request = _Request(route, body)
    for rule in tasks.rules[start:]:
        holds = _holds(rule, request, prompt_tokens)
        if holds is None:
            return _NeedsCount(rule.index)
        if holds:
            return TaskDecision(rule.task, TaskSource.RULE, rule=rule)
    classifier = tasks.classifier
    if classifier is None:
        return TaskDecision(route.default_task, TaskSource.DEFAULT, route=route.name)
    label, confidence = classifier.model.predict(classifier_text(body.get("messages")))
    if confidence >= classifier.min_confidence:
        return TaskDecision(label, TaskSource.CLASSIFIER, label=label, confidence=confidence)
    return TaskDecision(
        route.default_task,
        TaskSource.DEFAULT,
        label=label,
        confidence=confidence,
        min_confidence=classifier.min_confidence,
        route=route.name,
    )


async def classify(
    tasks: Tasks,
    route: Route,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    count_prompt: Callable[[str], Awaitable[int]],
) -> TaskDecision | UnknownTask:
    """The request's task and why (see the module docs); ``count_prompt`` is awaited at most
    once, and only when a ``prompt_tokens`` rule has every other condition met."""
    decision = _decide(tasks, route, headers, body)
    if isinstance(decision, _NeedsCount):
        tokens = await count_prompt(tasks.tokenizer)
        decision = _decide(tasks, route, headers, body, tokens, decision.rule)
    assert not isinstance(decision, _NeedsCount)
    return decision


def classify_now(
    tasks: Tasks,
    route: Route,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    count_prompt: Callable[[str], int],
) -> TaskDecision | UnknownTask:
    """``classify`` with a synchronous prompt count."""
    decision = _decide(tasks, route, headers, body)
    if isinstance(decision, _NeedsCount):
        decision = _decide(
            tasks, route, headers, body, count_prompt(tasks.tokenizer), decision.rule
        )
    assert not isinstance(decision, _NeedsCount)
    return decision


def without_task(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``metadata.task`` (the proxy's, not the provider's: OpenAI refuses
    ``metadata`` on requests it does not store), and without a ``metadata`` left empty; the same
    object when there is nothing to take out."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "task" not in metadata:
        return body
    rest = {k: v for k, v in metadata.items() if k != "task"}
    out = {k: v for k, v in body.items() if k != "metadata"}
    if rest:
        out["metadata"] = rest
    return out
