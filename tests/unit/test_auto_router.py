"""``AutoRouter`` without sockets: the chain it builds per task, the scorecards it reads (a
corrupt file keeps its last good content, an incomplete one is ignored, dates order them), what
a policy swap keeps, and what it learns from a request's events."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from autokit import card, cell
from edgeproxy.auto.router import AutoRouter
from edgeproxy.clock import FakeClock
from edgeproxy.evals.scorecard import save_scorecard
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    CandidateSkipped,
    SkipReason,
)
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.policy import load_policy_text
from edgeproxy.snapshot import Policy

POLICY = """
version: 1
tasks:
  categories: [qa, writing]
evals:
  candidates: [a/r/best, a/r/second, b/r/other, c/r/third, d/r/weak]
  scorecards: [cards/*.json]
providers:
  a:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:1/v1"}}
    models: {best: {}, second: {}}
  b:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:2/v1"}}
    models: {other: {}}
  c:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:3/v1"}}
    models: {third: {}}
  d:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:4/v1"}}
    models: {weak: {}}
routes:
  m:
    chain: [c/r/third]
    auto:
      objective: {min_quality: 0.85}
      ramp: {steps: []}
"""

QA = [
    cell("a/r/best", cost=1.0e-5),
    cell("a/r/second", cost=1.2e-5),
    cell("b/r/other", cost=1.5e-5),
    cell("c/r/third", cost=2.0e-5),
    cell("d/r/weak", successes=15, cost=0.1e-5),  # 50 %: under the floor
]


def _policy(root: Path, change: dict[str, object] | None = None) -> Policy:
    data = yaml.safe_load(POLICY)
    data["routes"]["m"].update(change or {})
    return load_policy_text(yaml.safe_dump(data), str(root / "p.yaml"), {})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "cards").mkdir()
    return tmp_path


async def _router(root: Path, policy: Policy | None = None) -> AutoRouter:
    router = AutoRouter(policy or _policy(root), FakeClock(), rng=random.Random(1), watch=False)
    await router.refresh()
    return router


def _keys(router: AutoRouter, task: str = "qa") -> tuple[list[str], str, str | None]:
    route = router.policy.routes["m"]
    pick = router.choose(route, task, {"messages": []})
    return [c.key for c in pick.chain], pick.event.role, pick.refusal


async def test_the_chain_is_the_leader_ranked_fallbacks_then_the_routes_chain(root: Path) -> None:
    save_scorecard(card(QA), root / "cards" / "one.json")
    router = await _router(root)
    chain, role, _ = _keys(router)
    # The leader; fallbacks on another provider first (b before a's second model); the chain.
    assert chain == ["a/r/best", "b/r/other", "c/r/third"]
    assert role == "incumbent" and "d/r/weak" not in chain
    # A task no scorecard measured: the route's chain.
    assert _keys(router, "writing")[:2] == (["c/r/third"], "chain")


async def test_a_pin_leads_and_no_chain_means_a_refusal(root: Path) -> None:
    router = await _router(root, _policy(root, {"auto": {"tasks": {"qa": {"pin": "d/r/weak"}}}}))
    assert _keys(router)[:2] == (["d/r/weak", "c/r/third"], "pinned")  # no evidence yet
    save_scorecard(card(QA), root / "cards" / "one.json")
    await router.refresh()
    assert _keys(router)[0] == ["d/r/weak", "a/r/best", "b/r/other", "c/r/third"]
    bare = await _router(root, _policy(root, {"chain": []}))
    chain, role, refusal = _keys(bare, "writing")
    assert chain == [] and role == "none" and refusal is not None
    assert "no evaluated candidate for task 'writing'" in refusal


async def test_scorecards_are_ordered_by_date_and_a_corrupt_one_keeps_the_last_good(
    root: Path,
) -> None:
    cards = root / "cards"
    # "b.json" is older than "a.json": the date decides, not the name.
    cheaper_second = [cell("a/r/best", cost=3e-5), cell("a/r/second", cost=1e-5)]
    cheaper_best = [cell("a/r/best", cost=0.4e-5), *QA[1:]]
    save_scorecard(card(cheaper_best, day=2), cards / "a.json")
    save_scorecard(card(cheaper_second, day=1), cards / "b.json")
    router = await _router(root)
    assert router.states[("m", "qa")].incumbent == "a/r/best"
    assert router.states[("m", "qa")].evidence.card.label.startswith("a.json")  # type: ignore[union-attr]
    # The newest file is rewritten with garbage: its last good content stays.
    (cards / "a.json").write_text('{"format": "edgeproxy-scorecard", "version": 1')
    problems = await router.refresh()
    assert len(problems) == 1 and "not JSON" in problems[0]
    entry = next(s for s in router.status()["scorecards"] if s["path"].endswith("a.json"))
    assert entry["status"] == "kept the last good one"
    assert [c.ref.path for c in router.store.cards()] == [
        str(cards / "b.json"),
        str(cards / "a.json"),
    ]
    # A newer version of the scorecard format, another program's JSON, a huge file: the same.
    for text in ('{"format": "edgeproxy-scorecard", "version": 2}', '{"hello": 1}', "[" * 100):
        (cards / "a.json").write_text(text)
        assert len(await router.refresh()) == 1
        assert router.states[("m", "qa")].incumbent == "a/r/best"
    # An incomplete scorecard (the cost cap stopped it) is shown and ignored.
    save_scorecard(card(cheaper_second, day=5, complete=False), cards / "c.json")
    await router.refresh()
    assert router.states[("m", "qa")].incumbent == "a/r/best"
    entry = next(s for s in router.status()["scorecards"] if s["path"].endswith("c.json"))
    assert entry["status"] == "ignored: incomplete (max_cost)"
    # A deleted file is forgotten.
    (cards / "b.json").unlink()
    await router.refresh()
    assert all(not s["path"].endswith("b.json") for s in router.status()["scorecards"])


async def test_a_policy_swap_keeps_what_it_does_not_change(root: Path) -> None:
    save_scorecard(card(QA), root / "cards" / "one.json")
    old = _policy(root)
    router = await _router(root, old)
    state = router.states[("m", "qa")]
    same = _policy(
        root, {"max_attempts": 2, "auto": {"objective": {"min_quality": 0.85}, "fallbacks": 1}}
    )
    router.policy_swapped(old, same)
    assert router.states[("m", "qa")] is state
    assert _keys(router)[0] == ["a/r/best", "b/r/other", "c/r/third"]  # one fallback now
    other = _policy(root, {"auto": {"objective": {"min_quality": 0.85, "optimize": "quality"}}})
    router.policy_swapped(same, other)
    assert router.states[("m", "qa")] is not state  # replayed from the cached scorecards
    assert router.states[("m", "qa")].incumbent is not None
    gone = _policy(root, {"auto": None})
    router.policy_swapped(other, gone)
    assert router.states == {}


async def test_the_observer_learns_live_outcomes_from_the_requests_events(root: Path) -> None:
    save_scorecard(card(QA), root / "cards" / "one.json")
    router = await _router(root)
    route = router.policy.routes["m"]
    pick = router.choose(route, "qa", {})
    assert pick.observer is not None
    best, other = pick.chain[0], pick.chain[1]
    observe = pick.observer
    five = AttemptFailure(FailureClass.SERVER_ERROR, "503", status=503)
    bad_request = AttemptFailure(FailureClass.CLIENT_ERROR, "400", status=400)
    observe(AttemptEnded(1, best, AttemptKind.FIRST, "server_error", 0.1, failure=five))
    observe(AttemptEnded(2, other, AttemptKind.FAILOVER, "client_error", 0.1, failure=bad_request))
    observe(CandidateSkipped(other, SkipReason.BREAKER_OPEN, "open"))
    observe(CandidateSkipped(other, SkipReason.WIRE, "cannot carry it"))
    observe(AttemptEnded(3, other, AttemptKind.FAILOVER, "ok", 0.25))
    observe(AttemptEnded(4, best, AttemptKind.HEDGE, "abandoned", 0.3))
    live = router.states[("m", "qa")].recent
    assert (live[best.key].attempts, live[best.key].errors) == (1, 1)
    assert (live[other.key].attempts, live[other.key].errors) == (2, 1)  # the 400 is the client's
    assert list(live[other.key].latencies) == [0.25]


def test_the_observer_hands_a_request_to_shadow_once_and_never_raises() -> None:
    from edgeproxy.auto.live import AutoObserver

    policy = load_policy_text(POLICY.replace("cards/*.json", "/nowhere/*.json"), "p.yaml", {})
    best = policy.routes["m"].candidates[0]
    handed: list[int] = []
    observe = AutoObserver(lambda *_: None, None, FakeClock(), lambda: handed.append(1))
    observe(AttemptEnded(1, best, AttemptKind.FIRST, "ok", 0.1))
    observe(AttemptEnded(2, best, AttemptKind.RESUME, "ok", 0.1))
    assert handed == [1]

    def broken(*_: object) -> None:
        raise RuntimeError("a defect")

    AutoObserver(broken, None, FakeClock())(AttemptEnded(1, best, AttemptKind.FIRST, "ok", 0.1))
