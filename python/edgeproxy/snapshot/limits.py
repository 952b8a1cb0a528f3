"""Virtual keys, limits and budgets, and the fleet tier: the settings the policy gives them.

Leaf types (docs/keys.md, docs/fleet.md). ``Limits`` is what a key, a team, a route or a
candidate may be held to; a ``Budget`` is USD per calendar period (UTC). The counters that
enforce them live in ``edgeproxy.limits`` (one process) and ``edgeproxy.fleet`` (Redis).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*usd\s*/\s*(day|week|month)\s*$", re.IGNORECASE)


class Budget(NamedTuple):
    """USD per calendar period (UTC): ``50usd/month``. A tuple, not a dataclass: it is one
    value of the policy (one key), written as one string."""

    usd: float
    period: Period

    def __str__(self) -> str:
        amount = f"{self.usd:.10f}".rstrip("0").rstrip(".")  # never 1e+06: parse reads it back
        return f"{amount}usd/{self.period}"

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``50usd/month``, ``0.5usd/day``, ``10 USD / week``; ValueError otherwise."""
        found = _BUDGET.match(text)
        if found is None:
            raise ValueError(
                f"a budget is written <amount>usd/<period> with a period of "
                f"{', '.join(PERIODS)} (e.g. 50usd/month), got {text[:40]!r}"
            )
        usd = float(found.group(1))
        if not math.isfinite(usd):
            raise ValueError("a budget's amount must be a finite number of USD")
        period: Period = found.group(2).lower()  # type: ignore[assignment]
        return cls(usd, period)


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests and tokens per minute, and USD per period; None: no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"limits.{name} must be >= 1")
        if self.budget is not None and not self.budget.usd >= 0:
            raise ValueError("a budget must be >= 0 USD")

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.budget is None

    def describe(self) -> str:
        parts = [
            f"rpm={self.rpm}" if self.rpm is not None else "",
            f"tpm={self.tpm}" if self.tpm is not None else "",
            f"budget={self.budget}" if self.budget is not None else "",
        ]
        return " ".join(p for p in parts if p) or "none"


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class KeySettings:
    """Virtual keys (docs/keys.md)."""

    # Requests must carry a valid key. Off: a loopback sidecar trusts its app, as before.
    auth: bool = False
    # The embedded store (SQLite), relative to the policy file; with ``fleet.redis`` the keys
    # and their usage live in Redis instead.
    store: str | None = None
    # How often the key table is checked for changes (a revoked key stops working within it).
    refresh: float = 5.0

    def __post_init__(self) -> None:
        if not self.refresh > 0:
            raise ValueError("keys.refresh must be > 0 seconds")


DEFAULT_FLEET_PREFIX = "edgeproxy"


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The fleet tier on Redis (docs/fleet.md)."""

    redis: str | None = None  # redis://[user:password@]host:port/db; None: no fleet
    # The longest a request waits on Redis per call; beyond it, local state answers.
    timeout: float = 0.05
    # After a failed call, Redis is not asked again for this long (a ping checks it).
    retry_interval: float = 1.0
    prefix: str = DEFAULT_FLEET_PREFIX  # every key the fleet writes starts with it
    cache: bool = True  # the prompt cache's shared second level
    health: bool = True  # ejections published to and received from the other sidecars

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= 10:
            raise ValueError("fleet.timeout must be in (0, 10] seconds")
        if not self.retry_interval > 0:
            raise ValueError("fleet.retry_interval must be > 0 seconds")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.prefix):
            raise ValueError("fleet.prefix: 1-64 letters, digits, '_', '.', ':' or '-'")
