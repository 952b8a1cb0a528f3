"""The frozen policy snapshot the proxy serves from.

Built once per load by ``compile.py``; never mutated. A reload builds a new one and swaps a single
reference, so a request that started on one snapshot finishes on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from edgeproxy.snapshot.auto import (
    DEFAULT_CONFIRMATIONS,
    DEFAULT_FALLBACKS,
    DEFAULT_MARGIN,
    DEFAULT_MIN_SAMPLES,
    AutoObjective,
    RampSettings,
    RollbackSettings,
    ScheduleSettings,
    ShadowSettings,
)
from edgeproxy.snapshot.context import AffinitySettings, ContextSettings, PromptCacheSettings
from edgeproxy.snapshot.limits import NO_LIMITS, FleetSettings, KeySettings, Limits
from edgeproxy.snapshot.settings import (
    DEFAULT_MAX_BYTES,
    CacheSettings,
    EngineSettings,
    Hedge,
    Price,
    ProbeMode,
    Timeouts,
)
from edgeproxy.snapshot.tasks import DEFAULT_TASK, Tasks
from edgeproxy.snapshot.wire import UpstreamWire

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_BODY_READ_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CACHE_MAX_BYTES = DEFAULT_MAX_BYTES
DEFAULT_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (provider, region, model) an attempt can be sent to."""

    provider: str
    region: str
    model: str  # the name in the policy
    upstream_model: str  # the name sent to the provider
    # The provider's API, resolved once from the registry (``edgeproxy.wires``): everything the
    # request path does differently per provider goes through it.
    wire: UpstreamWire
    base_url: str
    chat_url: str  # where an attempt is POSTed (the wire's endpoint for this region)
    context_window: int | None
    tags: Mapping[str, str]
    # Static headers including the provider key: kept out of repr so it can never be printed.
    headers: Mapping[str, str] = field(repr=False)
    price: Price | None = None  # USD per million tokens
    tokenizer: str = "cl100k_base"  # an exact encoding, or "estimate"
    assistant_prefill: bool = False  # can continue a trailing assistant message (resume)
    max_output_tokens: int = (
        4096  # max_tokens for an Anthropic-wire model when the client gave none
    )
    health_check: ProbeMode = "models"
    health_check_url: str | None = None
    # An embedding model's vector length (its route's fallbacks must share it).
    dimensions: int | None = None
    # Inputs one embeddings request to this model may carry (None: the wire's limit).
    max_batch_inputs: int | None = None
    # The provider's own limits on this candidate (its RPM/TPM): the proxy stops sending before
    # the provider would answer 429 and fails over instead (docs/keys.md).
    limits: Limits = NO_LIMITS
    # ``provider/region/model``: how breakers, metrics, logs and the cache name the candidate.
    # Made once here (the request path reads it several times per attempt).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider}/{self.region}/{self.model}")


