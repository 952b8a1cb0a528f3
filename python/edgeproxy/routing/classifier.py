"""Training and evaluating the task classifier: ``edgeproxy tasks train`` and ``tasks eval``.

Examples are JSON Lines, one labelled prompt a line: ``{"text": ..., "task": ...}`` or
``{"messages": [...], "task": ...}`` (a chat request's messages; read as the request path reads
them, ``tasks.classifier_text``). Other keys are ignored. The model is the Rust core's
(``_core.train_task_model``: hashed character and word n-grams, multinomial logistic regression
by averaged SGD, deterministic given the seed); its file format is in docs/tasks.md.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edgeproxy._core import TaskModel, train_task_model
from edgeproxy.errors import EdgeProxyError
from edgeproxy.routing.tasks import classifier_text

_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_LINE_BYTES = 16 * 1024 * 1024
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    task: str
    line: int  # 1-based line in its file


class ExamplesError(EdgeProxyError, ValueError):
    """An examples file cannot be used; ``problems`` are ``FILE:LINE: why`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _example(data: Any) -> tuple[str, str] | str:
    """(text, task) from one parsed line, or why it is not an example."""
    if not isinstance(data, dict):
        return "not a JSON object"
    task = data.get("task")
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
        return '"task" must be a task name (letters, digits, "_", "." or "-")'
    if isinstance(data.get("text"), str):
        return data["text"], task
    if isinstance(data.get("messages"), list):
        return classifier_text(data["messages"]), task
    return 'needs "text" (a string) or "messages" (a list of chat messages)'


def parse_examples(lines: Iterable[bytes], source: str) -> list[Example]:
    """The examples in ``lines``; ``ExamplesError`` lists what is wrong (blank lines are
    skipped)."""
    out: list[Example] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            problems.append(f"{source}:{number}: longer than {MAX_LINE_BYTES // 2**20} MiB")
            continue
        try:
            parsed = _example(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            parsed = f"not JSON ({exc.msg})"
        if isinstance(parsed, str):
            problems.append(f"{source}:{number}: {parsed}")
        else:
            out.append(Example(parsed[0], parsed[1], number))
    if not out and not problems:
        problems.append(f"{source}: no examples")
    if problems:
        more = len(problems) - _MAX_LISTED
        listed = problems[:_MAX_LISTED] + ([f"... and {more} more"] if more > 0 else [])
        raise ExamplesError(listed)
    return out


def read_examples(path: Path) -> list[Example]:
    """The examples in JSON Lines file ``path`` (``OSError`` when it cannot be read)."""
    with path.open("rb") as f:
        return parse_examples(f, str(path))


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """How a model is trained (``edgeproxy tasks train``'s options)."""

    bits: int = 18
    char_ngrams: tuple[int, int] = (3, 5)
    word_ngrams: int = 2
    max_bytes: int = 8192
    epochs: int = 10
    seed: int = 0
    learning_rate: float = 0.5

    def model_bytes(self, tasks: int) -> int:
        """The size of the model file (its weights: 2 bytes per bucket and task)."""
        return 2 * (1 << self.bits) * tasks


def train(examples: Sequence[Example], settings: TrainSettings) -> TaskModel:
    """A model telling apart the tasks of ``examples`` (in sorted order). Raises ``TaskError``
    for what the trainer refuses (one task only, bad settings)."""
    tasks = sorted({e.task for e in examples})
    index = {task: i for i, task in enumerate(tasks)}
    return train_task_model(
        [e.text for e in examples],
        [index[e.task] for e in examples],
        tasks,
        bits=settings.bits,
        char_ngrams=settings.char_ngrams,
        word_ngrams=settings.word_ngrams,
        max_bytes=settings.max_bytes,
        epochs=settings.epochs,
        seed=settings.seed,
        learning_rate=settings.learning_rate,
    )


def write_model(model: TaskModel, path: Path) -> int:
    """Writes the model file atomically (a policy reloading meanwhile reads the old file or the
    new one, never half of one); returns its size."""
    data = model.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


@dataclass(frozen=True)
class ClassStats:
    task: str
    support: int  # examples labelled with it
    predicted: int  # examples predicted as it
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.support if self.support else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class EvalReport:
    """How a model does on labelled examples."""

    tasks: tuple[str, ...]  # the model's tasks, then any only the examples name
    confusion: dict[tuple[str, str], int]  # (true, predicted) -> count
    total: int
    min_confidence: float
    decided: int  # predictions at or above min_confidence
    decided_correct: int
    unknown: dict[str, int] = field(default_factory=dict)  # example tasks the model lacks

    @property
    def correct(self) -> int:
        return sum(n for (t, p), n in self.confusion.items() if t == p)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def per_class(self) -> list[ClassStats]:
        return [
            ClassStats(
                task,
                sum(n for (t, _), n in self.confusion.items() if t == task),
                sum(n for (_, p), n in self.confusion.items() if p == task),
                self.confusion.get((task, task), 0),
            )
            for task in self.tasks
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.total,
            "accuracy": round(self.accuracy, 4),
            "per_task": {
                s.task: {
                    "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4),
                    "f1": round(s.f1, 4),
                    "support": s.support,
                }
                for s in self.per_class()
            },
            "confusion": {
                t: {p: self.confusion.get((t, p), 0) for p in self.tasks} for t in self.tasks
            },
            "min_confidence": self.min_confidence,
            "decided": self.decided,
            "decided_accuracy": (
                round(self.decided_correct / self.decided, 4) if self.decided else None
            ),
            "unknown_tasks": self.unknown,
        }


def evaluate(model: TaskModel, examples: Sequence[Example], min_confidence: float) -> EvalReport:
    labels = tuple(model.labels)
    confusion: Counter[tuple[str, str]] = Counter()
    decided = decided_correct = 0
    for example in examples:
        predicted, confidence = model.predict(example.text)
        confusion[(example.task, predicted)] += 1
        if confidence >= min_confidence:
            decided += 1
            decided_correct += predicted == example.task
    unknown = Counter(e.task for e in examples if e.task not in labels)
    return EvalReport(
        tasks=labels + tuple(sorted(unknown)),
        confusion=dict(confusion),
        total=len(examples),
        min_confidence=min_confidence,
        decided=decided,
        decided_correct=decided_correct,
        unknown=dict(unknown),
    )


def _table(rows: Sequence[Sequence[str]], right: bool = True) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [
            c.rjust(w) if right else c.ljust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render_report(report: EvalReport, source: str) -> str:
    r = report
    lines = [
        f"{source}: {r.total} examples, accuracy {r.accuracy:.1%} ({r.correct}/{r.total})",
        "",
    ]
    rows = [("task", "precision", "recall", "f1", "support")]
    rows += [
        (s.task, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))
        for s in r.per_class()
    ]
    lines += _table(rows)
    lines += ["", "confusion (rows: true task, columns: predicted)"]
    grid = [("", *r.tasks)]
    grid += [(t, *(str(r.confusion.get((t, p), 0)) for p in r.tasks)) for t in r.tasks]
    lines += _table(grid)
    lines.append("")
    if r.decided:
        lines.append(
            f"at min_confidence {r.min_confidence:g}: {r.decided / r.total:.1%} decided by the "
            f"classifier, {r.decided_correct / r.decided:.1%} of them right; the rest get the "
            "route's default_task"
        )
    else:
        lines.append(f"at min_confidence {r.min_confidence:g}: nothing decided by the classifier")
    if r.unknown:
        names = ", ".join(f"{t} ({n})" for t, n in sorted(r.unknown.items()))
        lines.append(f"tasks the model does not know (always wrong): {names}")
    return "\n".join(lines) + "\n"
