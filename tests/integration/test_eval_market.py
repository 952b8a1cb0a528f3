"""``edgeproxy eval`` against the simulated market, over real sockets (docs/evals.md).

The market runs on a background event loop (tests/harness.py ``LoopThread``) with its delays
50x shorter; the evaluator sends through the proxy's own upstream client and wires, exactly as
``edgeproxy eval run`` does. One baseline eval of the whole market (8 models x 30 items x 2
repeats, a judge for writing) is shared by the tests that only read it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest

from edgeproxy.cli import main
from edgeproxy.evals.cli import candidate_pool, pick_candidates
from edgeproxy.evals.compare import compare, markdown
from edgeproxy.evals.objective import Limits, rank, value
from edgeproxy.evals.progress import Record, open_progress
from edgeproxy.evals.runner import EvalOptions, EvalRun, RunResult
from edgeproxy.evals.scorecard import Scorecard, load_scorecard
from edgeproxy.evals.stats import wilson
from edgeproxy.evals.suite import Suite, parse_suite
from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim.market import Market, market_suite, oracle, true_measures
from edgeproxy.sim.profiles import ModelProfile, TaskProfile
from edgeproxy.snapshot import Policy
from harness import LoopThread

TIME_SCALE = 0.02
FLOOR = 0.85


@pytest.fixture(scope="module")
def market(loop_thread: LoopThread) -> Iterator[Market]:
    running = Market(time_scale=TIME_SCALE, seed=11)
    loop_thread.run(running.start())
    yield running
    loop_thread.run(running.stop())


def policy_of(market: Market, price_factors: dict[str, float] | None = None) -> Policy:
    return load_policy_text(market.policy_text(price_factors=price_factors), "market.yaml", {})


def options(policy: Policy, out: Path, suite: Suite | None = None, **over: Any) -> EvalOptions:
    pool = candidate_pool(policy)
    over.setdefault("candidates", pick_candidates(policy, None, None))
    over.setdefault("judge", pool[policy.evals.judge or ""])
    return EvalOptions(
        policy=policy,
        suite=suite or market_suite(),
        out=out,
        concurrency=8,
        retry_backoff=0.0,
        **over,
    )


def run(loop_thread: LoopThread, opts: EvalOptions, **kwargs: Any) -> RunResult:
    return loop_thread.run(EvalRun(opts, **kwargs).run(), timeout=120)


@pytest.fixture(scope="module")
def baseline(
    loop_thread: LoopThread, market: Market, tmp_path_factory: pytest.TempPathFactory
) -> Scorecard:
    out = tmp_path_factory.mktemp("baseline") / "market.json"
    result = run(loop_thread, options(policy_of(market), out, repeats=3, max_cost=None))
    assert result.stopped is None and result.scorecard.complete
    return result.scorecard


def test_an_eval_reproduces_the_true_quality_profiles(baseline: Scorecard) -> None:
    truth = true_measures(market_suite(), retries=2)
    assert len(baseline.cells) == 24  # 8 models x 3 tasks
    outside = []
    for cell in baseline.cells:
        true_quality = truth[(cell.candidate, cell.task)].quality
        assert cell.requests == 30 and cell.graded == 30
        assert cell.quality.method == "wilson"  # every grade, judge's included, is pass/fail here
        if not cell.quality.low <= true_quality <= cell.quality.high:
            outside.append((cell.candidate, cell.task, true_quality, cell.quality))
        # Never far off: the 99.9 % interval always holds it.
        low, high = wilson(cell.successes, cell.graded, z=3.29)
        assert low <= true_quality <= high, (cell.candidate, cell.task)
    # About 1 in 20 95 % intervals misses; a systematic bias would miss many.
    assert len(outside) <= 3, outside


def test_costs_are_real_usage_times_the_policy_price(baseline: Scorecard) -> None:
    truth = true_measures(market_suite(), retries=2)
    for cell in baseline.cells:
        expected = truth[(cell.candidate, cell.task)].cost
        assert cell.cost_usd == pytest.approx(expected, rel=0.2), (cell.candidate, cell.task)
        assert cell.price is not None
    # The judge is paid apart: only judged (writing) cells carry a judge cost.
    assert baseline.judge_spent_usd > 0
    assert all((c.judge_cost_usd > 0) == (c.task == "writing") for c in baseline.cells)
    spent = sum(c.cost_total_usd for c in baseline.cells)
    assert baseline.spent_usd == pytest.approx(spent)


def test_the_measured_winners_are_the_oracle_winners(baseline: Scorecard) -> None:
    limits = Limits(min_quality=FLOOR)
    best = oracle(market_suite(), "cost_per_success", min_quality=FLOOR)
    for task, truth in best.items():
        measured = rank(baseline.for_task(task), "cost_per_success", limits)
        assert measured[0].cell.candidate == truth.candidate, task
        assert measured[0].value == pytest.approx(truth.value, rel=0.25)


def test_errors_and_retries_are_measured(baseline: Scorecard) -> None:
    flaky = [c for c in baseline.cells if c.candidate == "anthro/local/anthro-small"]
    steady = [c for c in baseline.cells if c.candidate == "specialist/local/extract-ft"]
    assert all(c.error_rate > 0.03 and c.retry_rate > 0 for c in flaky)
    assert all(c.error_rate == 0 and c.attempts == c.requests for c in steady)
    # Its broken attempts were billed (prompt and the half answer): more than one clean call.
    truth = true_measures(market_suite(), retries=2)
    small = baseline.cell("anthro/local/anthro-small", "writing")
    assert small is not None
    assert small.cost_usd > truth[(small.candidate, "writing")].cost * 0.8


def test_a_verbose_model_costs_more_per_success_at_the_same_price(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    # reasoner-1 shares frontier-mini's rate card; here it also shares its quality and pace,
    # and differs only in writing 3x the tokens.
    same = TaskProfile(quality=1.0, ttft=0.1, tokens_per_second=200.0)
    twin = {
        "frontier/local/frontier-mini": ModelProfile({"qa": same}),
        "reasoner/local/reasoner-1": ModelProfile({"qa": replace(same, verbosity=3.0)}),
    }
    qa_only = _only(market_suite(), "qa")
    twins = Market(time_scale=TIME_SCALE, profiles=twin)
    loop_thread.run(twins.start())
    try:
        policy = policy_of(twins)
        pool = candidate_pool(policy)
        result = run(
            loop_thread,
            options(
                policy,
                tmp_path / "twins.json",
                suite=qa_only,
                candidates=[
                    pool["frontier/local/frontier-mini"],
                    pool["reasoner/local/reasoner-1"],
                ],
                judge=None,
                repeats=3,
            ),
        )
    finally:
        loop_thread.run(twins.stop())
    terse = result.scorecard.cell("frontier/local/frontier-mini", "qa")
    verbose = result.scorecard.cell("reasoner/local/reasoner-1", "qa")
    assert terse is not None and verbose is not None
    assert terse.price == verbose.price
    assert terse.quality.mean == verbose.quality.mean == 1.0
    assert verbose.output_tokens == pytest.approx(3 * terse.output_tokens)
    assert verbose.input_tokens == terse.input_tokens
    assert value(verbose, "cost_per_success") > value(terse, "cost_per_success")
    # The whole difference is the extra output tokens at the output price.
    extra = 2 * terse.output_tokens * 1.2 / 1e6
    assert value(verbose, "cost_per_success") - value(terse, "cost_per_success") == pytest.approx(
        extra
    )


def _only(suite: Suite, task: str) -> Suite:
    spec = suite.spec.model_copy(update={"items": [i for i in suite.items if i.task == task]})
    return replace(suite, spec=spec, hash=suite.hash + "-" + task)


def test_the_cap_stops_spending(loop_thread: LoopThread, market: Market, tmp_path: Path) -> None:
    policy = policy_of(market)
    cap = 0.02
    before = _sim_requests(market)
    result = run(loop_thread, options(policy, tmp_path / "capped.json", max_cost=cap))
    card = result.scorecard
    assert result.stopped == "max_cost" and not card.complete and card.stopped == "max_cost"
    assert card.spent_usd + card.judge_spent_usd <= cap
    assert 0 < result.ran < 240
    # Every request the sims saw is accounted for by a recorded unit: none sent past the cap
    # except those in flight, which the worst-case reservation paid for in advance.
    calls = sum(r.attempts for r in result.records) + _judge_calls(result.records)
    assert _sim_requests(market) - before <= calls + 8  # 8: the workers' calls in flight
    # A cap of zero sends nothing at all.
    before = _sim_requests(market)
    nothing = run(loop_thread, options(policy, tmp_path / "zero.json", max_cost=0.0))
    assert nothing.ran == 0 and _sim_requests(market) == before


def _sim_requests(market: Market) -> int:
    return sum(sim.stats.requests_total for sim in market.cluster.sims.values())


def _judge_calls(records: list[Record]) -> int:
    return sum(1 for r in records if r.judge is not None)


def test_an_interrupted_run_resumes_without_redoing_items(
    loop_thread: LoopThread, market: Market, tmp_path: Path
) -> None:
    policy = policy_of(market)
    out = tmp_path / "resumed.json"
    seen: list[Record] = []

    async def interrupted() -> None:
        task = asyncio.current_task()
        assert task is not None

        def stop_after_50(record: Record) -> None:
            seen.append(record)
            if len(seen) == 50:
                task.cancel()  # what Ctrl-C does to the run's task

        await EvalRun(options(policy, out, fresh=True), on_record=stop_after_50).run()

    with pytest.raises(concurrent.futures.CancelledError):
        loop_thread.run(interrupted(), timeout=120)
    done = open_progress(out, market_suite().hash, fresh=False).records
    assert len(done) >= 50 and not out.exists()
    before = _sim_requests(market)
    resumed = run(loop_thread, options(policy, out))
    assert resumed.skipped == len(done) and resumed.ran == 240 - len(done)
    assert resumed.scorecard.complete
    new = [r for r in resumed.records if (r.candidate, r.item, r.repeat) not in done]
    assert len(new) == resumed.ran
    assert _sim_requests(market) - before == sum(r.attempts for r in new) + _judge_calls(new)
    # Each unit once in the progress file, and every cell whole.
    lines = [
        json.loads(line)
        for line in (tmp_path / "resumed.json.progress.jsonl").read_text().splitlines()
        if line
    ]
    keys = [(d["candidate"], d["item"], d["repeat"]) for d in lines if d["kind"] == "result"]
    assert len(keys) == len(set(keys)) == 240
    assert all(c.requests == 10 for c in resumed.scorecard.cells)


PAIRWISE = b"""
name: pairwise
items:
  - id: p1
    task: writing
    messages: [{role: user, content: "Write a two-sentence announcement: the office library moves to the third floor, and returns go in the new green box."}]
    grader:
      type: judge
      mode: pairwise
      reference: "The office library moves to the third floor. Returns go in the new green box."
