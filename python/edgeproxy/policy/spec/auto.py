"""The ``auto`` block of a route in the policy spec (docs/auto.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from edgeproxy.policy.keys import At, Prose, key
from edgeproxy.policy.spec.base import _CANDIDATE_KEY, CandidateKey, _Spec
from edgeproxy.policy.spec.candidates import ChainEntry
from edgeproxy.policy.units import Duration
from edgeproxy.snapshot import (
    AutoObjective,
    AutoSettings,
    Candidate,
    FloorOn,
    Optimize,
    Route,
    ShadowSettings,
)

# -- auto -------------------------------------------------------------------------------------


# The defaults an auto block's keys take when it is written (``At`` cannot read them through the
# optional ``Route.auto``): the snapshot's own.
_AUTO = AutoSettings()
_SHADOW = ShadowSettings()


def _pins(pins: Mapping[str, Candidate]) -> dict[str, str]:
    return {task: c.key for task, c in pins.items()}


def _percents(ratios: tuple[float, ...]) -> list[float]:
    return [round(r * 100, 9) for r in ratios]


def _of_tasks(field: str, tasks: Mapping[str, AutoObjective]) -> dict[str, Any]:
    return {task: getattr(objective, field) for task, objective in tasks.items()}


def _objective_key(field: str, doc: str, **more: Any) -> Any:
    default = getattr(_AUTO.objective, field)
    return key(
        doc,
        at=At(Route, f"auto.objective.{field}"),
        default=Prose("none") if default is None else default,
        **more,
    )


def _task_key(field: str, doc: str, **more: Any) -> Any:
    # Per task, every field shows as one value: the task -> value mapping, resolved.
    via: Callable[[Any], Any] = partial(_of_tasks, field)
    return key(
        doc,
        at=At(Route, "auto.tasks", via=via),
        view=f"auto.per_task.{field}",
        default=Prose("the route's `auto.objective`"),
        **more,
    )


_OPTIMIZE_DOC = (
    "What is optimised: `cost_per_success` (mean USD per request / success rate), `latency` "
    "(mean seconds per request), `quality` (mean score) or `capability_per_dollar_second` "
    "(quality / (cost x latency)); docs/auto.md has the formulas."
)
_MIN_QUALITY_DOC = "The quality floor (0-1): a candidate under it is never chosen (see `floor_on`)."
_FLOOR_ON_DOC = (
    "Where the floor is applied: the scorecard's `mean` quality, or the `lower_bound` of its "
    "95 % interval (stricter; needs large evals to pass good models: docs/auto.md)."
)


def _limit_doc(what: str) -> str:
    return f"A candidate whose scorecard {what} is above this is not chosen."


class AutoObjectiveSpec(_Spec):
    """The route's objective for every task (a task in ``auto.tasks`` may override it, field
    by field)."""

    optimize: Optimize | None = _objective_key("optimize", _OPTIMIZE_DOC)
    min_quality: float | None = _objective_key("min_quality", _MIN_QUALITY_DOC, ge=0, le=1)
    floor_on: FloorOn | None = _objective_key("floor_on", _FLOOR_ON_DOC)
    max_ttft_p50: Duration | None = _objective_key("max_ttft_p50", _limit_doc("median TTFT"))
    max_ttft_p95: Duration | None = _objective_key("max_ttft_p95", _limit_doc("TTFT p95"))
    max_latency_p50: Duration | None = _objective_key(
        "max_latency_p50", _limit_doc("median latency")
    )
    max_latency_p95: Duration | None = _objective_key("max_latency_p95", _limit_doc("latency p95"))


class AutoTaskSpec(_Spec):
    """One task's objective (unset fields: the route's ``auto.objective``), and its pin."""

    optimize: Optimize | None = _task_key("optimize", _OPTIMIZE_DOC)
    min_quality: float | None = _task_key("min_quality", _MIN_QUALITY_DOC, ge=0, le=1)
    floor_on: FloorOn | None = _task_key("floor_on", _FLOOR_ON_DOC)
    max_ttft_p50: Duration | None = _task_key("max_ttft_p50", _limit_doc("median TTFT"))
    max_ttft_p95: Duration | None = _task_key("max_ttft_p95", _limit_doc("TTFT p95"))
    max_latency_p50: Duration | None = _task_key("max_latency_p50", _limit_doc("median latency"))
    max_latency_p95: Duration | None = _task_key("max_latency_p95", _limit_doc("latency p95"))
    pin: CandidateKey | None = key(
        "`provider/region/model`: this candidate leads the task whatever the scorecards say "
        "(no eval data needed; the route's constraints apply); ranked candidates follow it.",
        at=At(Route, "auto.pins"),
        view="auto.pins",
        show=_pins,
        default=Prose("none"),
        schema={"pattern": _CANDIDATE_KEY},
    )


class AutoRampSpec(_Spec):
    """The canary a new winner goes through before it serves all of a task's requests."""

    steps: list[float] | None = key(
        "The challenger's share of the task's requests at each step, in percent, increasing "
        "(then 100 %); `[]`: it takes over at once.",
        at=At(Route, "auto.ramp.steps"),
        show=_percents,
        default=[5.0, 25.0],
        type_text="list of percentages",
    )
    step_time: Duration | None = key(
        "The least time at each step; a step also waits for `rollback.min_requests` live "
        "requests served by the challenger.",
        at=At(Route, "auto.ramp.step_time"),
        default=_AUTO.ramp.step_time,
    )


