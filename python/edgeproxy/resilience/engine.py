"""The process-wide resilience state: breakers, the retry budget, backoff, hedging, shedding.

One engine per proxy process, shared by every request. A policy reload keeps it (breaker state
carries over for candidates that did not change); per-route knobs come from the route itself.
"""

from __future__ import annotations

import hashlib
from functools import partial

from edgeproxy.clock import Clock
from edgeproxy.resilience.attempts import Permit
from edgeproxy.resilience.backoff import Backoff
from edgeproxy.resilience.breaker import BreakerRegistry, CarryOver
from edgeproxy.resilience.budget import RetryBudget
from edgeproxy.resilience.hedge import Hedger, HedgeSettings
from edgeproxy.resilience.prober import Prober, ProbeTarget, http_probe
from edgeproxy.resilience.shedding import Shedder
from edgeproxy.snapshot import Candidate, EngineSettings, Hedge, Policy
from edgeproxy.upstreams.http1 import Http1Pool


def upstream_identities(policy: Policy) -> dict[str, str]:
    """Per candidate key, a digest of what its attempts go to: the URL, the model name sent, the
    wire and the headers (the provider key among them: only its digest is kept, never shown).
    A reload that changes it (a retired model's new name, a fixed base URL, a rotated key) gives
    the candidate a fresh breaker: an ejection learned of the old upstream says nothing of it."""
    out: dict[str, str] = {}
    for name in policy.route_names:
        for c in policy.routes[name].candidates:
            what = (c.wire.name, c.chat_url, c.upstream_model, sorted(c.headers.items()))
            out[c.key] = hashlib.sha256(repr(what).encode()).hexdigest()
    return out


class ResilienceEngine:
    def __init__(
        self, clock: Clock, settings: EngineSettings | None = None, policy: Policy | None = None
    ) -> None:
        self.clock = clock
        self._identities = upstream_identities(policy) if policy is not None else {}
        self.settings = settings = settings or EngineSettings()
        self.breakers = BreakerRegistry(lambda _key: self.settings.breaker, clock)
        self.budget = RetryBudget(settings.budget, clock)
        self.backoff = Backoff(settings.backoff)
        self.hedger = Hedger(HedgeSettings(max_ratio=settings.max_hedge_ratio), clock)
        self.shedder = Shedder(settings.shed, clock)
        self.prober: Prober | None = None
        self._http: Http1Pool | None = None

    def hedge_delay(self, hedge: Hedge | None, key: str) -> float | None:
        """Seconds to wait on ``key`` before hedging; None: no hedge (off, or too few samples)."""
        if hedge is None:
            return None
        if hedge.delay is not None:
            return hedge.delay
        assert hedge.percentile is not None
        observed = self.hedger.tracker(key).percentile(hedge.percentile)
        if observed is None:
            return None
        return max(observed, self.hedger.settings.min_delay)

    # The attempt loop's Gate: admission per candidate key.

    def acquire(self, key: str) -> Permit | None:
        return self.breakers.get(key).acquire()

    def reopen_at(self, key: str) -> float | None:
        return self.breakers.get(key).reopen_at

    def open_reason(self, key: str) -> str:
        return self.breakers.get(key).reason

    def eject(self, key: str, seconds: float, reason: str) -> None:
        self.breakers.get(key).eject(seconds, reason)

    def policy_swapped(self, policy: Policy) -> CarryOver:
        """After a reload: keep breaker state (and probe schedules) for what the new policy still
        has; settings that changed take effect now (their counters start afresh)."""
        old, new = self.settings, policy.engine
        self.settings = new
        if new.budget != old.budget:
            self.budget = RetryBudget(new.budget, self.clock)
        if new.backoff != old.backoff:
            self.backoff = Backoff(new.backoff)
        if new.max_hedge_ratio != old.max_hedge_ratio:
            self.hedger = Hedger(HedgeSettings(max_ratio=new.max_hedge_ratio), self.clock)
        if new.shed != old.shed:
            # Requests admitted by the old shedder release their slots to it: harmless.
            self.shedder = Shedder(new.shed, self.clock)
        if self._http is not None and (
            new.probe != old.probe or new.probes_enabled != old.probes_enabled
        ):
            self._restart_prober(policy)
        elif self.prober is not None:
            self.prober.update_targets(probe_targets(policy))
        keys = [c.key for name in policy.route_names for c in policy.routes[name].candidates]
        identities = upstream_identities(policy)
        changed = {k for k, v in identities.items() if self._identities.get(k, v) != v}
        self._identities = identities
        return self.breakers.carry_over(keys, lambda _key: new.breaker, changed)

    def start_probing(self, policy: Policy, http: Http1Pool) -> None:
        """Health probes over the proxy's one upstream client, each in its candidate's wire
        (free by default: the provider's model list; a billed completion only when asked)."""
        self._http = http
        self._restart_prober(policy)

    def _restart_prober(self, policy: Policy) -> None:
        if self.prober is not None:
            task = self.prober.start()
            task.cancel()  # stop() is async; the old task ends at its next await
        self.prober = None
        if not self.settings.probes_enabled or self._http is None:
            return
        self.prober = Prober(
            probe_targets(policy),
            self.breakers,
            http_probe(self._http),
            self.settings.probe,
            self.clock,
        )
        self.prober.start()

    async def stop_probing(self) -> None:
        if self.prober is not None:
            await self.prober.stop()


def probe_targets(policy: Policy) -> list[ProbeTarget]:
    """One probe per region base URL, feeding the breakers of every candidate behind it; the
    first candidate met at that URL builds the probe in its wire."""
    keys: dict[str, list[str]] = {}
    first: dict[str, Candidate] = {}
    for name in policy.route_names:
        for candidate in policy.routes[name].candidates:
            at = keys.setdefault(candidate.base_url, [])
            if candidate.key not in at:
                at.append(candidate.key)
            first.setdefault(candidate.base_url, candidate)
    return [probe_target(first[url], tuple(k)) for url, k in keys.items()]


def probe_target(candidate: Candidate, keys: tuple[str, ...]) -> ProbeTarget:
    mode = candidate.health_check
    wire = candidate.wire
    if mode == "tcp":
        return ProbeTarget(candidate.base_url, keys, mode)
    return ProbeTarget(
        candidate.base_url,
        keys,
        mode,
        request=wire.probe(candidate, mode, candidate.health_check_url),
        verdict=partial(wire.probe_verdict, mode),
    )
