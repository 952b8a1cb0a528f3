"""Records -> scorecard cells: the statistics of each candidate on each task."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from edgeproxy.cost import cost_usd
from edgeproxy.evals.progress import Record
from edgeproxy.evals.scorecard import Cell, Interval, PriceInfo, Spread
from edgeproxy.evals.stats import mean, percentile, quality_interval, t_interval, wilson
from edgeproxy.snapshot import Candidate


def spread(values: Sequence[float]) -> Spread:
    return Spread(p50=percentile(values, 50), p95=percentile(values, 95), mean=mean(values))


def _interval(scores: Sequence[float]) -> Interval:
    if not scores:
        return Interval(mean=0.0, low=0.0, high=1.0, method="none")
    low, high, method = quality_interval(scores)
    centre = sum(scores) / len(scores)
    # Floating error must not put the mean a hair outside its own interval.
    return Interval(mean=centre, low=min(low, centre), high=max(high, centre), method=method)


def cell(
    candidate: Candidate, task: str, records: Sequence[Record], judge: Candidate | None
) -> Cell:
    """One candidate x task. Costs are re-priced from the recorded usage at the policy's
    current prices (the candidate's, and the judge's apart)."""
    graded = [r for r in records if r.score is not None]
    scores = [r.score for r in graded if r.score is not None]
    successes = sum(1 for r in graded if r.passed)
    n = len(records)
    costs = [cost_usd(candidate.price, r.usage) for r in records]
    judge_costs = [cost_usd(judge.price if judge else None, r.judge_usage) for r in records]
    answered = [r for r in records if not r.unsupported]
    attempts = sum(r.attempts for r in answered)
    errors = sum(r.errors for r in answered)
    low, high = wilson(successes, len(graded))
    rate = successes / len(graded) if graded else 0.0
    price = candidate.price
    return Cell(
        candidate=candidate.key,
        task=task,
        requests=n,
        graded=len(graded),
        successes=successes,
        failed=sum(1 for r in records if r.failed),
        unsupported=sum(1 for r in records if r.unsupported),
        quality=_interval(scores),
        success_rate=Interval(
            mean=rate,
            low=min(low, rate),
            high=max(high, rate),
            method="wilson" if graded else "none",
        ),
        cost_usd=sum(costs) / n if n else 0.0,
        cost_total_usd=sum(costs),
        judge_cost_usd=sum(judge_costs) / n if n else 0.0,
        input_tokens=mean([r.usage.total_input_tokens for r in records]) or 0.0,
        output_tokens=mean([r.usage.output_tokens for r in records]) or 0.0,
        ttft_s=spread([r.ttft_s for r in answered if r.ttft_s is not None]),
        latency_s=_latency(answered),
        attempts=attempts,
        error_rate=errors / attempts if attempts else 0.0,
        retry_rate=(attempts - len(answered)) / len(answered) if answered else 0.0,
        price=PriceInfo(input=price.input, output=price.output) if price else None,
    )


def _latency(records: Sequence[Record]) -> Spread:
    values = [r.latency_s for r in records if r.latency_s is not None]
    base = spread(values)
    if len(values) < 2:
        return base
    # The mean's 95 % interval, for objectives compared with intervals (``objective.py``).
    low, high = t_interval(values, (0.0, max(values)))
    return base.model_copy(update={"mean_low": low, "mean_high": high})


def cells(
    candidates: Iterable[Candidate],
    tasks: Sequence[str],
    records: Iterable[Record],
    judge: Candidate | None,
) -> tuple[Cell, ...]:
    by: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        by.setdefault((record.candidate, record.task), []).append(record)
    out = []
    for candidate in candidates:
        for task in tasks:
            found = by.get((candidate.key, task))
            if found:
                out.append(cell(candidate, task, found, judge))
    return tuple(out)


def by_key(candidates: Iterable[Candidate]) -> Mapping[str, Candidate]:
    return {c.key: c for c in candidates}
