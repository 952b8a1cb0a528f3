"""What an upstream call cost: tokens x the model's price (USD per million tokens).

A price sits on a provider's model entry in the policy::

    models:
      gpt-4o-mini: {context_window: 128000, price: {input: 0.15, output: 0.60, cached_input: 0.075}}

``usage`` is the upstream's own ``usage`` object, OpenAI's shape (``prompt_tokens``,
``completion_tokens``, ``prompt_tokens_details.cached_tokens``; cached tokens are part of
``prompt_tokens``; ``prompt_tokens_details.cache_write_tokens``, OpenRouter's name that the proxy
also uses for an Anthropic upstream's cache writes, is part of ``prompt_tokens`` too) or
Anthropic's (``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
``cache_creation_input_tokens``; cache reads and writes are *not* part of ``input_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeproxy.snapshot.settings import Price

PER_TOKENS = 1_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one upstream call consumed. ``input_tokens`` excludes the cached ones."""

    input_tokens: int = 0  # billed at the full input price
    output_tokens: int = 0
    cached_input_tokens: int = 0  # cache reads
    cache_write_tokens: int = 0
    estimated: bool = False  # counted by the proxy (e.g. a cut stream), not reported upstream

    @property
    def total_input_tokens(self) -> int:
        """All prompt tokens, as ``gen_ai.usage.input_tokens`` reports them."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.estimated or other.estimated,
        )

    @classmethod
    def parse(cls, usage: Mapping[str, Any] | Usage | None) -> Usage:
        """From an upstream ``usage`` object (OpenAI or Anthropic shape); garbage counts as 0."""
        if usage is None:
            return ZERO_USAGE
        if isinstance(usage, Usage):
            return usage
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            prompt = _int(usage.get("prompt_tokens"))
            details = usage.get("prompt_tokens_details")
            if not isinstance(details, Mapping):
                details = {}
            cached = min(_int(details.get("cached_tokens")), prompt)
            written = min(_int(details.get("cache_write_tokens")), prompt - cached)
            return cls(
                prompt - cached - written, _int(usage.get("completion_tokens")), cached, written
            )
        return cls(
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            _int(usage.get("cache_read_input_tokens")),
            _int(usage.get("cache_creation_input_tokens")),
        )


ZERO_USAGE = Usage()


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0
    return int(value)


def cost_usd(price: Price | None, usage: Mapping[str, Any] | Usage | None) -> float:
    """USD for ``usage`` at ``price``; 0.0 when the price is unknown."""
    if price is None:
        return 0.0
    u = Usage.parse(usage)
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    return (
        u.input_tokens * price.input
        + u.cached_input_tokens * cached
        + u.cache_write_tokens * write
        + u.output_tokens * price.output
    ) / PER_TOKENS


def parse_price(spec: Mapping[str, Any]) -> Price:
    """A ``price: {input, output, cached_input?, cache_write?}`` mapping from a policy file."""
    unknown = set(spec) - {"input", "output", "cached_input", "cache_write"}
    if unknown:
        raise ValueError(f"price: unknown field(s) {', '.join(sorted(unknown))}")
    if "input" not in spec or "output" not in spec:
        raise ValueError("price: 'input' and 'output' (USD per million tokens) are required")

    def num(name: str) -> float | None:
        value = spec.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"price.{name} must be a number (USD per million tokens)")
        return float(value)

    input_, output = num("input"), num("output")
    if input_ is None or output is None:
        raise ValueError("price: 'input' and 'output' must not be empty")
    return Price(
        input=input_,
        output=output,
        cached_input=num("cached_input"),
        cache_write=num("cache_write"),
    )
