"""Compile a policy's ``tasks:`` section into the snapshot's ``Tasks`` (docs/tasks.md).

Every task name is checked against the declared categories, every route a rule names against
the policy's routes and aliases, every regex and keyword list compiled (``_core.TextPattern``:
linear-time matching, so no pattern is refused for being slow, only for being invalid or
huge), and the classifier's model file read boundedly (``files.read_bounded``: a regular file
of at most ``MAX_MODEL_BYTES``, within a timeout) and checked (magic, version, checksum,
numbers). Each problem is located in the policy; a model file that is corrupt or not a model at
all is a problem like any other, never a crash.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path as FsPath

from edgeproxy._core import TaskError, TaskModel, TextPattern
from edgeproxy.policy.files import FileRefused, read_bounded
from edgeproxy.policy.schema import PolicySpec, RangeSpec, TaskClassifierSpec, TaskRuleSpec
from edgeproxy.policy.shown import quoted_name
from edgeproxy.policy.yamlsource import LocatedDocument, Path
from edgeproxy.snapshot import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_TASK,
    ModelFile,
    Range,
    TaskClassifier,
    TaskRule,
    Tasks,
)

MAX_MODEL_BYTES = 64 * 1024 * 1024  # a 2^18-bucket model of 4 tasks is 2 MiB

_CONDITIONS = (
    "routes",
    "tools",
    "response_format",
    "prompt_tokens",
    "max_tokens",
    "messages",
    "system_regex",
    "system_keywords",
)


def read_task_model(path: FsPath) -> TaskModel:
    """The model in file ``path``; ``FileRefused`` when the file cannot be read (missing, not a
    regular file, too large, hangs), ``TaskError`` when it is not a usable model."""
    data = read_bounded(path, MAX_MODEL_BYTES, f"the model file {str(path)!r}")
    return TaskModel.from_bytes(data)


def _hint(name: str, known: Iterable[str]) -> str:
    names = list(known)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (declared: {', '.join(names)})" if names else " (no tasks are declared)"


class _Compiler:
    def __init__(self, spec: PolicySpec, doc: LocatedDocument, base_dir: FsPath | None) -> None:
        self.spec = spec
        self.doc = doc
        self.base_dir = base_dir
        self.categories = tuple(spec.tasks.categories)

    def problem(self, path: Path, message: str) -> None:
        self.doc.problems.append(self.doc.problem(path, message))

    def check_task(self, name: str, path: Path) -> None:
        if name != DEFAULT_TASK and name not in self.categories:
            known = (*self.categories, DEFAULT_TASK)
            self.problem(path, f"unknown task {quoted_name(name)}{_hint(name, known)}")

    def tasks(self) -> Tasks:
        spec = self.spec.tasks
        rules = tuple(
            rule
            for i, rule_spec in enumerate(spec.rules)
            if (rule := self.rule(i, rule_spec)) is not None
        )
        defaults_task = self.spec.defaults.default_task
        if defaults_task is not None:
            self.check_task(defaults_task, ("defaults", "default_task"))
        for name, route in self.spec.routes.items():
            if route.default_task is not None:
                self.check_task(route.default_task, ("routes", name, "default_task"))
        classifier = None if spec.classifier is None else self.classifier(spec.classifier)
        return Tasks(
            categories=self.categories,
            explicit=spec.explicit,
            rules=rules,
            classifier=classifier,
            **({} if spec.tokenizer is None else {"tokenizer": spec.tokenizer}),
        )

    def rule(self, index: int, spec: TaskRuleSpec) -> TaskRule | None:
        path: Path = ("tasks", "rules", index)
        before = len(self.doc.problems)
        self.check_task(spec.task, (*path, "task"))
        if all(getattr(spec, name) is None for name in _CONDITIONS):
            self.problem(
                path,
                f"a rule needs at least one condition ({', '.join(_CONDITIONS)}); for the "
                "requests nothing else decides, set a route's default_task",
            )
        served = {n for r, route in self.spec.routes.items() for n in (r, *route.aliases)}
        for j, name in enumerate(spec.routes or ()):
            if name not in served:
                self.problem(
                    (*path, "routes", j),
                    f"no route or alias is named {quoted_name(name)}{_hint(name, served)}",
                )
        ranges = {
            name: self.range(getattr(spec, name), (*path, name))
            for name in ("prompt_tokens", "max_tokens", "messages")
        }
        regex = keywords = None
        if spec.system_regex is not None:
            try:
                regex = TextPattern.regex(spec.system_regex)
            except TaskError as exc:
                self.problem((*path, "system_regex"), str(exc))
        if spec.system_keywords is not None:
            try:
                keywords = TextPattern.keywords(spec.system_keywords)
            except TaskError as exc:
                self.problem((*path, "system_keywords"), str(exc))
        if len(self.doc.problems) > before:
            return None
        return TaskRule(
            index=index,
            task=spec.task,
            name=spec.name,
            routes=None if spec.routes is None else frozenset(spec.routes),
            tools=spec.tools,
            response_format=spec.response_format,
            prompt_tokens=ranges["prompt_tokens"],
            max_tokens=ranges["max_tokens"],
            messages=ranges["messages"],
            system_regex=spec.system_regex,
            system_keywords=tuple(spec.system_keywords or ()),
            regex=regex,
            keywords=keywords,
        )

    def range(self, spec: RangeSpec | None, path: Path) -> Range | None:
        if spec is None:
            return None
        if spec.min is None and spec.max is None:
            self.problem(path, "set min, max or both")
        elif spec.min is not None and spec.max is not None and spec.min > spec.max:
            self.problem(path, f"min {spec.min} is greater than max {spec.max}: nothing matches")
        return Range(spec.min, spec.max)

    def classifier(self, spec: TaskClassifierSpec) -> TaskClassifier | None:
        where: Path = ("tasks", "classifier", "model")
        path = FsPath(spec.model)
        if self.base_dir is not None and not path.is_absolute():
            path = self.base_dir / path
        try:
            model = read_task_model(path)
        except (FileRefused, TaskError) as exc:
            self.problem(where, str(exc))
            return None
        undeclared = [label for label in model.labels if not self._declared(label)]
        if undeclared:
            self.problem(
                where,
                f"the model tells tasks the policy does not declare: {', '.join(undeclared)} "
                "(add them to tasks.categories, or retrain)",
            )
            return None
        return TaskClassifier(
            model_file=ModelFile(spec.model, model.digest),
            model=model,
            min_confidence=(
                DEFAULT_MIN_CONFIDENCE if spec.min_confidence is None else spec.min_confidence
            ),
        )

    def _declared(self, name: str) -> bool:
        return name == DEFAULT_TASK or name in self.categories


def compile_tasks(spec: PolicySpec, doc: LocatedDocument, base_dir: FsPath | None = None) -> Tasks:
    """The snapshot's ``Tasks``; problems go to ``doc.problems`` (the policy is then refused)."""
    return _Compiler(spec, doc, base_dir).tasks()
