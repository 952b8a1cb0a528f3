"""Routes in the policy spec: per-task chains, context, prompt caching, affinity and the route
itself."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
)

from edgeproxy.policy.keys import At, key
from edgeproxy.policy.spec.auto import AutoSpec
from edgeproxy.policy.spec.base import _CANDIDATE_KEY, _TASK_NAME_SCHEMA, CandidateKey, _Spec
from edgeproxy.policy.spec.candidates import ChainEntry
from edgeproxy.policy.spec.defaults import CacheSpec, HedgeSpec
from edgeproxy.policy.spec.keys import RouteLimitsSpec
from edgeproxy.policy.spec.process import TimeoutsSpec
from edgeproxy.policy.units import Duration
from edgeproxy.snapshot import (
    MidstreamPolicy,
    Overflow,
    Route,
    Strategy,
)
from edgeproxy.snapshot.context import AffinitySettings, Breakpoints, GroupBy, Spread


class RouteTaskSpec(_Spec):
    """A task's own chain on a route (docs/tasks.md)."""

    chain: list[ChainEntry] = key(
        "The candidates that serve this task, in order (written like the route's chain; the "
        "route's residency and context-window constraints apply to them too).",
        required=True,
        min_length=1,
    )


class ContextSpec(_Spec):
    """A conversation too long for a candidate's context window (docs/context.md)."""

    overflow: Overflow | None = key(
        "When the prompt plus `max_tokens` (else the model's `max_output_tokens`) does not fit "
        "a candidate's window: `skip` the candidate, `error` (refuse the request with 400 "
        "`context_length_exceeded`: it must fit the whole chain), or `compact` the conversation "
        "for that candidate only (a larger window still gets it whole).",
        at=At(Route, "context.overflow"),
    )
    strategies: list[Strategy] | None = key(
        "What `compact` does, in order, each only while the conversation is still too long: "
        "`trim_tool_results` (oldest first, to their head and tail with a marker saying how "
        "much was cut), `drop_middle` (whole messages after the first user message, oldest "
        "first, with a marker), `summarize` (those messages replaced by a summary from "
        "`summarizer`). The system prompt, the first and the last user message and the last "
        "`keep_last` messages are never dropped; a tool call never loses its result.",
        at=At(Route, "context.strategies"),
        min_length=1,
        type_text="list of strategies",
    )
    keep_last: int | None = key(
        "Messages at the end that are never dropped or summarised (an assistant's tool calls "
        "and their results count as one).",
        at=At(Route, "context.keep_last"),
        ge=1,
    )
    tool_result_max_tokens: int | None = key(
        "`trim_tool_results` cuts a longer tool result to this many tokens (half head, half tail).",
        at=At(Route, "context.tool_result_max_tokens"),
        ge=64,
    )
    step: int | None = key(
        "`drop_middle` and `summarize` take this many messages at a time (rounded up, as far "
        "as there are any to take): the next turns then keep the same compacted prefix, which "
        "the provider's prompt cache and the summary cache reuse; `1` takes only what must go.",
        at=At(Route, "context.step"),
        ge=1,
    )
    summarizer: CandidateKey | None = key(
        "The model that writes `summarize`'s summaries: `provider/region/model` of a provider "
        "in this policy (its cost is counted with the request's; a summary is reused for the "
        "same history, keyed by the history's prefix hash).",
        at=At(Route, "context.summarizer"),
        schema={"pattern": _CANDIDATE_KEY},
    )
    summary_max_tokens: int | None = key(
        "The longest summary asked for.", at=At(Route, "context.summary_max_tokens"), ge=16
    )
    summary_ttl: Duration | None = key(
        "How long a summary is reused for the same history.", at=At(Route, "context.summary_ttl")
    )


def _off_or_auto(value: Any) -> Any:
    # YAML 1.1 reads an unquoted ``off`` (or ``on``, ``no``, ``yes``) as a boolean.
    if value is False:
        return "off"
    if value is True:
        return "auto"
    return value


class PromptCacheSpec(_Spec):
    """Provider prompt caching as a cost lever (docs/context.md)."""

    breakpoints: Annotated[Breakpoints, BeforeValidator(_off_or_auto)] | None = key(
        "`auto`: a request that carries no `cache_control` of its own gets Anthropic cache "
        "breakpoints on its long stable prefix (the last tool, the system prompt, the "
        "conversation so far) for Anthropic-wire candidates; OpenAI-wire candidates cache "
        "prefixes by themselves and never get the markers. `off`: the client's own markers "
        "only.",
        at=At(Route, "prompt_cache.breakpoints"),
    )
    min_prefix_tokens: int | None = key(
        "No breakpoint on a prompt shorter than this (estimated at four bytes a token): "
        "Anthropic caches nothing under 1,024 tokens, and a write costs more than plain input.",
        at=At(Route, "prompt_cache.min_prefix_tokens"),
        ge=0,
    )


