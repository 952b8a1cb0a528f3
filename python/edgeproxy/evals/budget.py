"""The eval's USD cap, checked before each call, and its request pacing.

Before a call the worst case it can cost is reserved: its prompt counted exactly (``count_chat``
with the candidate's tokenizer) at the input price, plus ``max_tokens`` at the output price. The
call may start only if what was spent, what is reserved by calls in flight and this worst case
stay within the cap; when it ends, the reservation is replaced by what it really cost. So
concurrent calls can never overrun the cap together, and a call that would is never sent.
"""

from __future__ import annotations

import math
from typing import Any

from edgeproxy.clock import Clock
from edgeproxy.cost import PER_TOKENS
from edgeproxy.snapshot import Candidate
from edgeproxy.tokens import TokenizerError, count_chat


def worst_case_usd(candidate: Candidate, body: dict[str, Any]) -> float:
    """The most ``body`` can cost on ``candidate`` (0 for a candidate without a price)."""
    price = candidate.price
    if price is None:
        return 0.0
    try:
        prompt = count_chat(body, candidate.tokenizer).tokens
    except TokenizerError:
        prompt = len(str(body.get("messages", ""))) // 2  # never under: 2 chars per token
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return (prompt * price.input + int(max_tokens) * price.output) / PER_TOKENS


class CostCap:
    """Spent and reserved USD against ``limit`` (None: no cap, still counted)."""

    def __init__(self, limit: float | None, spent: float = 0.0, judge_spent: float = 0.0) -> None:
        if limit is not None and not (limit >= 0 and math.isfinite(limit)):
            raise ValueError(f"the cost cap must be a finite number >= 0, got {limit!r}")
        self.limit = limit
        self.spent = spent  # candidate calls
        self.judge_spent = judge_spent  # judge calls, counted apart (same cap)
        self.reserved = 0.0
        self.refused = False  # a call was not sent because of the cap

    @property
    def total(self) -> float:
        return self.spent + self.judge_spent

    def reserve(self, worst: float) -> bool:
        """Reserve ``worst`` USD for a call about to start; False (and nothing reserved) when
        the cap does not allow it."""
        if self.limit is not None and self.total + self.reserved + worst > self.limit + 1e-12:
            self.refused = True
            return False
        self.reserved += worst
        return True

    def settle(self, worst: float, actual: float, *, judge: bool = False) -> None:
        """The call that reserved ``worst`` ended having cost ``actual``."""
        self.reserved = max(0.0, self.reserved - worst)
        if judge:
            self.judge_spent += actual
        else:
            self.spent += actual


class Pacer:
    """At most ``rps`` calls per second (None: no limit), spaced evenly on ``clock``."""

    def __init__(self, rps: float | None, clock: Clock) -> None:
        if rps is not None and not (rps > 0 and math.isfinite(rps)):
            raise ValueError(f"--rps must be a number > 0, got {rps!r}")
        self._interval = 1.0 / rps if rps else 0.0
        self._clock = clock
        self._next = -math.inf

    async def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._clock.sleep(slot - now)
