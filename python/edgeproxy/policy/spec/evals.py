"""Evals and their schedule in the policy spec (docs/evals.md)."""

from __future__ import annotations

from edgeproxy.policy.keys import At, key
from edgeproxy.policy.spec.base import _CANDIDATE_KEY, CandidateKey, _Spec
from edgeproxy.policy.units import Duration
from edgeproxy.snapshot import (
    Policy,
)

# -- evals ------------------------------------------------------------------------------------


class EvalScheduleSpec(_Spec):
    """What ``edgeproxy eval schedule`` runs (docs/evals.md, "Re-evaluation on a schedule")."""

    every: Duration | None = key(
        "Between two runs: the next is due this long after the newest scorecard's date.",
        at=At(Policy, "evals.schedule.every"),
    )
    out: str | None = key(
        "Where each run writes its scorecard, relative to this policy; `{date}` (required) and "
        "`{suite}` are filled in. Match it in `evals.scorecards` so `auto` reads it.",
        at=At(Policy, "evals.schedule.out"),
    )
    repeats: int | None = key(
        "Times each suite item runs per candidate.", at=At(Policy, "evals.schedule.repeats"), ge=1
    )


class EvalsSpec(_Spec):
    """`edgeproxy eval` and the `auto` route (docs/evals.md): who judges, what is evaluated,
    and where scorecards live."""

    judge: CandidateKey | None = key(
        "The LLM judge of `judge` graders: `provider/region/model` of a provider in this "
        "policy (its cost is counted apart from the candidates').",
        at=At(Policy, "evals.judge"),
        schema={"pattern": _CANDIDATE_KEY},
    )
    candidates: list[CandidateKey] = key(
        "The pool `edgeproxy eval run` evaluates when neither `--candidates` nor `--route` is "
        "given: `provider/region/model` of providers in this policy.",
        at=At(Policy, "evals.candidates"),
        spec_default=[],
    )
    suite: str | None = key(
        "The default suite: a file (relative to this policy's directory) or the name of a "
        "suite shipped with edgeproxy (`market`).",
        at=At(Policy, "evals.suite"),
    )
    scorecards: list[str] = key(
        "Scorecard files (or glob patterns, e.g. `scorecards/market-*.json`) the `auto` route "
        "reads, relative to this policy's directory; ordered by their date, the newest is the "
        "evidence. Reloaded when they change.",
        at=At(Policy, "evals.scorecards"),
        spec_default=[],
    )
    max_cost: float | None = key(
        "USD one eval run may spend (candidates and judge together), checked before each "
        "call; `--max-cost` overrides it.",
        at=At(Policy, "evals.max_cost"),
        ge=0,
    )
    schedule: EvalScheduleSpec = key(
        "`edgeproxy eval schedule`: re-run the suite on a schedule.",
        spec_default=EvalScheduleSpec(),
    )
