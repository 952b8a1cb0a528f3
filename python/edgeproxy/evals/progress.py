"""The eval's append-only progress file: one JSON line per finished request, so an interrupted
run resumes where it stopped (``SCORECARD.json.progress.jsonl`` next to the output).

A ``run`` line opens every (re)start and names the suite's hash; a ``result`` line holds one
candidate x item x repeat once it is answered and graded. A rerun skips every result already
there. A line cut short by the interruption (the last one) is ignored; the file of another
suite is refused (``--fresh`` starts over).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from edgeproxy.cost import Usage

SUFFIX: Final = ".progress.jsonl"
# Answers are kept in the progress file (for reports and debugging) up to this length.
MAX_KEPT_ANSWER: Final = 4000


class ProgressError(ValueError):
    """A progress file that cannot be resumed from."""


@dataclass(frozen=True, slots=True)
class Record:
    """One candidate x item x repeat, answered (or not) and graded (or not)."""

    candidate: str
    item: str
    task: str
    repeat: int
    score: float | None  # 0..1; None: not graded (the judge failed)
    passed: bool
    detail: str = ""
    answer: str = ""
    unsupported: bool = False  # the candidate's wire cannot carry the item
    failed: bool = False  # no answer after every attempt
    attempts: int = 0
    errors: int = 0  # failed attempts
    usage: Usage = field(default_factory=Usage)  # every attempt together
    cost_usd: float = 0.0  # at the price of the run that made it
    judge_usage: Usage = field(default_factory=Usage)
    judge_cost_usd: float = 0.0
    ttft_s: float | None = None
    latency_s: float | None = None
    judge: dict[str, Any] | None = None  # the judge's verdicts

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.candidate, self.item, self.repeat)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["answer"] = self.answer[:MAX_KEPT_ANSWER]
        return orjson.dumps({"kind": "result", **data})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = {k: v for k, v in data.items() if k != "kind"}
        data["usage"] = Usage(**data.get("usage") or {})
        data["judge_usage"] = Usage(**data.get("judge_usage") or {})
        return cls(**data)


@dataclass
class Progress:
    """The results of earlier runs into the same output, and the file to append to."""

    path: Path
    records: dict[tuple[str, str, int], Record]
    damaged_lines: int = 0

    def spent(self) -> tuple[float, float]:
        """USD spent on (candidates, judge) by the recorded results."""
        return (
            sum(r.cost_usd for r in self.records.values()),
            sum(r.judge_cost_usd for r in self.records.values()),
        )


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + SUFFIX)


def open_progress(out: Path, suite_hash: str, *, fresh: bool) -> Progress:
    """Read what earlier runs recorded (nothing with ``fresh``, which empties the file)."""
    path = progress_path(out)
    if fresh or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return Progress(path, {})
    lines = path.read_bytes().split(b"\n")
    records: dict[tuple[str, str, int], Record] = {}
    damaged = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            if data.get("kind") == "run":
                if data.get("suite_hash") != suite_hash:
                    raise ProgressError(
                        f"{path} records a run of another suite (hash {data.get('suite_hash')!r}): "
                        "rerun with --fresh to start over"
                    )
                continue
            record = Record.from_json(data)
        except ProgressError:
            raise
        except (ValueError, TypeError):
            damaged += 1  # the line cut by an interruption (or a damaged one): redone
            continue
        records[record.key] = record
    return Progress(path, records, damaged)


class ProgressWriter:
    """Appends lines, each flushed as it is written (a crash loses at most the line in flight)."""

    def __init__(self, path: Path) -> None:
        existing = path.read_bytes() if path.exists() else b""
        self._handle = path.open("ab")
        if existing and not existing.endswith(b"\n"):
            self._handle.write(b"\n")  # never glue a new line to a torn one

    def run(self, **fields: Any) -> None:
        self._write(orjson.dumps({"kind": "run", **fields}))

    def result(self, record: Record) -> None:
        self._write(record.to_json())

    def _write(self, line: bytes) -> None:
        self._handle.write(line + b"\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def usage_sum(usages: Iterable[Usage]) -> Usage:
    total = Usage()
    for usage in usages:
        total = total + usage
    return total
