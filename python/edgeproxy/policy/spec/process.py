"""Process-wide settings of the policy spec: timeouts, request limits and shedding, outlier
detection, retries and their budget, health checks, telemetry."""

from __future__ import annotations

from edgeproxy.policy.keys import FROM_SNAPSHOT, At, key
from edgeproxy.policy.spec.base import _Spec
from edgeproxy.policy.units import ByteSize, Duration
from edgeproxy.snapshot import (
    DEFAULT_MAX_BODY_BYTES,
    Policy,
    Route,
)

# -- time limits ------------------------------------------------------------------------------


class TimeoutsSpec(_Spec):
    """Per-attempt and per-request time limits. Unset fields inherit ``defaults.timeouts``."""

    connect: Duration | None = key(
        "TCP (and TLS) connect to the upstream.", at=At(Route, "timeouts.connect")
    )
    first_token: Duration | None = key(
        "Stream: from sending the request to the first token (headers, and events that carry "
        "only the role, included). Long because reasoning models think before they speak.",
        at=At(Route, "timeouts.first_token"),
    )
    idle: Duration | None = key(
        "Stream: the longest silence between two upstream reads after the first token.",
        at=At(Route, "timeouts.idle"),
    )
    response: Duration | None = key(
        "Non-stream: one attempt, from sending the request to the whole answer.",
        at=At(Route, "timeouts.response"),
    )
    total: Duration | None = key(
        "The whole request: every attempt and the stream relay share it.",
        at=At(Route, "timeouts.total"),
    )


# -- process-wide settings ------------------------------------------------------------------------


class LimitsSpec(_Spec):
    """Request limits and load shedding."""

    max_body_bytes: ByteSize | None = key(
        "Larger request bodies (counted once `gzip`/`deflate` is decoded) are refused with 413 "
        "before anything is parsed or forwarded.",
        at=At(Policy, "max_body_bytes"),
        default=DEFAULT_MAX_BODY_BYTES,
    )
    body_read_timeout: Duration | None = key(
        "The whole request body must arrive within this time of its head; else 408 and the "
        "connection is closed. The body is read before the request takes a concurrency slot.",
        at=At(Policy, "body_read_timeout"),
    )
    max_in_flight: int | None = key(
        "Requests served at once; more wait in a short queue.",
        at=At(Policy, "engine.shed.max_in_flight"),
        ge=1,
    )
    max_queued: int | None = key(
        "Requests waiting for a slot; beyond it the answer is 503 + `Retry-After` at once.",
        at=At(Policy, "engine.shed.max_queue"),
        ge=0,
    )
    max_queue_wait: Duration | None = key(
        "The longest wait in the queue before a 503 + `Retry-After`.",
        at=At(Policy, "engine.shed.max_queue_wait"),
    )
    max_hedge_percent: float | None = key(
        "Hedged requests as a share of all requests (a hedge can bill twice).",
        at=At(Policy, "engine.max_hedge_ratio"),
        percent=True,
        ge=0,
        le=100,
    )
    cache_max_bytes: ByteSize | None = key(
        "The prompt-hash cache's size, all routes together (read at start).",
        at=At(Policy, "cache_max_bytes"),
    )
    cache_max_entries: int | None = key(
        "The most answers the cache holds (read at start).",
        at=At(Policy, "cache_max_entries"),
        ge=1,
    )


class OutlierDetectionSpec(_Spec):
    """Circuit breakers per candidate, in Envoy's outlier-detection vocabulary."""

    consecutive_failures: int | None = key(
        "Failures in a row that open a candidate's breaker.",
        at=At(Policy, "engine.breaker.consecutive_failures"),
        ge=1,
    )
    failure_percentage_threshold: float | None = key(
        "Or: this percentage of failed requests in `interval` opens it.",
        at=At(Policy, "engine.breaker.failure_ratio"),
        percent=True,
        gt=0,
        le=100,
    )
    failure_percentage_request_volume: int | None = key(
        "The percentage trigger needs at least this many requests in `interval`.",
        at=At(Policy, "engine.breaker.min_requests"),
        ge=1,
    )
    interval: Duration | None = key(
        "The window the percentage is taken over.", at=At(Policy, "engine.breaker.window")
    )
    base_ejection_time: Duration | None = key(
        "The first ejection; it grows with each consecutive one.",
        at=At(Policy, "engine.breaker.base_ejection_time"),
    )
    max_ejection_time: Duration | None = key(
        "The longest ejection.", at=At(Policy, "engine.breaker.max_ejection_time")
    )
    half_open_max_requests: int | None = key(
        "Trial requests at once when an ejection ends.",
        at=At(Policy, "engine.breaker.half_open_max_trials"),
        ge=1,
    )
    quota_ejection_time: Duration | None = key(
        "How long a candidate whose quota is exhausted (429 `insufficient_quota`), whose key "
        "the provider refuses (401/403) or whose model it does not serve (404) stays out.",
        at=At(Policy, "engine.quota_ejection"),
    )


