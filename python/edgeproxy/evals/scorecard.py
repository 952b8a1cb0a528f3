"""The scorecard: what an eval measured per candidate x task (docs/evals.md, "Scorecard").

A versioned JSON file written by ``edgeproxy eval run`` and read by ``eval compare`` and the
``auto`` route. ``Scorecard`` is frozen; ``load_scorecard`` refuses anything that is not a
scorecard of a version this code reads with a ``ScorecardError`` that says why (a truncated
file, another program's JSON, a newer format, a value out of range), never another exception.

    card = load_scorecard("scorecards/market.json")
    cell = card.cell("frontier/local/frontier-xl", "qa")
    cell.quality.mean, cell.cost_usd, cell.latency_s.p50
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT: Final = "edgeproxy-scorecard"
VERSION: Final = 1
MAX_SCORECARD_BYTES: Final = 64 * 1024 * 1024

Ratio = Annotated[float, Field(ge=0, le=1)]


class ScorecardError(ValueError):
    """A file that is not a scorecard this code can read."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Interval(_Frozen):
    """A mean and its 95 % interval; ``method``: ``wilson`` (pass/fail scores), ``t`` (graded
    scores) or ``none`` (no data: the interval is [0, 1])."""

    mean: Ratio
    low: Ratio
    high: Ratio
    method: Literal["wilson", "t", "none"]

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if not self.low <= self.mean <= self.high:
            raise ValueError("an interval needs low <= mean <= high")
        return self


class Spread(_Frozen):
    """Seconds: median, 95th percentile and mean (null without data); for latency also the
    mean's 95 % interval (Student's t)."""

    p50: float | None = Field(None, ge=0)
    p95: float | None = Field(None, ge=0)
    mean: float | None = Field(None, ge=0)
    mean_low: float | None = Field(None, ge=0)
    mean_high: float | None = Field(None, ge=0)


class PriceInfo(_Frozen):
    """USD per million tokens, as the policy said when the eval ran."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Cell(_Frozen):
    """One candidate on one task.

    ``requests`` = items x repeats that ran. ``graded`` of them got a score (a judge that failed
    leaves an item ungraded); ``successes`` passed their grader. ``failed``: no answer even after
    retries; ``unsupported``: the candidate's wire cannot carry the item (both count as graded
    failures). Costs are USD from the upstream's usage x the policy's price, every attempt
    included; ``judge_cost_usd`` is apart. Latency is per request, retries included; TTFT of the
    attempt that answered.
    """

    candidate: str = Field(min_length=1)
    task: str = Field(min_length=1)
    requests: int = Field(ge=0)
    graded: int = Field(ge=0)
    successes: int = Field(ge=0)
    failed: int = Field(ge=0)
    unsupported: int = Field(0, ge=0)
    quality: Interval
    success_rate: Interval
    cost_usd: float = Field(ge=0)  # mean per request
    cost_total_usd: float = Field(ge=0)
    judge_cost_usd: float = Field(0.0, ge=0)  # mean per request
    input_tokens: float = Field(ge=0)  # mean per request
    output_tokens: float = Field(ge=0)  # mean per request (hidden reasoning tokens included)
    ttft_s: Spread
    latency_s: Spread
    attempts: int = Field(ge=0)
    error_rate: Ratio  # failed attempts / attempts
    retry_rate: float = Field(ge=0)  # retries / requests
    price: PriceInfo | None = None

    @model_validator(mode="after")
    def _counts(self) -> Cell:
        if not self.successes <= self.graded <= self.requests:
            raise ValueError("a cell needs successes <= graded <= requests")
        return self


class SuiteInfo(_Frozen):
    name: str
    hash: str = Field(min_length=1)
    items: int = Field(ge=0)
    tasks: tuple[str, ...]


class PolicyInfo(_Frozen):
    source: str
    version: str


class Scorecard(_Frozen):
    format: Literal["edgeproxy-scorecard"] = FORMAT
    version: int = VERSION
    created: datetime
    suite: SuiteInfo
    policy: PolicyInfo
    judge: str | None = None
    repeats: int = Field(1, ge=1)
    complete: bool = True
    stopped: str | None = None  # why a run ended early: "max_cost"
    max_cost_usd: float | None = Field(None, ge=0)
    spent_usd: float = Field(ge=0)  # every candidate call
    judge_spent_usd: float = Field(0.0, ge=0)
    cells: tuple[Cell, ...]

    @model_validator(mode="after")
    def _unique_cells(self) -> Scorecard:
        keys = [(c.candidate, c.task) for c in self.cells]
        if len(set(keys)) != len(keys):
            raise ValueError("a candidate x task appears twice")
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(sorted({c.task for c in self.cells}))

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.candidate for c in self.cells))

    def cell(self, candidate: str, task: str) -> Cell | None:
        for c in self.cells:
            if c.candidate == candidate and c.task == task:
                return c
        return None

    def for_task(self, task: str) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.task == task)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def dumps(card: Scorecard) -> bytes:
    return orjson.dumps(card.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def save_scorecard(card: Scorecard, path: str | Path) -> None:
    """Write atomically (a temporary file renamed over ``path``): a reader never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(dumps(card))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_scorecard(data: bytes, source: str = "scorecard") -> Scorecard:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ScorecardError(
            f"{source}: not JSON ({exc.msg}); truncated or not a scorecard"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ScorecardError(f'{source}: not an edgeproxy scorecard (no "format": "{FORMAT}")')
    version = raw.get("version")
    if version != VERSION:
        raise ScorecardError(
            f"{source}: scorecard version {version!r}; this edgeproxy reads version {VERSION}"
        )
    try:
        return Scorecard.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ScorecardError(f"{source}: {where}: {first['msg']}{more}") from None


def load_scorecard(path: str | Path) -> Scorecard:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCORECARD_BYTES + 1)
    except OSError as exc:
        raise ScorecardError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_SCORECARD_BYTES:
        raise ScorecardError(f"{path}: larger than {MAX_SCORECARD_BYTES} bytes")
    return parse_scorecard(data, str(path))
