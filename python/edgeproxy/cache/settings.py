"""Cache settings: per-route behaviour (enabled, TTL, what is cacheable) and process-wide bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
