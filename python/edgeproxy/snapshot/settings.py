"""The settings every part of the proxy is built from: frozen values, checked when made.

A leaf module: it imports nothing of the proxy but the failure classes, so the policy compiler,
the resilience engine, the cache and telemetry can all depend on it without depending on each
other. Each class checks its own values (``__post_init__``); the policy compiler turns a
``ValueError`` into a located policy problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgeproxy.failure import FailureClass

# -- time limits and hedging ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Each attempt's limits are also clipped to what is left of ``total``."""

    connect: float = 5.0
    # Reasoning models can think for a minute before their first token.
    first_token: float = 60.0
    idle: float = 30.0
    response: float = 300.0
    total: float = 600.0


# What a route does when a stream fails after its first byte reached the client.
MidstreamPolicy = Literal["error", "resume"]
DEFAULT_ON_MIDSTREAM_FAILURE: MidstreamPolicy = "resume"


@dataclass(frozen=True, slots=True)
class Hedge:
    """A route's hedging: a fixed delay, or a percentile of the first candidate's recent TTFT."""

    delay: float | None = None
    percentile: float | None = None


# -- circuit breakers (outlier detection) --------------------------------------------------------

# Failures that say nothing about the upstream's health: the request itself was bad (or too long
# for this model's context window), or the request's own deadline, spent mostly on earlier
# candidates, ran out.
NOT_COUNTED: frozenset[FailureClass] = frozenset(
    {FailureClass.CLIENT_ERROR, FailureClass.CONTEXT_LENGTH, FailureClass.DEADLINE}
)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Outlier detection for one candidate. Seconds for times; see docs/failover.md."""

    # Envoy's consecutive_5xx default: enough to ignore a blip, few enough to react in one burst.
    consecutive_failures: int = 5
    # Trip when failures / requests in the window reach this, with at least ``min_requests``.
    # Lower than Envoy's 85 %: a proxy with a fallback should leave a half-broken upstream early.
    failure_ratio: float = 0.5
    min_requests: int = 20
    window: float = 30.0
    # Envoy's defaults. Long enough that a dead region is not hammered, short enough to return.
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    # Concurrent trial requests in half-open: one is enough to learn, and limits the damage.
    half_open_max_trials: int = 1
    not_counted: frozenset[FailureClass] = field(default=NOT_COUNTED)

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_requests < 1 or self.half_open_max_trials < 1:
            raise ValueError("breaker: counts must be >= 1")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("breaker: failure_ratio must be in (0, 1]")
        if self.window <= 0 or not 0 < self.base_ejection_time <= self.max_ejection_time:
            raise ValueError("breaker: window > 0 and 0 < base_ejection_time <= max_ejection_time")


# -- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """Seconds. See docs/failover.md for the reasons behind each default."""

    base: float = 0.25  # the first retry waits up to this
    cap: float = 8.0  # no single jittered wait exceeds this (Retry-After may)
    # A Retry-After longer than this is not waited out on the same candidate: give up instead
    # (the client gets a 429 with the upstream's Retry-After) rather than hold the request.
    max_retry_after: float = 20.0
    # Retries of one candidate (not counting its first attempt); failover does not use these.
    max_retries_per_candidate: int = 1
    # Do not start an attempt with less time than this left on the deadline: it could not finish.
    min_attempt_time: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff: need 0 < base <= cap")
        if self.max_retry_after < 0 or self.max_retries_per_candidate < 0:
            raise ValueError("backoff: max_retry_after and max_retries_per_candidate must be >= 0")
        if self.min_attempt_time < 0:
            raise ValueError("backoff: min_attempt_time must be >= 0")


@dataclass(frozen=True, slots=True)
class RetryBudgetSettings:
    """Defaults follow Linkerd (ratio 0.2, 10 s window) with a lower floor for one sidecar."""

    # Retries may add at most this fraction of load on top of first attempts.
    ratio: float = 0.2
    # Retries always allowed, independent of traffic, so a quiet app can still fail over. A sidecar
    # serves one app, so 1/s (10 per window) rather than Linkerd's mesh-wide 10/s.
    min_retries_per_second: float = 1.0
    # Seconds the counts cover: long enough to smooth bursts, short enough to recover quickly.
    window: float = 10.0
    # A candidate whose recent failure ratio (its breaker's window) is at least this is failing:
    # failing over onto it spends the budget; onto one below it is free. Well under the breaker's
    # 50 %: a fallback failing one request in five is no longer "up" for the budget's purposes.
    failing_ratio: float = 0.2

    def __post_init__(self) -> None:
        if self.ratio < 0 or self.min_retries_per_second < 0 or self.window <= 0:
            raise ValueError("retry budget: ratio and floor must be >= 0, window > 0")
        if not 0 <= self.failing_ratio <= 1:
            raise ValueError("retry budget: failing_ratio must be in [0, 1]")


# -- health probes ----------------------------------------------------------------------------

ProbeMode = Literal["models", "url", "tcp", "completion"]


@dataclass(frozen=True, slots=True)
class ProberSettings:
    """Seconds for times. See docs/failover.md."""

    interval: float = 10.0  # between two probes of one target
    jitter: float = 0.2  # each interval is drawn in interval * [1 - jitter, 1 + jitter]
    timeout: float = 3.0  # one probe
    max_probes_per_second: float = 2.0  # for all targets together (a token bucket)
    unhealthy_threshold: int = 2  # failed probes in a row that trip the breakers
    healthy_threshold: int = 1  # passing probes in a row that end an outlier ejection early

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0 or self.max_probes_per_second <= 0:
            raise ValueError("prober: interval, timeout and max_probes_per_second must be > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("prober: jitter must be in [0, 1)")
        if self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("prober: thresholds must be >= 1")


# -- load shedding ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShedSettings:
    """See docs/failover.md. Counts are requests; times are seconds."""

    # LLM requests are long (Little's law: 10 req/s * 30 s streams = 300 in flight) and cheap in
    # CPU, so the bound protects memory and sockets rather than latency.
    max_in_flight: int = 512
    max_queue: int = 128
    max_queue_wait: float = 2.0
    retry_after: float = 1.0  # the Retry-After the client is given on a rejection

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_queue < 0:
            raise ValueError("shedding: max_in_flight >= 1 and max_queue >= 0")
        if self.max_queue_wait < 0 or self.retry_after < 0:
            raise ValueError("shedding: max_queue_wait and retry_after must be >= 0")


# -- the prompt-hash cache ----------------------------------------------------------------------

Cacheable = Literal["deterministic", "all"]


DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How the prompt-hash cache treats requests.

    ``cacheable``:
      - ``"deterministic"`` (default): only requests that ask for a deterministic answer, i.e.
        ``temperature == 0`` or ``top_p == 0`` given explicitly (an absent temperature means the
        provider's default of 1, which samples);
      - ``"all"``: every request, sampled or not (a replay of one sample is served to everyone
        asking the same thing until the TTL ends).

    In both modes ``n`` must be absent or 1 (one answer per request).

    ``max_bytes`` and ``max_entries`` bound the one store shared by all routes of the process;
    they are read when the ``PromptCache`` is built.
    """

    enabled: bool = False
    ttl: float = 300.0
    cacheable: Cacheable = "deterministic"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not self.ttl > 0:
            raise ValueError(f"cache ttl must be > 0 seconds, got {self.ttl!r}")
        if self.cacheable not in ("deterministic", "all"):
            raise ValueError(f"cacheable must be 'deterministic' or 'all', got {self.cacheable!r}")
        if self.max_bytes < 0 or self.max_entries < 0:
            raise ValueError("cache bounds must be >= 0")


# -- cost -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` defaults to ``input`` (no discount known);
    ``cache_write`` (Anthropic's cache creation) defaults to ``input`` as well."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # also rejects NaN
                raise ValueError(f"price.{name} must be >= 0 (USD per million tokens)")


# -- the process-wide resilience settings ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Process-wide resilience settings (breakers, retries, budget, probes, shedding)."""

    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    budget: RetryBudgetSettings = field(default_factory=RetryBudgetSettings)
    probe: ProberSettings = field(default_factory=ProberSettings)
    probes_enabled: bool = True
    shed: ShedSettings = field(default_factory=ShedSettings)
    max_hedge_ratio: float = 0.1
    quota_ejection: float = 3600.0  # seconds out after "insufficient_quota"
