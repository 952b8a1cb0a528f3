"""The process-wide resilience state: breakers, the retry budget, backoff, hedging, shedding.

One engine per proxy process, shared by every request. A policy reload keeps it (breaker state
carries over for candidates that did not change); per-route knobs come from the route itself.
"""

from __future__ import annotations

from edgeproxy.clock import Clock
from edgeproxy.policy.snapshot import Policy
from edgeproxy.resilience.attempts import Permit
from edgeproxy.resilience.backoff import Backoff, BackoffSettings
from edgeproxy.resilience.breaker import BreakerRegistry, BreakerSettings, CarryOver
from edgeproxy.resilience.budget import RetryBudget, RetryBudgetSettings
from edgeproxy.resilience.hedge import Hedger, HedgeSettings
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
    ) -> None:
        self.clock = clock
        self.breaker_settings = breaker or BreakerSettings()
        self.breakers = BreakerRegistry(lambda _key: self.breaker_settings, clock)
        self.budget = RetryBudget(budget or RetryBudgetSettings(), clock)
        self.backoff = Backoff(backoff or BackoffSettings())
        self.hedger = Hedger(hedge or HedgeSettings(), clock)
        self.shedder = Shedder(shed or ShedSettings(), clock)

    # The attempt loop's Gate: admission per candidate key.

    def acquire(self, key: str) -> Permit | None:
        return self.breakers.get(key).acquire()

    def reopen_at(self, key: str) -> float | None:
        return self.breakers.get(key).reopen_at

    def eject(self, key: str, seconds: float, reason: str) -> None:
        self.breakers.get(key).eject(seconds, reason)

    def policy_swapped(self, policy: Policy) -> CarryOver:
        """Keep breaker state for the candidates the new policy still has."""
        keys = [c.key for name in policy.route_names for c in policy.routes[name].chain]
        return self.breakers.carry_over(keys)