"""


def test_pairwise_judging_cancels_the_judges_position_bias(
    loop_thread: LoopThread, market: Market, tmp_path: Path
) -> None:
    suite = parse_suite(PAIRWISE, "pairwise.yaml")
    policy = policy_of(market)
    pool = candidate_pool(policy)
    # anthro-large writes the reference answer itself (quality 0.98); extract-ft rarely does.
    result = run(
        loop_thread,
        options(
            policy,
            tmp_path / "pairwise.json",
            suite=suite,
            candidates=[pool["anthro/local/anthro-large"], pool["specialist/local/extract-ft"]],
            repeats=6,
        ),
    )
    good = [r for r in result.records if r.candidate == "anthro/local/anthro-large"]
    equal = [r for r in good if r.answer.startswith("The office library")]
    assert equal
    for r in equal:
        # The same answer as the reference: the judge picked whichever was shown first, both
        # times; judged in both orders the bias cancels to a tie.
        assert r.judge == {"candidate_first": "A", "candidate_second": "A"}
        assert r.score == 0.5 and r.passed
    bad = [
        r
        for r in result.records
        if r.candidate == "specialist/local/extract-ft" and not r.answer.startswith("The office")
    ]
    assert bad
    for r in bad:
        assert r.judge == {"candidate_first": "B", "candidate_second": "A"} and r.score == 0.0


def test_compare_names_the_new_winner_after_a_price_rise(
    loop_thread: LoopThread, market: Market, baseline: Scorecard, tmp_path: Path
) -> None:
    winner = rank(baseline.for_task("qa"), "cost_per_success", Limits(min_quality=FLOOR))[0]
    assert winner.cell.candidate == "reasoner/local/reasoner-1"
    risen = policy_of(market, {"reasoner/local/reasoner-1": 3.0})
    qa = _only(market_suite(), "qa")
    result = run(
        loop_thread, options(risen, tmp_path / "risen.json", suite=qa, judge=None, repeats=2)
    )
    comparisons = compare(baseline, result.scorecard, "cost_per_success", Limits(min_quality=FLOOR))
    by_task = {c.task: c for c in comparisons}
    qa_change = by_task["qa"]
    expected = oracle(
        qa, "cost_per_success", min_quality=FLOOR, price_factors={"reasoner/local/reasoner-1": 3.0}
    )["qa"].candidate
    assert qa_change.switched
    assert qa_change.new_winner is not None and qa_change.new_winner.cell.candidate == expected
    report = markdown(baseline, result.scorecard, comparisons, "cost_per_success", Limits(FLOOR))
    assert f"| qa | `reasoner/local/reasoner-1` | `{expected}` | switch |" in report
    assert "price $0.3/$1.2 -> $0.9/$3.6 per 1M tokens" in report
    assert "the suites differ" in report  # the new run covered the qa items only


def test_a_wire_that_cannot_carry_an_item_is_unsupported(
    loop_thread: LoopThread, market: Market, tmp_path: Path
) -> None:
    suite = parse_suite(
        b"""
