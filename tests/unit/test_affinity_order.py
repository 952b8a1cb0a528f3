"""Cache-affinity ordering (``routing.affinity``): consistent per prefix, minimal movement when a
member goes, bounded load, unhealthy members last, an even random spread, groups by policy."""

from __future__ import annotations

import random
from collections import Counter
from types import MappingProxyType

from edgeproxy.routing.affinity import AffinityTable, groups, order
from edgeproxy.snapshot import AffinitySettings, Candidate
from edgeproxy.wires import upstream_wire


def cand(provider: str, region: str, model: str = "m", upstream: str | None = None) -> Candidate:
    return Candidate(
        provider=provider,
        region=region,
        model=model,
        upstream_model=upstream or model,
        wire=upstream_wire("openai"),
        base_url=f"http://{provider}.{region}",
        chat_url=f"http://{provider}.{region}/chat/completions",
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
    )


REPLICAS = tuple(cand("rep", r) for r in ("a", "b", "c", "d"))
CHAIN = (cand("big", "main", "large"), *REPLICAS, cand("other", "main"))
PREFIXED = AffinitySettings()


def first_replica(chain: tuple[Candidate, ...]) -> str:
    return chain[1].key


def up(_key: str) -> bool:
    return True


def test_members_are_reordered_in_place_and_the_rest_keeps_its_order() -> None:
    chain, decisions = order(CHAIN, PREFIXED, b"p1", AffinityTable(), up)
    assert chain[0] == CHAIN[0] and chain[-1] == CHAIN[-1]
    assert sorted(c.key for c in chain[1:5]) == sorted(c.key for c in REPLICAS)
    (decision,) = decisions
    assert decision.chosen == decision.home == chain[1].key and decision.outcome == "home"


def test_a_prefix_always_goes_home_and_prefixes_spread() -> None:
    table = AffinityTable()
    prefixes = [bytes([i, j]) for i in range(20) for j in range(20)]
    homes = {p: first_replica(order(CHAIN, PREFIXED, p, table, up)[0]) for p in prefixes}
    again = {p: first_replica(order(CHAIN, PREFIXED, p, table, up)[0]) for p in homes}
    assert homes == again
    spread = Counter(homes.values())
    assert len(spread) == 4 and min(spread.values()) > 60  # ~100 each of 400


def test_removing_a_member_moves_only_its_own_prefixes() -> None:
    prefixes = [bytes([i, j]) for i in range(20) for j in range(20)]
    table = AffinityTable()
    before = {p: first_replica(order(CHAIN, PREFIXED, p, table, up)[0]) for p in prefixes}
    smaller = tuple(c for c in CHAIN if c.key != "rep/b/m")
    after = {p: first_replica(order(smaller, PREFIXED, p, table, up)[0]) for p in prefixes}
    moved = [p for p in prefixes if before[p] != after[p]]
    assert moved and all(before[p] == "rep/b/m" for p in moved)


def test_a_down_home_sends_its_prefix_to_the_same_next_member() -> None:
    table = AffinityTable()
    chain, _ = order(CHAIN, PREFIXED, b"p", table, up)
    home, runner_up = chain[1].key, chain[2].key
    down_chain, (decision,) = order(CHAIN, PREFIXED, b"p", table, lambda k: k != home)
    assert down_chain[1].key == runner_up and down_chain[4].key == home  # last, not gone
    assert decision.outcome == "unhealthy" and decision.home == home
    # Everything down: the ranking stands (the attempt loop skips what is open).
    all_down, _ = order(CHAIN, PREFIXED, b"p", table, lambda _k: False)
    assert [c.key for c in all_down] == [c.key for c in chain]


def test_bounded_load_spills_a_hot_home() -> None:
    table = AffinityTable()
    settings = AffinitySettings(load_factor=1.25)
    chain, _ = order(CHAIN, settings, b"hot", table, up)
    home = chain[1].key
    leases = []
    chosen = Counter()
    for _ in range(40):  # forty requests of one prefix in flight at once
        chain, (decision,) = order(CHAIN, settings, b"hot", table, up)
        leases.append(table.lease(decision.chosen))
        chosen[decision.chosen] += 1
    # No member over ceil(1.25 * in_flight / 4) at any point: the spread is near even.
    assert max(chosen.values()) <= 13 and chosen[home] == max(chosen.values())
    assert len(chosen) == 4
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert all(table.load(c.key) == 0 for c in REPLICAS)
    # Cold again: the prefix goes home.
    assert order(CHAIN, settings, b"hot", table, up)[1][0].outcome == "home"


def test_random_spread_is_even_and_not_sticky() -> None:
    table = AffinityTable(random.Random(1))
    settings = AffinitySettings(spread="random")
    picks = Counter(
        first_replica(order(CHAIN, settings, b"same", table, up)[0]) for _ in range(800)
    )
    assert len(picks) == 4 and min(picks.values()) > 150


def test_groups_follow_the_policys_equivalence() -> None:
    chain = (
        cand("fw", "us", "llama", "meta/llama"),
        cand("tg", "us", "llama", "meta/llama"),
        cand("fw", "eu", "llama", "meta/llama"),
        cand("fw", "us", "mistral"),
    )
    assert groups(chain, AffinitySettings(group_by="provider_model")) == [[0, 2]]
    assert groups(chain, AffinitySettings(group_by="upstream_model")) == [[0, 1, 2]]
    assert groups(chain[:1], AffinitySettings()) == []
