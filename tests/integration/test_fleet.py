"""Three sidecars (three ``edgeproxy serve`` processes) and one redis-server: the fleet tier.

Each part of docs/fleet.md, proven with the official SDKs against simulators:

- a key's RPM and USD budget hold across the three sidecars, on both wires, to the request;
- an answer cached by one sidecar is a hit on another (and still never another tenant's);
- an outage one sidecar finds steers the other two before any probe of theirs (probes are off:
  the fleet is the only way they can learn it);
- Redis killed in the middle of a load and started again: no request fails, each sidecar says
  it served on local state, and the usage settled meanwhile reaches Redis when it returns.

The tests share one fleet (starting three processes costs seconds); each uses its own key, and
the one that kills Redis runs last.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from edgeproxy.sim import SimConfig
from fixtures.fleetkit import Fleet, ServeProcess, keys_cli, wait_for
from fixtures.redis import RedisServer
from harness import LoopThread

POLICY = """
version: 1
keys: {auth: true, refresh: 100ms}
fleet: {redis: "REDIS_URL", timeout: 200ms, retry_interval: 200ms}
health_check: {enabled: false}
outlier_detection: {consecutive_failures: 2, base_ejection_time: 120s, max_ejection_time: 300s}
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 3s, total: 15s}
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions:
      one: {base_url: "$alpha_one"}
      two: {base_url: "$alpha_two"}
    models:
      m: {price: {input: 100, output: 100}}
routes:
  m:
    chain: [alpha/one/m, alpha/two/m]
  cached:
    chain: [alpha/two/m]
    cache: {ttl: 5m}
