"""The process-wide resilience state: breakers, the retry budget, backoff, hedging, shedding.

One engine per proxy process, shared by every request. A policy reload keeps it (breaker state
carries over for candidates that did not change); per-route knobs come from the route itself.
"""

from __future__ import annotations

import aiohttp

from edgeproxy.clock import Clock
from edgeproxy.policy.snapshot import Policy
from edgeproxy.resilience.attempts import Permit
from edgeproxy.resilience.backoff import Backoff, BackoffSettings
from edgeproxy.resilience.breaker import BreakerRegistry, BreakerSettings, CarryOver
from edgeproxy.resilience.budget import RetryBudget, RetryBudgetSettings
from edgeproxy.resilience.hedge import Hedger, HedgeSettings
from edgeproxy.resilience.prober import Prober, ProberSettings, ProbeTarget, http_probe
from edgeproxy.resilience.shedding import Shedder, ShedSettings


class ResilienceEngine:
    def __init__(
        self,
        clock: Clock,
        *,
        breaker: BreakerSettings | None = None,
        budget: RetryBudgetSettings | None = None,
        backoff: BackoffSettings | None = None,
        hedge: HedgeSettings | None = None,
        shed: ShedSettings | None = None,
        probe: ProberSettings | None = None,
    ) -> None:
        self.clock = clock
        self.breaker_settings = breaker or BreakerSettings()
        self.breakers = BreakerRegistry(lambda _key: self.breaker_settings, clock)
        self.budget = RetryBudget(budget or RetryBudgetSettings(), clock)
        self.backoff = Backoff(backoff or BackoffSettings())
        self.hedger = Hedger(hedge or HedgeSettings(), clock)
        self.shedder = Shedder(shed or ShedSettings(), clock)
        self.probe_settings = probe or ProberSettings()
        self.prober: Prober | None = None

    # The attempt loop's Gate: admission per candidate key.

    def acquire(self, key: str) -> Permit | None:
        return self.breakers.get(key).acquire()

    def reopen_at(self, key: str) -> float | None:
        return self.breakers.get(key).reopen_at

    def eject(self, key: str, seconds: float, reason: str) -> None:
        self.breakers.get(key).eject(seconds, reason)

    def policy_swapped(self, policy: Policy) -> CarryOver:
        """Keep breaker state (and probe schedules) for what the new policy still has."""
        keys = [c.key for name in policy.route_names for c in policy.routes[name].chain]
        if self.prober is not None:
            self.prober.update_targets(probe_targets(policy))
        return self.breakers.carry_over(keys)

    def start_probing(self, policy: Policy, session: aiohttp.ClientSession) -> None:
        """Health probes over the pooled upstream session: GET <base_url>/models, never billed."""
        self.prober = Prober(
            probe_targets(policy),
            self.breakers,
            http_probe(session),
            self.probe_settings,
            self.clock,
        )
        self.prober.start()

    async def stop_probing(self) -> None:
        if self.prober is not None:
            await self.prober.stop()

    def snapshot(self) -> dict[str, object]:
        """For /admin/status."""
        return {
            "breakers": self.breakers.snapshot(),
            "probes": self.prober.snapshot() if self.prober is not None else [],
            "retry_budget": self.budget.snapshot(),
            "hedging": self.hedger.snapshot(),
            "shedding": self.shedder.snapshot(),
        }


def probe_targets(policy: Policy) -> list[ProbeTarget]:
    """One probe per region base URL, feeding the breakers of every candidate behind it."""
    keys: dict[str, list[str]] = {}
    headers: dict[str, dict[str, str]] = {}
    for name in policy.route_names:
        for candidate in policy.routes[name].chain:
            keys.setdefault(candidate.base_url, [])
            if candidate.key not in keys[candidate.base_url]:
                keys[candidate.base_url].append(candidate.key)
            headers.setdefault(candidate.base_url, dict(candidate.headers))
    return [ProbeTarget(url, tuple(k), headers=headers[url]) for url, k in keys.items()]
