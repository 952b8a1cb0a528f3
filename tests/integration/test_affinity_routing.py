"""Cache-affinity routing through the real proxy: requests that share a prefix stay on one
replica (whose prompt cache then serves them), let go of it when it fails, and spill when it is
hot; the decisions reach /metrics. The OpenAI SDK as client, three simulated replicas each with
its own prompt cache."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.metrics import metrics_from_env
from edgeproxy.telemetry.process import Telemetry
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 5s, idle: 5s, response: 5s, total: 20s}
providers:
  rep:
    kind: openai
    regions:
      a: {base_url: "$a"}
      b: {base_url: "$b"}
      c: {base_url: "$c"}
    models: {llama: {price: {input: 1, output: 1, cached_input: 0.1}}}
  other:
    kind: openai
    regions: {main: {base_url: "$other"}}
    models: {m: {}}
routes:
  sticky:
    chain: [rep/*/llama, other/main/m]
    affinity: {load_factor: 1.0}
  spread:
    chain: [rep/*/llama, other/main/m]
    affinity: {spread: random}
  plain:
    chain: [rep/*/llama, other/main/m]
"""
SIMS = [
    SimConfig(name=n, ttft=0.0, tokens_per_second=0, prompt_cache_ttl=300.0)
    for n in ("a", "b", "c", "other")
]
SYSTEM = "You answer questions about the manual. " + "Manual text. " * 800


def conversation(who: int, turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"I am customer {who}. " + "context " * 100},
    ]
    for t in range(1, turns):
        messages.append({"role": "assistant", "content": f"Answer {t}."})
        messages.append({"role": "user", "content": f"Follow-up {t}."})
    return messages


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(POLICY, SIMS, telemetry=Telemetry(metrics=metrics_from_env({})))


def ask(stack: Stack, route: str, messages: list[dict[str, Any]]) -> tuple[str, int]:
    raw = stack.client().chat.completions.with_raw_response.create(
        model=route, messages=messages, max_tokens=8
    )
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return raw.headers["x-edgeproxy-region"], usage.prompt_tokens_details.cached_tokens


def routed(stack: Stack) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(stack.http.get("/metrics").text)}
    return {
        s.labels["edgeproxy_affinity_outcome"]: s.value
        for s in families["edgeproxy_affinity_routed"].samples
        if s.name.endswith("_total")
    }


def test_a_conversation_stays_on_one_replica_and_its_cache_serves_it(stack: Stack) -> None:
    homes: dict[int, set[str]] = {}
    cached_turns = 0
    for turn in range(1, 5):
        for who in range(6):
            region, cached = ask(stack, "sticky", conversation(who, turn))
            homes.setdefault(who, set()).add(region)
            cached_turns += turn > 1 and cached > 0
    assert all(len(regions) == 1 for regions in homes.values()), homes
    assert len({r for regions in homes.values() for r in regions}) > 1  # and they spread
    assert cached_turns == 6 * 3  # every later turn read its earlier prefix
    assert routed(stack) == {"home": 24}


def test_without_affinity_an_even_spread_reads_less_from_the_caches(stack: Stack) -> None:
    def cached_tokens(route: str, first_customer: int) -> tuple[int, Counter[str]]:
        total, regions = 0, Counter[str]()
        for turn in range(1, 6):
            for who in range(first_customer, first_customer + 6):
                region, cached = ask(stack, route, conversation(who, turn))
                regions[region] += 1
                total += cached
        return total, regions

    spread, regions = cached_tokens("spread", 100)
    sticky, _ = cached_tokens("sticky", 200)
    assert len(regions) == 3  # an even spread uses every replica...
    # ...and its conversations keep landing where their history is not: only the shared
    # system prompt is found there. Affinity reads each conversation's own history back.
    assert sticky > spread
    # A route without an affinity block keeps the chain's order: the first replica only.
    assert {ask(stack, "plain", conversation(9, 1))[0] for _ in range(3)} == {"a"}


def test_affinity_lets_go_of_a_failed_replica_and_comes_back(stack: Stack) -> None:
    messages = conversation(1, 1)
    home, _ = ask(stack, "sticky", messages)
    stack.fault(home, mode="status", status=503)
    fallbacks = {ask(stack, "sticky", messages)[0] for _ in range(3)}
    assert len(fallbacks) == 1 and home not in fallbacks  # the same next replica every time
    stack.heal(home)  # (four failures: under the breaker's five, so it never opened)
    assert ask(stack, "sticky", messages)[0] == home


def test_a_hot_home_spills_to_the_next_replica(stack: Stack) -> None:
    messages = conversation(2, 1)
    home, _ = ask(stack, "sticky", messages)
    stack.fault(home, mode="slow_first_token", ttft=3.0, count=1)
    done = threading.Event()
    first: list[str] = []

    def slow() -> None:
        first.append(ask(stack, "sticky", messages)[0])
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while stack.stats(home)["in_flight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first request is held at its home
    assert stack.stats(home)["in_flight"] == 1
    other, _ = ask(stack, "sticky", messages)
    assert other != home  # load_factor 1.0: the home already holds its share
    thread.join(10)
    assert done.is_set() and first == [home]
    assert routed(stack)["spilled"] == 1


def test_affinity_on_a_route_whose_group_is_one_candidate_changes_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    policy = POLICY.replace(
        "chain: [rep/*/llama, other/main/m]\n    affinity: {load_factor: 1.0}",
        "chain: [rep/a/llama, other/main/m]\n    affinity: {load_factor: 1.0}",
    )
    stack = make_stack(policy, SIMS)
    assert {ask(stack, "sticky", conversation(w, 1))[0] for w in range(5)} == {"a"}