class AutoRollbackSpec(_Spec):
    """When a ramping challenger is sent back (its live requests against the incumbent's)."""

    min_requests: int | None = key(
        "Live requests the challenger serves before the rules below judge it.",
        at=At(Route, "auto.rollback.min_requests"),
        default=_AUTO.rollback.min_requests,
        ge=1,
    )
    max_error_rate_increase: float | None = key(
        "Its live error rate may exceed the incumbent's by at most this many points.",
        at=At(Route, "auto.rollback.max_error_rate_increase"),
        default=_AUTO.rollback.max_error_rate_increase,
        percent=True,
        ge=0,
        le=100,
    )
    max_latency_increase: float | None = key(
        "Its live median latency over the incumbent's may exceed the ratio the scorecard "
        "measured by at most this much.",
        at=At(Route, "auto.rollback.max_latency_increase"),
        default=_AUTO.rollback.max_latency_increase,
        percent=True,
        type_text="percent ≥ 0",
        ge=0,
    )


class AutoShadowSpec(_Spec):
    """Opt-in shadow traffic: a share of a task's live requests mirrored to its challenger,
    the answers discarded (never sent to the app) and graded by ``evals.judge``."""

    percent: float | None = key(
        "The share of each task's requests mirrored (after they are served, off their path).",
        at=At(Route, "auto.shadow.share"),
        default=_SHADOW.share,
        percent=True,
        gt=0,
        le=100,
    )
    max_cost: float | None = key(
        "USD that mirrored calls and their judging may spend per `window`.",
        at=At(Route, "auto.shadow.max_cost"),
        default=_SHADOW.max_cost,
        ge=0,
    )
    window: Duration | None = key(
        "The period `max_cost` is counted over.",
        at=At(Route, "auto.shadow.window"),
        default=_SHADOW.window,
    )
    timeout: Duration | None = key(
        "A mirrored call (or its judging) that takes longer is abandoned.",
        at=At(Route, "auto.shadow.timeout"),
        default=_SHADOW.timeout,
    )
    judge: bool = key(
        "Grade mirrored answers with `evals.judge` (a live quality estimate); off: errors and "
        "latency only.",
        at=At(Route, "auto.shadow.judge"),
        spec_default=_SHADOW.judge,
    )


class AutoSpec(_Spec):
    """`auto`: per task, the best candidate of a pool by the latest scorecard leads, ranked
    fallbacks follow; a new winner takes over with hysteresis and a canary ramp."""

    pool: list[ChainEntry] | None = key(
        "The candidates `auto` chooses from, compiled like the chain (residency, context "
        "windows); a candidate with no eval data is never chosen.",
        default=Prose("`evals.candidates` that meet the route's constraints"),
        type_text="list of candidates",
    )
    objective: AutoObjectiveSpec = key(
        "What every task optimises, and the limits a candidate must meet.",
        spec_default=AutoObjectiveSpec(),
    )
    tasks: dict[str, AutoTaskSpec] = key(
        "Per task (a name of `tasks.categories`): its own objective, field by field, and an "
        "optional pin.",
        spec_default={},
    )
    margin: float | None = key(
        "A challenger takes over only when its objective beats the incumbent's by at least "
        "this much (and their intervals are apart, or see `confirmations`).",
        at=At(Route, "auto.margin"),
        default=_AUTO.margin,
        percent=True,
        type_text="percent ≥ 0",
        ge=0,
        le=999,
    )
    confirmations: int | None = key(
        "Or when it beats the incumbent by the margin in this many consecutive scorecards "
        "(intervals overlapping).",
        at=At(Route, "auto.confirmations"),
        default=_AUTO.confirmations,
        ge=1,
        le=100,
    )
    fallbacks: int | None = key(
        "Ranked candidates that follow the leader (other providers first); the route's chain "
        "comes after them.",
        at=At(Route, "auto.fallbacks"),
        default=_AUTO.fallbacks,
        ge=0,
        le=10,
    )
    min_samples: int | None = key(
        "Graded requests a scorecard cell needs before its candidate may be chosen.",
        at=At(Route, "auto.min_samples"),
        default=_AUTO.min_samples,
        ge=1,
    )
    ramp: AutoRampSpec = key("The canary ramp of a new winner.", spec_default=AutoRampSpec())
    rollback: AutoRollbackSpec = key(
        "When a ramping challenger goes back out.", spec_default=AutoRollbackSpec()
    )
    shadow: AutoShadowSpec | None = key("Opt-in shadow traffic (off if unset).")
