"""One eval call against a simulated provider that misbehaves: every hostile answer becomes a
classified failure (retried or not), never an exception out of the runner or a made-up answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.clock import SystemClock
from edgeproxy.evals.client import call
from edgeproxy.evals.runner import EvalOptions, EvalRun
from edgeproxy.evals.suite import parse_suite
from edgeproxy.failure import FailureClass
from edgeproxy.policy import load_policy_text
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import Candidate, Policy
from edgeproxy.upstreams.http1 import Http1Pool

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


@pytest.fixture
async def sims() -> AsyncIterator[dict[str, SimProvider]]:
    made = {
        "oa": SimProvider(SimConfig(name="oa", ttft=0, tokens_per_second=0, require_api_key="k")),
        "an": SimProvider(
            SimConfig(name="an", ttft=0, tokens_per_second=0, require_api_key="k", wire="anthropic")
        ),
        "quiet": SimProvider(
            SimConfig(name="quiet", ttft=0, tokens_per_second=0, reports_usage=False)
        ),
    }
    for sim in made.values():
        await sim.start()
    yield made
    for sim in made.values():
        await sim.stop()


def policy(sims: dict[str, SimProvider]) -> Policy:
    text = f"""
version: 1
providers:
  oa:
    kind: openai
    api_key: k
    regions: {{r: {{base_url: "{sims["oa"].url}"}}}}
    models: {{m: {{price: {{input: 1, output: 2}}}}}}
  an:
    kind: anthropic
    api_key: k
    regions: {{r: {{base_url: "{sims["an"].url}"}}}}
    models: {{c: {{price: {{input: 1, output: 2}}}}}}
  quiet:
    kind: openai
    regions: {{r: {{base_url: "{sims["quiet"].url}"}}}}
    models: {{q: {{price: {{input: 1, output: 2}}}}}}
routes:
  all: {{chain: [oa/r/m, an/r/c, quiet/r/q]}}
"""
    return load_policy_text(text, "t.yaml", {})


def candidate(p: Policy, key: str) -> Candidate:
    return next(c for c in p.routes["all"].chain if c.key == key)


async def test_answers_usage_and_ttft_on_both_wires(sims: dict[str, SimProvider]) -> None:
    p = policy(sims)
    pool = Http1Pool()
    try:
        for key in ("oa/r/m", "an/r/c"):
            result = await call(pool, candidate(p, key), BODY, clock=SystemClock(), limit=5)
            assert result.ok and result.text and result.finish_reason == "stop"
            assert result.usage.output_tokens == 24 and not result.usage.estimated
            assert result.cost_usd > 0 and result.ttft_s is not None
            assert result.ttft_s <= result.latency_s
        # A provider that reports no usage: counted by the proxy's own tokenizer, labelled.
        quiet = await call(pool, candidate(p, "quiet/r/q"), BODY, clock=SystemClock(), limit=5)
        assert quiet.ok and quiet.usage.estimated and quiet.usage.input_tokens > 0
        assert quiet.usage.output_tokens > 0 and quiet.cost_usd > 0
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("fault", "failure", "retryable", "billed"),
    [
        (Fault(mode="status", status=500), FailureClass.SERVER_ERROR, True, False),
        (Fault(mode="status", status=429, retry_after=1), FailureClass.RATE_LIMITED, True, False),
        (Fault(mode="status", status=400), FailureClass.CLIENT_ERROR, False, False),
        (
            Fault(mode="status", status=429, error_code="insufficient_quota"),
            FailureClass.QUOTA_EXHAUSTED,
            False,
            False,
        ),
        (Fault(mode="cut", after_tokens=5), FailureClass.RESET, True, True),
        (Fault(mode="malformed", after_tokens=2), FailureClass.MALFORMED, True, True),
        (Fault(mode="overloaded", after_tokens=2), FailureClass.OVERLOADED, True, True),
        (Fault(mode="no_done", after_tokens=2), None, False, True),
        (Fault(mode="hang"), FailureClass.RESPONSE_TIMEOUT, True, False),
        (Fault(mode="reset"), FailureClass.RESET, True, False),
        (Fault(mode="refuse"), FailureClass.CONNECT_ERROR, True, False),
    ],
    ids=lambda v: v.mode if isinstance(v, Fault) else None,
)
async def test_hostile_answers_are_classified_failures(
    sims: dict[str, SimProvider],
    fault: Fault,
    failure: FailureClass | None,
    retryable: bool,
    billed: bool,
) -> None:
    sims["oa"].set_fault(fault)
    pool = Http1Pool()
    try:
        result = await call(
            pool, candidate(policy(sims), "oa/r/m"), BODY, clock=SystemClock(), limit=0.5
        )
    finally:
        await pool.close()
        sims["oa"].clear_fault()
    if failure is None:  # no [DONE] after a finished answer: the answer is whole
        assert result.ok and result.text
        return
    assert result.failure is not None and result.failure.failure is failure, result.failure
    assert result.retryable is retryable
    # A broken stream bills what was sent (estimated); an error before the answer bills nothing.
    assert (result.cost_usd > 0) is billed


async def test_the_runner_retries_what_a_retry_may_cure(
    sims: dict[str, SimProvider], tmp_path: Path
) -> None:
    suite = parse_suite(
        b"""
name: t
items:
  - {id: a, task: qa, messages: [{role: user, content: hello}], grader: {type: contains, expected: "."}}
  - {id: b, task: qa, messages: [{role: user, content: again}], grader: {type: contains, expected: "."}}
""",
        "t.yaml",
    )
    p = policy(sims)
    sims["oa"].set_fault(Fault(mode="status", status=503, count=2))
    result = await EvalRun(
        EvalOptions(
            policy=p,
            suite=suite,
            candidates=[candidate(p, "oa/r/m")],
            out=tmp_path / "card.json",
            concurrency=1,
            retry_backoff=0.0,
        )
    ).run()
    cell = result.scorecard.cell("oa/r/m", "qa")
    assert cell is not None and cell.successes == 2 and cell.failed == 0
    assert cell.attempts == 4 and cell.error_rate == 0.5 and cell.retry_rate == 1.0
    # A 400 is the request's fault: never retried, the item fails.
    sims["oa"].set_fault(Fault(mode="status", status=400))
    failed = await EvalRun(
        EvalOptions(
            policy=p,
            suite=suite,
            candidates=[candidate(p, "oa/r/m")],
            out=tmp_path / "card2.json",
            retry_backoff=0.0,
        )
    ).run()
    cell = failed.scorecard.cell("oa/r/m", "qa")
    assert cell is not None and cell.failed == 2 and cell.attempts == 2 and cell.successes == 0
    assert all("client_error" in r.detail for r in failed.records)
