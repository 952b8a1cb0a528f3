"""What the request path and the breakers tell their listeners: typed events.

The attempt loop, the exchange and the breakers *emit* these; telemetry (spans, metrics, the
access log) *listens*. Nothing on the request path reads telemetry state back: a cost header, a
skip list or an attempt count comes from the exchange's own ledger, never from a listener. The
one exception is trace propagation: an attempt asks its request's telemetry for the
``traceparent`` headers to send upstream (``RequestListener.trace_headers``).

Two channels:

- **Per request**: a ``RequestListener`` (one per request, made by telemetry at ingress) gets the
  ``RequestEvent`` values of that request, in order. Attempt numbers are 1-based over the whole
  request, resumed legs included, so a listener can key its per-attempt state by number.
- **Process-wide**: ``BreakerTransition`` values go to the callbacks registered with the breaker
  registry (``BreakerRegistry.on_transition``), whatever request caused them.

Events are frozen, slotted dataclasses: cheap to make (~0.3 µs each), impossible to mutate after
the fact. A listener must not raise and must not block (it runs on the event loop, inline).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from edgeproxy.cost import Usage
from edgeproxy.failure import AttemptFailure
from edgeproxy.snapshot import Candidate


class AttemptKind(enum.StrEnum):
    """Why an attempt was made: what telemetry reports, without re-deriving it from the order."""

    FIRST = "first"  # the request's first attempt
    RETRY = "retry"  # the same candidate again, after a backoff
    FAILOVER = "failover"  # the next candidate, after a failure
    HEDGE = "hedge"  # a second candidate racing a slow first one
    RESUME = "resume"  # continues a committed stream that broke, on another candidate


class SkipReason(enum.StrEnum):
    """Why a candidate of the route's chain was not tried."""

    BREAKER_OPEN = "breaker_open"  # ejected (outlier detection, a failed probe, Retry-After)
    CONTEXT_WINDOW = "context_window"  # the prompt plus max_tokens does not fit its window
    WIRE = "wire"  # the request uses a feature this candidate's wire cannot carry
    # A failover onto a candidate that is failing itself, with the retry budget spent.
    RETRY_BUDGET = "retry_budget"
    # The provider's own RPM/TPM on this candidate is reached (``limits`` of its model): skipped
    # before the provider would answer 429 (docs/keys.md).
    PROVIDER_LIMIT = "provider_limit"
    # This request alone is more than the provider's whole TPM on this candidate: no wait helps.
    OVER_PROVIDER_LIMIT = "over_provider_limit"


# "ok", a ``FailureClass`` value, or "abandoned" (a hedge that lost, a client that left).
AttemptOutcome = str
# "complete", a ``FailureClass`` value, or "client_gone".
RelayOutcome = str
BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CandidateSkipped:
    candidate: Candidate
    reason: SkipReason
    detail: str  # in words, for the trace (never a secret: no headers, no bodies)


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    number: int
    candidate: Candidate
    kind: AttemptKind


@dataclass(frozen=True, slots=True)
class FirstToken:
    """A stream attempt's first content event arrived (its time to first chunk)."""

    number: int
    seconds: float


@dataclass(frozen=True, slots=True)
class UsageRecorded:
    """What an attempt consumed (its upstream's usage, or the proxy's own count), and its cost."""

    number: int
    candidate: Candidate
    usage: Usage
    cost_usd: float


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """An attempt is over: answered (``ok``), failed, or abandoned. A stream attempt that
    answered ends when its relay ends (its outcome then says how the relay went)."""

    number: int
    candidate: Candidate
    kind: AttemptKind
    outcome: AttemptOutcome
    seconds: float
    failure: AttemptFailure | None = None
    status: int | None = None  # the upstream's HTTP status, when one arrived
    response_model: str | None = None  # the model the upstream says answered


@dataclass(frozen=True, slots=True)
class BackingOff:
    """The loop waits before retrying the same candidate."""

    candidate: Candidate
    seconds: float


@dataclass(frozen=True, slots=True)
class Committed:
    """The first byte of a stream reached the client: no silent failover from here on."""

    number: int
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class RelayEnded:
    """A committed stream's relay from one attempt ended."""

    number: int
    outcome: RelayOutcome
    chunks: int
    bytes: int
    detail: str = ""
    skipped_events: int = 0  # malformed upstream events skipped (docs/failover.md)


