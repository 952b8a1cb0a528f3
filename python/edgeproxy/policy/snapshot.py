"""The frozen policy snapshot the proxy serves from.

Built once per load by ``compile.py``; never mutated. A reload builds a new one and swaps a single
reference, so a request that started on one snapshot finishes on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Each attempt's limits are also clipped to what is left of ``total``."""

    connect: float = 5.0
    # Reasoning models can think for a minute before their first token.
    first_token: float = 60.0
    idle: float = 30.0
    response: float = 300.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (provider, region, model) an attempt can be sent to."""

    provider: str
    region: str
    model: str  # the name in the policy
    upstream_model: str  # the name sent to the provider
    kind: Literal["openai"]
    base_url: str
    chat_url: str
    context_window: int | None
    tags: Mapping[str, str]
    # Static headers including the provider key: kept out of repr so it can never be printed.
    headers: Mapping[str, str] = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.region}/{self.model}"


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    aliases: tuple[str, ...]
    chain: tuple[Candidate, ...]
    timeouts: Timeouts
    max_attempts: int
    on_midstream_failure: Literal["error"]


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    version: str  # a short content hash, shown on /admin and in logs
    routes: Mapping[str, Route]  # by route name AND by alias
    route_names: tuple[str, ...]  # the names /v1/models lists, in policy order
    max_body_bytes: int
    warnings: tuple[str, ...] = ()

    def route_for(self, model: str) -> Route | None:
        return self.routes.get(model)