"""
SIMS = (
    SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
    SimConfig(name="alpha_two", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
)
ASK = [{"role": "user", "content": "hello fleet"}]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("fleet-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(
    loop_thread: LoopThread, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    made = Fleet(loop_thread, tmp_path_factory.mktemp("fleet"), POLICY, SIMS, 3, redis.url)
    yield made
    made.close()


def new_key(fleet: Fleet, name: str, *flags: str) -> str:
    created = keys_cli(fleet.policy, "create", "--name", name, *flags)
    key: str = created["key"]
    # Every sidecar reloads the key table within keys.refresh.
    wait_for(lambda: all(_known(s, key) for s in fleet.sidecars), 20, "the key on every sidecar")
    return key


def _known(sidecar: ServeProcess, key: str) -> bool:
    response = sidecar.http.post(
        "/v1/chat/completions",
        json={"model": "nope", "messages": ASK},
        headers={"Authorization": f"Bearer {key}"},
    )
    return response.status_code != 401  # 404 for the unknown model: the key passed


def oai(sidecar: ServeProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0, timeout=15)


def claude(sidecar: ServeProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sidecar.url, api_key=key, max_retries=0, timeout=15)


def ask(sidecar: ServeProcess, key: str, wire: str, **kwargs: Any) -> Any:
    """One request through ``sidecar`` in ``wire``; the raw response (an SDK error raises)."""
    model = kwargs.pop("model", "m")
    if wire == "openai":
        return oai(sidecar, key).chat.completions.with_raw_response.create(
            model=model, messages=ASK, max_tokens=20, **kwargs
        )
    if "temperature" in kwargs:
        kwargs["extra_body"] = {"temperature": kwargs.pop("temperature")}
    return claude(sidecar, key).messages.with_raw_response.create(
        model=model, messages=ASK, max_tokens=20, **kwargs
    )


# -- limits and budgets across the fleet ---------------------------------------------------


def test_a_keys_rpm_holds_across_three_sidecars_and_both_wires(fleet: Fleet) -> None:
    key = new_key(fleet, "fleet-rpm", "--rpm", "6")
    outcomes = []
    for i, sidecar in zip(range(10), itertools.cycle(fleet.sidecars), strict=False):
        wire = "openai" if i % 2 == 0 else "anthropic"
        try:
            ask(sidecar, key, wire)
            outcomes.append("ok")
        except (openai.RateLimitError, anthropic.RateLimitError) as exc:
            assert exc.response.headers["x-edgeproxy-limit"] == "key:rpm"
            assert int(exc.response.headers["Retry-After"]) >= 1
            outcomes.append("limited")
    assert outcomes == ["ok"] * 6 + ["limited"] * 4


def test_a_keys_budget_holds_across_three_sidecars_to_one_request(
    fleet: Fleet, redis: RedisServer
) -> None:
    budget = 0.03
    key = new_key(fleet, "fleet-budget", "--budget", f"{budget}usd/day")
    spent, served = 0.0, 0
    refused: Exception | None = None
    for i, sidecar in zip(range(300), itertools.cycle(fleet.sidecars), strict=False):
        try:
            response = ask(sidecar, key, "openai" if i % 2 == 0 else "anthropic")
        except (openai.RateLimitError, anthropic.RateLimitError) as exc:
            refused = exc
            break
        spent += float(response.headers.get("x-edgeproxy-cost-usd") or 0)
        served += 1
    assert refused is not None and served >= 6
    assert refused.response.headers["x-edgeproxy-limit"] == "key:budget"  # type: ignore[attr-defined]
    # A request reserves its prompt plus max_tokens (20) at 100 USD per million: well under this.
    one_request = 60 * 100 / 1e6
    assert spent <= budget + 1e-9
    assert spent + one_request > budget
    # Every sidecar's settlements reached the one budget in Redis.
    usage = keys_cli(fleet.policy, "usage", "--period", "day", "--by", "key")
    row = next(r for r in usage["rows"] if r["key"] == "fleet-budget")
    assert row["requests"] == served
    assert row["usd"] == pytest.approx(spent, rel=1e-6)


# -- the shared cache ----------------------------------------------------------------------


def test_an_answer_cached_by_one_sidecar_is_a_hit_on_another(fleet: Fleet) -> None:
    key = new_key(fleet, "fleet-cache")
    other_tenant = new_key(fleet, "fleet-cache-other")
    first, second, third = fleet.sidecars
    before = fleet.requests_to("alpha_two")
    stored = ask(first, key, "openai", model="cached", temperature=0)
    assert stored.headers["x-edgeproxy-cache"] == "miss"
    # The write to Redis is in the background: the second sidecar finds it once it landed.
    wait_for(
        lambda: (
            ask(second, key, "openai", model="cached", temperature=0).headers["x-edgeproxy-cache"]
            == "hit"
        ),
        10,
        "the shared entry",
    )
    hit = ask(third, key, "anthropic", model="cached", temperature=0)  # another wire: its own
    assert fleet.requests_to("alpha_two") - before <= 2
    again = ask(third, key, "openai", model="cached", temperature=0)
    assert again.headers["x-edgeproxy-cache"] == "hit"
    assert again.parse().choices[0].message.content == stored.parse().choices[0].message.content
    # Another key is another tenant: never served the first key's answer.
    theirs = ask(third, other_tenant, "openai", model="cached", temperature=0)
    assert theirs.headers["x-edgeproxy-cache"] == "miss"
    assert hit.http_response.status_code == 200


# -- shared health -------------------------------------------------------------------------


def test_an_outage_one_sidecar_finds_steers_the_others_before_their_probes(fleet: Fleet) -> None:
    key = new_key(fleet, "fleet-health")
    first, second, third = fleet.sidecars
    fleet.fault("alpha_one", mode="status", status=500)
    try:
        before = fleet.requests_to("alpha_one")
        # The first sidecar meets the outage: two failures open its breaker (each request still
        # answered by alpha/two/m).
        for _ in range(2):
            response = ask(first, key, "openai")
            assert response.headers["x-edgeproxy-region"] == "two"
        assert first.breaker("alpha/one/m")["state"] == "open"
        assert fleet.requests_to("alpha_one") - before == 2
        # The others hear of it at once: no probe of theirs runs (health_check is off).
        for sidecar in (second, third):
            wait_for(
                lambda s=sidecar: s.breaker("alpha/one/m")["state"] == "open", 10, "the ejection"
            )
            assert sidecar.breaker("alpha/one/m")["reason"].startswith("fleet: ")
        for sidecar in (second, third, second, third):
            response = ask(sidecar, key, "anthropic")
            assert response.http_response.headers["x-edgeproxy-region"] == "two"
        # The dead region saw the first sidecar's two requests, and nothing after.
        assert fleet.requests_to("alpha_one") - before == 2
        assert second.status()["fleet"]["ejections_received"] >= 1
    finally:
        fleet.heal("alpha_one")


# -- Redis away ----------------------------------------------------------------------------


def test_redis_killed_mid_load_fails_no_request_and_the_fleet_catches_up(
    fleet: Fleet, redis: RedisServer
) -> None:
    key = new_key(fleet, "fleet-outage", "--rpm", "100000")
    statuses: list[int] = []
    lock = threading.Lock()
    per_thread = 40
    done = [0]

    def load(sidecar: ServeProcess, wire: str) -> None:
        for _ in range(per_thread):
            response = ask(sidecar, key, wire)
            with lock:
                statuses.append(response.http_response.status_code)
                done[0] += 1

    threads = [
        threading.Thread(target=load, args=(sidecar, wire))
        for sidecar, wire in zip(fleet.sidecars, ("openai", "anthropic", "openai"), strict=True)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: done[0] >= 20, 60, "the load to get going")
    redis.kill()
    wait_for(lambda: done[0] >= 60, 60, "requests while Redis is away")
    redis.start()
    for thread in threads:
        thread.join(120)
    total = per_thread * len(threads)
    assert statuses == [200] * total  # not one request failed
    for sidecar in fleet.sidecars:
        assert sidecar.metric("edgeproxy_fleet_fallbacks_total") > 0
        wait_for(lambda s=sidecar: s.metric("edgeproxy_fleet_redis_up") == 1, 30, "Redis back")
        wait_for(lambda s=sidecar: s.status()["fleet"]["settlements_pending"] == 0, 30, "catch-up")
    usage = keys_cli(fleet.policy, "usage", "--period", "day", "--by", "key")
    row = next(r for r in usage["rows"] if r["key"] == "fleet-outage")
    # Every request is counted once its settlement reached Redis; a settlement whose reply was
    # lost in the crash may be pushed again (at least once, never lost).
    assert total <= row["requests"] <= total + len(fleet.sidecars)


def test_serve_refuses_key_auth_without_a_store(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.replace('fleet: {redis: "REDIS_URL", timeout: 200ms, retry_interval: 200ms}\n', "")
        .replace("$alpha_one", "http://127.0.0.1:9/v1")
        .replace("$alpha_two", "http://127.0.0.1:9/v1")
    )
    with pytest.raises(AssertionError, match="no key store"):
        ServeProcess(policy)
