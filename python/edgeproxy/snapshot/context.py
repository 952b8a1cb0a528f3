"""A route's context settings: what happens when a conversation outgrows a candidate's window,
provider prompt caching, and cache-affinity routing (docs/context.md).

Leaf types, checked when made (``__post_init__``); the policy compiler turns a ``ValueError``
into a located problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# What a route does with a candidate whose context window cannot hold the prompt plus the
# answer: ``skip`` it (and try the others), ``error`` (refuse the request: it must fit the whole
# chain), or ``compact`` the conversation for that candidate.
Overflow = Literal["skip", "error", "compact"]
Strategy = Literal["trim_tool_results", "drop_middle", "summarize"]
STRATEGIES: Final[tuple[Strategy, ...]] = ("trim_tool_results", "drop_middle", "summarize")


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """How a route fits a conversation to a candidate's context window (docs/context.md)."""

    overflow: Overflow = "skip"
    # Tried in this order, each only while the conversation is still too long.
    strategies: tuple[Strategy, ...] = ("trim_tool_results", "drop_middle")
    # Messages kept whole at the end (an assistant's tool calls and their results count as one).
    keep_last: int = 4
    # A tool result longer than this is cut to its head and tail (with a marker saying how much).
    tool_result_max_tokens: int = 1024
    # Messages dropped or summarised at a time (rounded up to a multiple of this): the turns
    # that follow keep the same compacted prefix, which the provider's prompt cache and the
    # summary cache can reuse, instead of a prefix that moves by one message every turn.
    step: int = 8
    summarizer: str | None = None  # provider/region/model of the summariser (``summarize``)
    summary_max_tokens: int = 512
    summary_ttl: float = 3600.0  # seconds a summary is reused for the same history

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if self.overflow not in ("skip", "error", "compact"):
            raise ValueError(f"context.overflow must be skip, error or compact: {self.overflow!r}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"context.strategies: unknown {', '.join(map(repr, unknown))}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("context.strategies: a strategy is named twice")
        if self.overflow == "compact" and not self.strategies:
            raise ValueError("context.overflow compact needs at least one strategy")
        if "summarize" in self.strategies and self.summarizer is None:
            raise ValueError("context.strategies names summarize: set context.summarizer")
        if self.keep_last < 1 or self.tool_result_max_tokens < 64 or self.summary_max_tokens < 16:
            raise ValueError(
                "context: keep_last >= 1, tool_result_max_tokens >= 64, summary_max_tokens >= 16"
            )
        if self.step < 1:
            raise ValueError("context.step must be >= 1")
        if not self.summary_ttl > 0:
            raise ValueError("context.summary_ttl must be > 0")


Breakpoints = Literal["off", "auto"]


@dataclass(frozen=True, slots=True)
class PromptCacheSettings:
    """Provider prompt caching as a cost lever (docs/context.md). ``auto``: for requests that
    carry no ``cache_control`` of their own, the proxy marks the long stable prefix (tools,
    system prompt, the conversation so far) for Anthropic-wire upstreams; OpenAI caches
    prefixes by itself (the OpenAI wire never sends the markers)."""

    breakpoints: Breakpoints = "off"
    # Below this many (estimated) prompt tokens no breakpoint is placed: Anthropic caches
    # nothing shorter than 1,024 tokens (2,048 for its small models), and a write costs more.
    min_prefix_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.breakpoints not in ("off", "auto"):
            raise ValueError(f"prompt_cache.breakpoints must be off or auto: {self.breakpoints!r}")
        if self.min_prefix_tokens < 0:
            raise ValueError("prompt_cache.min_prefix_tokens must be >= 0")


Spread = Literal["prefix", "random"]
GroupBy = Literal["provider_model", "upstream_model"]


@dataclass(frozen=True, slots=True)
class AffinitySettings:
    """Cache-affinity routing over a route's equivalent candidates (docs/context.md)."""

    # ``prefix``: requests sharing a prefix go to the same member (rendezvous hashing on the
    # prefix hash) unless it is hot; ``random``: an even spread with no stickiness (what a
    # plain load balancer in front of replicas does).
    spread: Spread = "prefix"
    # Which candidates are equivalent: the regions of one provider's model (a provider's prompt
    # cache is per region), or every candidate sending the same upstream model name (replicas).
    group_by: GroupBy = "provider_model"
    # The prefix hashed: the tools and the first N messages (system prompt and first user
    # message: one conversation, or one feature's requests with a long shared system prompt).
    prefix_messages: int = 2
    # Bounded load: no member takes more than this times its fair share of the group's requests
    # in flight (Mirrokni et al.); a hot member's requests spill to the next one.
    load_factor: float = 1.25

    def __post_init__(self) -> None:
        if self.spread not in ("prefix", "random"):
            raise ValueError(f"affinity.spread must be prefix or random: {self.spread!r}")
        if self.group_by not in ("provider_model", "upstream_model"):
            raise ValueError(f"affinity.group_by: unknown {self.group_by!r}")
        if self.prefix_messages < 1:
            raise ValueError("affinity.prefix_messages must be >= 1")
        if not self.load_factor >= 1:
            raise ValueError("affinity.load_factor must be >= 1")