name: json-mode
items:
  - id: j
    task: extraction
    messages: [{role: user, content: "Order #88213 shipped via Parcelo, tracking PX-5521-KD. What is the tracking code? Reply with the code only."}]
    response_format: {type: json_object}
    grader: {type: exact, expected: PX-5521-KD}
""",
        "json.yaml",
    )
    policy = policy_of(market)
    pool = candidate_pool(policy)
    result = run(
        loop_thread,
        options(
            policy,
            tmp_path / "json.json",
            suite=suite,
            candidates=[pool["anthro/local/anthro-large"], pool["specialist/local/extract-ft"]],
            judge=None,
        ),
    )
    anthropic_cell = result.scorecard.cell("anthro/local/anthro-large", "extraction")
    openai_cell = result.scorecard.cell("specialist/local/extract-ft", "extraction")
    assert anthropic_cell is not None and openai_cell is not None
    assert anthropic_cell.unsupported == 1 and anthropic_cell.successes == 0
    assert anthropic_cell.cost_usd == 0 and anthropic_cell.attempts == 0
    assert openai_cell.unsupported == 0 and openai_cell.successes == 1


def test_the_market_serves_through_the_proxy_to_the_sdk(
    loop_thread: LoopThread, market: Market
) -> None:
    policy = policy_of(market)
    proxy = ProxyServer(policy, port=0)
    loop_thread.run(proxy.start())
    try:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-app", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="assistant",
            messages=[
                {"role": "user", "content": "Which planet is known as the Red Planet? One word."}
            ],
        )
        answer = raw.parse()
        assert raw.headers["x-edgeproxy-model"] == "anthro-large"
        assert answer.choices[0].message.content in (
            "Mars",
            "I am not certain about this one, sorry.",
        )
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
    finally:
        loop_thread.run(proxy.stop())


# -- the command line -------------------------------------------------------------------------


def test_the_eval_commands(
    loop_thread: LoopThread,
    market: Market,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy_file = tmp_path / "market.yaml"
    policy_file.write_text(market.policy_text())
    suite_file = tmp_path / "qa.yaml"
    suite_file.write_text(
        "name: qa\nitems:\n"
        + "".join(
            f"  - {json.dumps(i.model_dump(mode='json', by_alias=True, exclude_none=True))}\n"
            for i in market_suite().items
            if i.task == "qa"
        )
    )
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    argv = ["eval", "run", "--policy", str(policy_file), "--suite", "qa.yaml", "--no-progress"]
    argv += ["--candidates", "openweight/local/llama-70b,reasoner/local/reasoner-1"]
    assert main([*argv, "--out", str(old)]) == 0
    out = capsys.readouterr().out
    assert "reasoner/local/reasoner-1" in out and "cost/success" in out and "ran 20" in out
    assert load_scorecard(old).suite.name == "qa"
    policy_file.write_text(market.policy_text(price_factors={"reasoner/local/reasoner-1": 3.0}))
    assert main([*argv, "--out", str(new)]) == 0
    report = tmp_path / "why.md"
    assert (
        main(["eval", "compare", str(old), str(new), "--out", str(report), "--min-quality", "0.85"])
        == 0
    )
    text = report.read_text()
    assert "| qa | `reasoner/local/reasoner-1` | `openweight/local/llama-70b` | switch |" in text
    err = capsys.readouterr().err
    assert "wrote" in err and ("no plot" in err or (tmp_path / "why.png").exists())
    # Rerunning into the same output resumes: nothing is sent again.
    before = _sim_requests(market)
    assert main([*argv, "--out", str(new)]) == 0
    assert _sim_requests(market) == before and "resumed 20" in capsys.readouterr().out
    # A cap too small for one call: exit 3, an incomplete scorecard.
    capped = tmp_path / "capped.json"
    assert main([*argv, "--out", str(capped), "--max-cost", "0.0000001"]) == 3
    assert not load_scorecard(capped).complete
    # Corrupt and unknown inputs are refused with a message, never a traceback.
    (tmp_path / "bad.json").write_text('{"format": "edgeproxy-scorecard", "version": 1}')
    assert main(["eval", "show", str(tmp_path / "bad.json")]) == 2
    assert main(["eval", "compare", str(old), str(tmp_path / "missing.json")]) == 2
    assert main([*argv, "--out", str(tmp_path / "x.json"), "--candidates", "nobody/x/y"]) == 2
    assert main(["eval", "run", "--policy", str(policy_file), "--suite", "nope", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "not in the policy: nobody/x/y" in err and "no shipped suite" in err
    assert "Traceback" not in err
    assert main(["eval", "show", str(old)]) == 0
