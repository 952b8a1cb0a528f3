"""Task categories, rules and the classifier in the policy spec (docs/tasks.md)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    field_validator,
)

from edgeproxy.policy.keys import FROM_SNAPSHOT, At, Prose, key
from edgeproxy.policy.shown import (
    quoted_name,
)
from edgeproxy.policy.spec.base import _TASK_NAME_SCHEMA, TASK_NAME, _Spec
from edgeproxy.snapshot import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_TASK,
    ModelFile,
    Policy,
    ResponseFormat,
    TaskRule,
)

# -- tasks ------------------------------------------------------------------------------------

# Every rule key shows as one value, the compiled rules in words: a rule is read as a whole.
_RULES = At(Policy, "tasks.rules")


def _shown_rules(rules: tuple[TaskRule, ...]) -> list[str]:
    return [rule.describe() for rule in rules]


def _shown_model(model_file: ModelFile) -> str:
    return f"{model_file.path} (digest {model_file.digest[:12]})"


def _rule_key(doc: str, **more: Any) -> Any:
    return key(doc, at=_RULES, view="tasks.rules", show=_shown_rules, **more)


class RangeSpec(_Spec):
    """An inclusive range: ``{min: N}``, ``{max: N}`` or both."""

    min: int | None = _rule_key("At least this many.", default=Prose("no lower bound"), ge=0)
    max: int | None = _rule_key("At most this many.", default=Prose("no upper bound"), ge=0)


class TaskRuleSpec(_Spec):
    """One rule: the task it assigns when every condition it sets holds (at least one)."""

    name: str | None = _rule_key(
        "A name for the rule, shown with its index in every decision it makes.",
        default=Prose("none: the index names it"),
        schema={"maxLength": 64},
    )
    task: str = _rule_key(
        "The task it assigns: a declared category.", required=True, schema=_TASK_NAME_SCHEMA
    )
    routes: list[str] | None = _rule_key(
        "The app called one of these model names: a route's name (which covers its aliases) "
        "or an alias.",
        default=Prose("any route"),
        min_length=1,
    )
    tools: bool | None = _rule_key(
        "The request offers tools (`true`), or none (`false`).", default=Prose("not checked")
    )
    response_format: ResponseFormat | None = _rule_key(
        "The request's `response_format`: `json` (either JSON mode), `json_object`, "
        "`json_schema`, or `text` (plain, or none given).",
        default=Prose("not checked"),
    )
    prompt_tokens: RangeSpec | None = _rule_key(
        type_text="range",
        doc="The prompt's token count, counted exactly in `tasks.tokenizer`; checked last (only "
        "when the rule's other conditions hold).",
        default=Prose("not checked"),
    )
    max_tokens: RangeSpec | None = _rule_key(
        type_text="range",
        doc="The answer tokens asked for (`max_completion_tokens`, else `max_tokens`); a request "
        "that asks for none never matches.",
        default=Prose("not checked"),
    )
    messages: RangeSpec | None = _rule_key(
        type_text="range", doc="The number of messages.", default=Prose("not checked")
    )
    system_regex: str | None = _rule_key(
        "A regex found in the system prompt (system and developer messages, first 64 KiB): "
        "Rust `regex` syntax, linear time whatever the pattern; `(?i)` ignores case.",
        default=Prose("not checked"),
        schema={"maxLength": 4096},
    )
    system_keywords: list[str] | None = _rule_key(
        "Any of these words in the system prompt, ignoring case (whole words where a keyword "
        "starts or ends with a letter, digit or `_`).",
        default=Prose("not checked"),
        min_length=1,
    )


class TaskClassifierSpec(_Spec):
    """The learned classifier for the requests no rule decided."""

    model: str = key(
        "The model file (`edgeproxy tasks train`), relative to the policy file; a regular "
        "file of at most 64 MiB, checked on load; its tasks must be declared categories. "
        "Reloading the policy reloads it.",
        at=At(Policy, "tasks.classifier.model_file"),
        required=True,
        show=_shown_model,
        type_text="path",
    )
    min_confidence: float | None = key(
        "Below this probability the classifier's answer is not taken: the route's "
        "`default_task` is.",
        at=At(Policy, "tasks.classifier.min_confidence"),
        default=DEFAULT_MIN_CONFIDENCE,
        ge=0,
        le=1,
    )


class TasksSpec(_Spec):
    """Task categories and how a request gets one (docs/tasks.md): the app's explicit name,
    then the rules in order (first match wins), then the classifier, then the route's
    ``default_task``."""

    categories: list[str] = key(
        f"The task names requests may get (`{DEFAULT_TASK}` is always one).",
        at=At(Policy, "tasks.categories"),
        spec_default=[],
        type_text="list of names",
    )
    explicit: bool = key(
        "The app may name a request's task: the `x-edgeproxy-task` header, else "
        "`metadata.task` in the body; an undeclared name is refused (400).",
        at=At(Policy, "tasks.explicit"),
        spec_default=FROM_SNAPSHOT,
    )
    tokenizer: Literal["cl100k_base", "o200k_base"] | None = key(
        "The encoding `prompt_tokens` conditions count in.", at=At(Policy, "tasks.tokenizer")
    )
    rules: list[TaskRuleSpec] = key(
        "Rules tried in order; the first whose conditions all hold assigns its task.",
        spec_default=[],
        type_text="list of rules",
    )
    classifier: TaskClassifierSpec | None = key(
        "The learned classifier for what the rules leave (off if unset)."
    )

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(TASK_NAME, name):
                raise ValueError(
                    f"{quoted_name(name)} is not a task name: 1 to 64 letters, digits, '_', '.' "
                    "or '-', starting with a letter or digit"
                )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"named twice: {', '.join(twice)}")
        return names