@dataclass(frozen=True, slots=True)
class Excluded:
    """A candidate a ``*`` region expanded to but the route's constraints ruled out."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class AutoSettings:
    """An ``auto`` route's choice per task from a pool of candidates (docs/auto.md).

    ``pool`` is compiled like a chain (the route's residency and context-window constraints
    applied); ``excluded`` holds what the default pool (``evals.candidates``) lost to them.
    ``tasks`` holds each task's objective that the policy names, resolved against ``objective``
    (the route's default); ``pins`` a task's pinned candidate, which leads whatever the
    scorecards say.
    """

    pool: tuple[Candidate, ...] = ()
    objective: AutoObjective = field(default_factory=AutoObjective)
    tasks: Mapping[str, AutoObjective] = field(default_factory=lambda: MappingProxyType({}))
    pins: Mapping[str, Candidate] = field(default_factory=lambda: MappingProxyType({}))
    margin: float = DEFAULT_MARGIN  # a challenger must be this much better (0.05 = 5 %)
    confirmations: int = DEFAULT_CONFIRMATIONS  # or better by the margin in this many in a row
    fallbacks: int = DEFAULT_FALLBACKS  # ranked candidates after the leader
    min_samples: int = DEFAULT_MIN_SAMPLES  # graded requests a scorecard cell needs
    ramp: RampSettings = field(default_factory=RampSettings)
    rollback: RollbackSettings = field(default_factory=RollbackSettings)
    shadow: ShadowSettings | None = None  # off unless the policy says
    excluded: tuple[Excluded, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 10:
            raise ValueError("auto margin must be a percentage >= 0")
        if self.confirmations < 1 or self.fallbacks < 0 or self.min_samples < 1:
            raise ValueError("auto: confirmations and min_samples >= 1, fallbacks >= 0")

    def objective_for(self, task: str) -> AutoObjective:
        return self.tasks.get(task, self.objective)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    aliases: tuple[str, ...]
    # Only candidates that satisfy ``require_tags`` and ``min_context_window``: the request path
    # can try any of them without checking residency again, and when none of them is healthy the
    # request fails (closed) rather than leaving the allowed set.
    chain: tuple[Candidate, ...]
    timeouts: Timeouts
    max_attempts: int
    on_midstream_failure: Literal["error", "resume"]
    # The residency constraint applied to the chain ({} = none), for decision records and explain.
    require_tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    min_context_window: int | None = None
    # What a ``*`` region expanded to but the constraints ruled out (explain shows them).
    excluded: tuple[Excluded, ...] = ()
    hedge: Hedge | None = None  # opt-in hedging of slow first tokens
    cache: CacheSettings = field(default_factory=CacheSettings)  # off unless the policy says
    default_task: str = DEFAULT_TASK  # the task when no rule or classifier decides
    # Per task, its own chain (the same constraints applied); a task without one uses ``chain``.
    task_chains: Mapping[str, tuple[Candidate, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # ``auto``: the chain is chosen per task from scorecards (``edgeproxy.auto``); ``chain`` and
    # ``task_chains`` are then what serves a task no scorecard ranks, and the last resort.
    auto: AutoSettings | None = None
    # A conversation too long for a candidate's window: skip it, refuse, or compact for it.
    context: ContextSettings = field(default_factory=ContextSettings)
    # ``context.summarizer`` compiled (by candidate key; empty without one).
    summarizers: Mapping[str, Candidate] = field(default_factory=lambda: MappingProxyType({}))
    prompt_cache: PromptCacheSettings = field(default_factory=PromptCacheSettings)
    affinity: AffinitySettings | None = None  # cache-affinity routing (off unless written)
    limits: Limits = NO_LIMITS  # every request of the route together (docs/keys.md)

    @property
    def summarizer(self) -> Candidate | None:
        """The candidate that writes ``summarize``'s summaries, if the route names one."""
        name = self.context.summarizer
        return self.summarizers.get(name) if name is not None else None

    def chain_for(self, task: str) -> tuple[Candidate, ...]:
        """The chain that serves ``task``: its own, or the route's."""
        return self.task_chains.get(task, self.chain)

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """Every candidate the route may send to (its chain first, then its tasks' chains, an
        ``auto`` route's pool and pins), once:
        what the prober probes and what breaker state a reload keeps."""
        seen: dict[str, Candidate] = {c.key: c for c in self.chain}
        chains = list(self.task_chains.values())
        if self.auto is not None:
            chains += [self.auto.pool, tuple(self.auto.pins.values())]
        for chain in chains:
            for candidate in chain:
                seen.setdefault(candidate.key, candidate)
        return tuple(seen.values())

    def constraints(self) -> str:
        """The route's constraints in words (empty when it has none), e.g. for error messages."""
        parts = []
        if self.require_tags:
            tags = ", ".join(f"{k}={v}" for k, v in self.require_tags.items())
            parts.append(f"require_tags {tags}")
        if self.min_context_window is not None:
            parts.append(f"min_context_window {self.min_context_window}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """What ``edgeproxy eval`` and the ``auto`` route read (docs/evals.md).

    ``judge`` and ``candidates`` are candidate keys (``provider/region/model``); ``pool`` holds
    them compiled, so the eval sends to them exactly as the proxy would. Paths are as written;
    relative ones are read from the policy file's directory.
    """

    judge: str | None = None
    candidates: tuple[str, ...] = ()
    suite: str | None = None
    scorecards: tuple[str, ...] = ()
    max_cost: float = 5.0  # USD per eval run (candidates and judge together)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)  # eval schedule
    pool: Mapping[str, Candidate] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Written as YAML lists; held as tuples so the snapshot stays immutable.
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "scorecards", tuple(self.scorecards))
        if not self.max_cost >= 0:
            raise ValueError("evals.max_cost must be >= 0 (USD)")


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    version: str  # a short content hash, shown on /admin and in logs
    routes: Mapping[str, Route]  # by route name AND by alias
    route_names: tuple[str, ...]  # the names /v1/models lists, in policy order
    max_body_bytes: int
    warnings: tuple[str, ...] = ()
    engine: EngineSettings = field(default_factory=EngineSettings)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # the cache's bounds (read at start)
    cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES
    capture_content: bool = False  # prompt/completion text on spans (opt-in)
    tasks: Tasks = field(default_factory=Tasks)  # task categories, rules and classifier
    body_read_timeout: float = DEFAULT_BODY_READ_TIMEOUT  # seconds for the whole request body
    evals: EvalSettings = field(default_factory=EvalSettings)
    keys: KeySettings = field(default_factory=KeySettings)  # virtual keys (docs/keys.md)
    # Limits per team, by the team name keys carry (docs/keys.md).
    teams: Mapping[str, Limits] = field(default_factory=lambda: MappingProxyType({}))
    fleet: FleetSettings = field(default_factory=FleetSettings)  # Redis (docs/fleet.md)

    def route_for(self, model: str) -> Route | None:
        return self.routes.get(model)
