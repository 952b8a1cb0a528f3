"""Static configuration of one simulated provider."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from .answers import AnswerBook
from .profiles import ModelProfile

# The provider APIs a simulator can speak (one per simulator: a port speaks one wire, as a real
# provider's endpoint does, so a request sent in the wrong wire gets a 404 instead of an answer).
SimWire = Literal["openai", "anthropic", "gemini", "openai_responses"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How one simulated provider behaves when no fault is set.

    ``tokens_per_second`` of 0 or ``inf`` disables pacing (every token is sent at once), which
    load tests use to measure the proxy rather than the simulator.
    """

    name: str
    ttft: float = 0.05
    tokens_per_second: float = 200.0
    default_completion_tokens: int = 24
    require_api_key: str | None = None
    seed: int = 0
    # Extra ids for GET /v1/models; models seen in requests are listed as well.
    models: tuple[str, ...] = ()
    # False: like some self-hosted servers, no usage at all (neither in answers nor streams).
    reports_usage: bool = True
    # Text in the last user message that makes the model call a tool (when tools are offered).
    tool_trigger: str = "use tool"
    # The wire this simulator speaks: ``openai`` (POST /v1/chat/completions), ``anthropic``
    # (POST /v1/messages), ``gemini`` (POST /v1/models/{model}:generateContent, ...) or
    # ``openai_responses`` (POST /v1/responses).
    wire: SimWire = "openai"
    # The length of an embedding when the request does not ask for one (sim/embeddings.py).
    embedding_dimensions: int = 16
    # The market (docs/simulator.md, "Market profiles"): per model name, how it behaves per task.
    # A model without a profile answers as above (filler text, the sim's ttft and pace).
    profiles: Mapping[str, ModelProfile] = field(default_factory=lambda: MappingProxyType({}))
    # What the profiled models know: the task and the right answer of each suite prompt.
    answers: AnswerBook | None = None
    # Every simulated delay of a profiled model is multiplied by this (tests run the market's
    # latencies 100x faster with 0.01; 0 removes them).
    time_scale: float = 1.0
    # A prompt cache (sim/prompt_cache.py) with this TTL in seconds: repeated prefixes are
    # reported as cached tokens the way the sim's wire does. None: no caching (every prompt
    # token is billed in full).
    prompt_cache_ttl: float | None = None
    # Prefill speed: the first token waits this long per uncached prompt token on top of
    # ``ttft`` (0: the prompt's length costs no time).
    prefill_tokens_per_second: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SimConfig.name must be a non-empty string")
        if self.wire not in get_args(SimWire):
            raise ValueError(
                f"SimConfig.wire must be one of {', '.join(get_args(SimWire))}, got {self.wire!r}"
            )
        if not 1 <= self.embedding_dimensions <= 8192:
            raise ValueError("SimConfig.embedding_dimensions must be between 1 and 8192")
        if self.ttft < 0:
            raise ValueError(f"SimConfig.ttft must be >= 0, got {self.ttft}")
        if self.tokens_per_second < 0 or math.isnan(self.tokens_per_second):
            raise ValueError(
                f"SimConfig.tokens_per_second must be >= 0, got {self.tokens_per_second}"
            )
        if self.prompt_cache_ttl is not None and not self.prompt_cache_ttl > 0:
            raise ValueError(f"SimConfig.prompt_cache_ttl must be > 0, got {self.prompt_cache_ttl}")
        if not 0 <= self.prefill_tokens_per_second < math.inf:
            raise ValueError("SimConfig.prefill_tokens_per_second must be >= 0 and finite")
        if not 0 <= self.time_scale < math.inf:
            raise ValueError(f"SimConfig.time_scale must be >= 0, got {self.time_scale}")
        object.__setattr__(self, "profiles", MappingProxyType(dict(self.profiles)))
        if self.default_completion_tokens < 1:
            raise ValueError(
                "SimConfig.default_completion_tokens must be >= 1, "
                f"got {self.default_completion_tokens}"
            )

    @property
    def token_interval(self) -> float:
        """Seconds between two content chunks (0 means unpaced)."""
        tps = self.tokens_per_second
        if tps == 0 or math.isinf(tps):
            return 0.0
        return 1.0 / tps