# An affinity block's unset keys take these (a route without the block has no affinity at all).
_AFFINITY = AffinitySettings()


class AffinitySpec(_Spec):
    """Cache-affinity routing over the route's equivalent candidates (docs/context.md)."""

    spread: Spread | None = key(
        "`prefix`: requests sharing a prefix go to the same equivalent candidate (rendezvous "
        "hashing on the prefix hash; its prompt cache stays warm), the next one when it fails "
        "or is hot; `random`: an even spread with no stickiness.",
        at=At(Route, "affinity.spread"),
        default=_AFFINITY.spread,
    )
    group_by: GroupBy | None = key(
        "Which candidates of the chain are equivalent: `provider_model` (the regions of one "
        "provider's model) or `upstream_model` (every candidate sending the same model name, "
        "e.g. replicas of a self-hosted model).",
        at=At(Route, "affinity.group_by"),
        default=_AFFINITY.group_by,
    )
    prefix_messages: int | None = key(
        "The prefix hashed: the tools and the first N messages.",
        at=At(Route, "affinity.prefix_messages"),
        default=_AFFINITY.prefix_messages,
        ge=1,
    )
    load_factor: float | None = key(
        "Bounded load: a candidate with more than this times its fair share of the group's "
        "requests in flight passes new ones to the next (1 = strict balance).",
        at=At(Route, "affinity.load_factor"),
        default=_AFFINITY.load_factor,
        ge=1,
    )


class RouteSpec(_Spec):
    """What the app may ask for, and the chain that serves it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"anyOf": [{"required": ["chain"]}, {"required": ["auto"]}]},
    )

    aliases: list[str] = key(
        "Other model names that reach this route; `GET /v1/models` lists the route names and "
        "aliases.",
        at=At(Route, "aliases"),
        spec_default=[],
    )
    chain: list[ChainEntry] = key(
        "Candidates in the order they are tried: `provider/region/model`, or a mapping. "
        "Required unless the route has `auto`; there it serves the tasks no scorecard ranks "
        "yet, and follows auto's choices as the last resort.",
        spec_default=[],
        type_text="list of candidates",
    )
    timeouts: TimeoutsSpec = key(
        "Per field; unset fields inherit.",
        spec_default=TimeoutsSpec(),
        inherits="defaults.timeouts",
    )
    max_attempts: int | None = key(
        "A cap on attempts; a chain longer than this is cut.",
        at=At(Route, "max_attempts"),
        inherits="defaults.max_attempts",
        ge=1,
        le=20,
    )
    on_midstream_failure: MidstreamPolicy | None = key(
        "What happens when a committed stream fails (see defaults).",
        at=At(Route, "on_midstream_failure"),
        inherits="defaults.on_midstream_failure",
    )
    require_tags: dict[str, str] = key(
        "Residency: every candidate's region must carry all of these tags (e.g. "
        "`{jurisdiction: eu}`). Failover never leaves this set.",
        at=At(Route, "require_tags"),
        spec_default={},
    )
    min_context_window: int | None = key(
        "Every candidate's model must declare a `context_window` of at least this many "
        "tokens; a smaller (or undeclared) one is an error.",
        at=At(Route, "min_context_window"),
        ge=1,
    )
    hedge: HedgeSpec | None = key(
        "Opt-in hedging of slow first tokens (streams): `{delay: D}` or `{percentile: P}`."
    )
    cache: CacheSpec | None = key(
        "The prompt-hash cache for this route.", inherits="defaults.cache"
    )
    default_task: str | None = key(
        "The task of this route's requests that nothing else decided (see defaults).",
        at=At(Route, "default_task"),
        inherits="defaults.default_task",
        schema=_TASK_NAME_SCHEMA,
    )
    context: ContextSpec | None = key(
        "A conversation too long for a candidate's window: skip the candidate, refuse, or "
        "compact it for that candidate (off: `skip`)."
    )
    prompt_cache: PromptCacheSpec | None = key(
        "Provider prompt caching: cache breakpoints the proxy places (off unless written)."
    )
    affinity: AffinitySpec | None = key(
        "Cache-affinity routing over equivalent candidates (off unless written: the chain's order)."
    )
    tasks: dict[str, RouteTaskSpec] = key(
        "Per task (a name of `tasks.categories`): its own chain. A task without one is served "
        "by the route's chain; breakers, the retry budget, the deadline, honest streams and "
        "residency apply to each chain unchanged.",
        spec_default={},
    )
    auto: AutoSpec | None = key(
        "Choose each task's chain from a pool of candidates by the latest eval scorecards "
        "(docs/auto.md); off if unset."
    )
    limits: RouteLimitsSpec | None = key(
        "Limits on every request of this route together: RPM, TPM, USD per period (off if unset)."
    )