@dataclass(frozen=True, slots=True)
class RouteDecided:
    """The route, its chain, and what the plan left out before any attempt."""

    route: str
    chain: tuple[Candidate, ...]
    skipped: tuple[CandidateSkipped, ...]
    policy_version: str


@dataclass(frozen=True, slots=True)
class CacheLooked:
    result: str  # "hit", "miss" or "bypass"


@dataclass(frozen=True, slots=True)
class TaskDecided:
    """The request's task (docs/tasks.md) and what decided it."""

    task: str
    source: str  # "header", "metadata", "rule", "classifier" or "default"
    # The rule (``task_rule``, ``task_rule_name``) or the classifier's best guess
    # (``task_label``, ``task_score``) behind it, when one was asked.
    detail: Mapping[str, str | int | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AutoDecided:
    """An ``auto`` route's choice for the request (docs/auto.md): ``role`` says why its
    ``choice`` leads the chain: ``incumbent``, ``challenger`` (a ramp's ``share``), ``pinned``,
    ``chain`` (no evidence: the route's chain), or ``none`` (nothing to serve it with)."""

    route: str
    task: str
    role: str
    choice: str | None  # the candidate put first
    share: float | None = None  # the ramping challenger's share of the task's requests


@dataclass(frozen=True, slots=True)
class ContextCompacted:
    """An attempt's conversation was compacted to fit its candidate's window (docs/context.md):
    the prompt's tokens before and after, in that candidate's encoding, and the strategies
    that changed something, in the order they ran."""

    number: int
    candidate: Candidate
    tokens_before: int
    tokens_after: int
    strategies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SummaryMade:
    """Compaction asked the route's summariser for a summary (``outcome`` "ok", or its failure
    class), or found one in the summary cache ("cached": no call, no cost)."""

    candidate: Candidate
    outcome: str
    usage: Usage
    cost_usd: float
    seconds: float


@dataclass(frozen=True, slots=True)
class AffinityRouted:
    """Cache-affinity routing put ``chosen`` first among the equivalent candidates ``group``:
    ``home`` is the member the request's prefix hashes to. ``outcome``: "home", "spilled" (home
    was hot: bounded load), "unhealthy" (home's breaker is open) or "random" (``spread:
    random``, home is the random pick)."""

    group: tuple[str, ...]
    home: str
    chosen: str
    outcome: str


@dataclass(frozen=True, slots=True)
class KeyAuthenticated:
    """The request carried a valid virtual key (docs/keys.md): its id, name and team (never the
    key itself)."""

    key_id: str
    name: str
    team: str | None


@dataclass(frozen=True, slots=True)
class LimitRefused:
    """A key's, team's or route's limit or budget refused the request (429): ``limit`` names
    which (``key:rpm``, ``team:budget``, ...)."""

    limit: str
    retry_after: float


RequestEvent = (
    RouteDecided
    | TaskDecided
    | AutoDecided
    | CacheLooked
    | CandidateSkipped
    | AttemptStarted
    | FirstToken
    | UsageRecorded
    | AttemptEnded
    | BackingOff
    | Committed
    | RelayEnded
    | ContextCompacted
    | SummaryMade
    | AffinityRouted
    | KeyAuthenticated
    | LimitRefused
)


class RequestListener(Protocol):
    """One request's listener (telemetry makes one per request at ingress)."""

    def on_event(self, event: RequestEvent) -> None: ...

    def trace_headers(self, number: int) -> Mapping[str, str]:
        """Headers that carry the trace context to the upstream for attempt ``number``."""
        ...


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A candidate's breaker changed state (process-wide; not tied to one request)."""

    key: str
    old: BreakerState
    new: BreakerState
    reason: str


TransitionListener = Callable[[BreakerTransition], None]


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet's Redis became reachable (``up``) or not (process-wide; docs/fleet.md)."""

    up: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FleetFallback:
    """A fleet operation (``op``: counters, cache, health, keys) was answered from local
    state because Redis was away or slower than ``fleet.timeout``."""

    op: str
    reason: str  # "down" (not asked: Redis is known to be away), "timeout" or "error"


FleetEvent = FleetState | FleetFallback
FleetListener = Callable[[FleetEvent], None]
