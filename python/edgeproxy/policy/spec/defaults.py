"""What routes inherit in the policy spec: hedging, the response cache, ``defaults``."""

from __future__ import annotations

from typing import Literal

from edgeproxy.policy.keys import At, key
from edgeproxy.policy.spec.base import _TASK_NAME_SCHEMA, _Spec
from edgeproxy.policy.spec.process import TimeoutsSpec
from edgeproxy.policy.units import Duration
from edgeproxy.snapshot import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_ON_MIDSTREAM_FAILURE,
    DEFAULT_TASK,
    MidstreamPolicy,
    Route,
)

# -- what routes inherit ----------------------------------------------------------------------


class HedgeSpec(_Spec):
    """Streams: when the first candidate has produced no token after a delay, the next one
    starts too; the first to produce a token wins and the other is cancelled. Capped by
    ``limits.max_hedge_percent``. Set exactly one of ``delay`` and ``percentile``."""

    delay: Duration | None = key("A fixed delay.", at=At(Route, "hedge.delay"))
    percentile: float | None = key(
        "Or: this percentile of the first candidate's recent time to first token (after 20 "
        "observations).",
        at=At(Route, "hedge.percentile"),
        gt=0,
        le=100,
    )


class CacheSpec(_Spec):
    """The prompt-hash cache for a route (docs/cache.md)."""

    enabled: bool = key(
        "Answer identical requests from the cache (a written cache block is on unless this "
        "says otherwise).",
        at=At(Route, "cache.enabled"),
        spec_default=True,
    )
    ttl: Duration | None = key("How long an answer is served.", at=At(Route, "cache.ttl"))
    cacheable: Literal["deterministic", "all"] | None = key(
        "`deterministic`: only requests with `temperature` or `top_p` 0; `all`: every request "
        "(one sampled answer is replayed until the TTL ends).",
        at=At(Route, "cache.cacheable"),
    )


class DefaultsSpec(_Spec):
    """What every route inherits unless it says otherwise."""

    timeouts: TimeoutsSpec = key(
        "Inherited field by field by each route.", spec_default=TimeoutsSpec()
    )
    cache: CacheSpec | None = key("The cache of every route (off if unset).")
    max_attempts: int | None = key(
        "Attempts per request across the whole chain.",
        at=At(Route, "max_attempts"),
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
    )
    on_midstream_failure: MidstreamPolicy | None = key(
        "What happens when a committed stream fails. `error`: an in-band error event in the "
        "client's format, then the stream ends (never with `[DONE]`). `resume`: another "
        "candidate whose model has `assistant_prefill` continues the text already sent (plain "
        "text of one choice only; never inside a tool call); if none can, `error`. The default "
        "resumes where a model of the chain declares `assistant_prefill` (docs/failover.md).",
        at=At(Route, "on_midstream_failure"),
        default=DEFAULT_ON_MIDSTREAM_FAILURE,
    )
    default_task: str | None = key(
        "The task of a request that no explicit name, rule or confident classifier decided "
        f"(docs/tasks.md); a declared task or `{DEFAULT_TASK}`.",
        at=At(Route, "default_task"),
        default=DEFAULT_TASK,
        schema=_TASK_NAME_SCHEMA,
    )
