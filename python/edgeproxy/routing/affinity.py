"""Cache-affinity routing: requests that share a prefix go to the same equivalent candidate.

A provider's prompt cache lives in one region (often one replica): a conversation whose turns
land on different regions pays for its whole prefix every time it moves. A route with an
``affinity`` block treats some of its candidates as equivalent (``group_by``: the regions of one
provider's model, or every candidate sending the same upstream model) and orders each group per
request:

- ``spread: prefix``: **rendezvous hashing** (highest random weight) on the request's prefix hash
  (``context.turns.prefix_hash``: the tools and the first ``prefix_messages`` messages). Every
  request with that prefix ranks the members the same way; the top one (its *home*) goes first,
  the rest follow in rank order, so a failure fails over to the same next member for all of them
  (whose cache then warms), and a member added or removed moves only its own share of prefixes.
- **Bounded load** (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads"):
  a member already holding ``load_factor`` times its fair share of the group's requests in
  flight (counting this one) is passed over for the next in rank: a hot prefix spreads instead
  of melting its home.
- A member whose breaker is open goes to the end of the ranking (it would only be skipped).
- ``spread: random``: an even spread with no stickiness, what a plain load balancer in front of
  replicas does (the benchmark's baseline).

The group keeps the chain positions its members had: affinity reorders members among
themselves, never ahead of or behind other candidates. The in-flight counts are process-wide
(``AffinityTable``); the exchange holds a lease on the member it put first until it ends.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeproxy.snapshot import AffinitySettings, Candidate

Healthy = Callable[[str], bool]


def equivalence(candidate: Candidate, settings: AffinitySettings) -> tuple[str, ...]:
    if settings.group_by == "upstream_model":
        return (candidate.upstream_model,)
    return (candidate.provider, candidate.model)


def groups(chain: Sequence[Candidate], settings: AffinitySettings) -> list[list[int]]:
    """The chain positions of each group of two or more equivalent candidates."""
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i, candidate in enumerate(chain):
        by_key.setdefault(equivalence(candidate, settings), []).append(i)
    return [positions for positions in by_key.values() if len(positions) > 1]


def weight(prefix: bytes, key: str) -> bytes:
    """The rendezvous weight of candidate ``key`` for a prefix (compared as bytes)."""
    return hashlib.blake2b(prefix + b"\0" + key.encode(), digest_size=8).digest()


class Lease:
    """One request's hold on a member's load count; ``release`` is idempotent."""

    __slots__ = ("_key", "_table")

    def __init__(self, table: AffinityTable, key: str) -> None:
        self._table: AffinityTable | None = table
        self._key = key

    def release(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table._release(self._key)


class AffinityTable:
    """Process-wide: the requests in flight on each member affinity put first."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._load: dict[str, int] = {}
        self.rng = rng or random.Random()

    def load(self, key: str) -> int:
        return self._load.get(key, 0)

    def lease(self, key: str) -> Lease:
        self._load[key] = self._load.get(key, 0) + 1
        return Lease(self, key)

    def _release(self, key: str) -> None:
        left = self._load.get(key, 0) - 1
        if left > 0:
            self._load[key] = left
        else:
            self._load.pop(key, None)


@dataclass(frozen=True, slots=True)
class Decision:
    """One group's order for one request."""

    group: tuple[str, ...]  # the members' keys, in chain order
    home: str
    chosen: str
    outcome: str  # "home", "spilled" (home was hot), "unhealthy" (home was down), "random"


def order(
    chain: tuple[Candidate, ...],
    settings: AffinitySettings,
    prefix: bytes,
    table: AffinityTable,
    healthy: Healthy,
) -> tuple[tuple[Candidate, ...], list[Decision]]:
    """The chain with each group's members reordered for this request, and what was decided."""
    out = list(chain)
    decisions: list[Decision] = []
    for positions in groups(chain, settings):
        members = [chain[p] for p in positions]
        if settings.spread == "random":
            ranked = list(members)
            table.rng.shuffle(ranked)
        else:
            ranked = sorted(members, key=lambda c: weight(prefix, c.key), reverse=True)
        home = ranked[0]
        up = [c for c in ranked if healthy(c.key)]
        down = [c for c in ranked if not healthy(c.key)]
        chosen = up[0] if up else home
        outcome = "random" if settings.spread == "random" else "home"
        if up and up[0] is not home:
            outcome = "unhealthy"
        if settings.spread == "prefix" and len(up) > 1:
            in_flight = sum(table.load(c.key) for c in members) + 1
            cap = math.ceil(settings.load_factor * in_flight / len(members))
            roomy = next((c for c in up if table.load(c.key) + 1 <= cap), up[0])
            if roomy is not chosen:
                chosen, outcome = roomy, "spilled"
        ranked = [chosen, *(c for c in (*up, *down) if c is not chosen)]
        for p, candidate in zip(positions, ranked, strict=True):
            out[p] = candidate
        decisions.append(Decision(tuple(c.key for c in members), home.key, chosen.key, outcome))
    return tuple(out), decisions