class RetryPolicySpec(_Spec):
    """Retries of the same candidate, once no other candidate is left."""

    base_interval: Duration | None = key(
        "Full-jitter backoff: the first retry waits up to this.",
        at=At(Policy, "engine.backoff.base"),
    )
    max_interval: Duration | None = key(
        "No jittered wait beyond this (an upstream `Retry-After` is a floor).",
        at=At(Policy, "engine.backoff.cap"),
    )
    max_retries_per_candidate: int | None = key(
        "Retries of one candidate after its first attempt.",
        at=At(Policy, "engine.backoff.max_retries_per_candidate"),
        ge=0,
        le=10,
    )
    max_retry_after: Duration | None = key(
        "A longer upstream `Retry-After` is not waited out.",
        at=At(Policy, "engine.backoff.max_retry_after"),
    )
    min_attempt_time: Duration | None = key(
        "No attempt starts with less than this left of the deadline.",
        at=At(Policy, "engine.backoff.min_attempt_time"),
    )


class RetryBudgetSpec(_Spec):
    """Retries (of the same candidate, or onto a failing one) as a share of live requests;
    failover onto a healthy candidate is free."""

    budget_percent: float | None = key(
        "Retries as a share of requests: retries of the same candidate, failovers onto failing "
        "candidates, hedges (failover onto a healthy candidate is free).",
        at=At(Policy, "engine.budget.ratio"),
        percent=True,
        ge=0,
        le=100,
    )
    min_retries_per_second: float | None = key(
        "Retries always allowed, so a quiet app can still fail over.",
        at=At(Policy, "engine.budget.min_retries_per_second"),
        ge=0,
    )
    ttl: Duration | None = key(
        "The window the budget is counted over.", at=At(Policy, "engine.budget.window")
    )
    failing_percent: float | None = key(
        "A candidate failing at least this share of its recent requests (its breaker window) is "
        "failing: failing over onto it spends the budget; `0` budgets every failover (Envoy's "
        "and Linkerd's accounting).",
        at=At(Policy, "engine.budget.failing_ratio"),
        percent=True,
        ge=0,
        le=100,
    )


class HealthCheckSpec(_Spec):
    """Active health probes of every region (GET <base_url>/models by default: never billed)."""

    enabled: bool | None = key(
        "Probe every region's base URL.", at=At(Policy, "engine.probes_enabled")
    )
    interval: Duration | None = key(
        "Between two probes of one URL (with 20 % jitter).", at=At(Policy, "engine.probe.interval")
    )
    timeout: Duration | None = key(
        "A slower probe counts as failed.", at=At(Policy, "engine.probe.timeout")
    )
    unhealthy_threshold: int | None = key(
        "Failed probes in a row that open the breakers behind the URL.",
        at=At(Policy, "engine.probe.unhealthy_threshold"),
        ge=1,
    )
    healthy_threshold: int | None = key(
        "Passing probes in a row that move an open breaker to half-open.",
        at=At(Policy, "engine.probe.healthy_threshold"),
        ge=1,
    )
    max_probes_per_second: float | None = key(
        "All probes together.", at=At(Policy, "engine.probe.max_probes_per_second"), gt=0
    )


class TelemetrySpec(_Spec):
    """What goes into traces."""

    capture_content: bool = key(
        "Put prompt and completion text on spans; off, they never leave the proxy.",
        at=At(Policy, "capture_content"),
        spec_default=FROM_SNAPSHOT,
    )
