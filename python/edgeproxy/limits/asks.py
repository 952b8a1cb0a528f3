"""What one request asks of the counters, what they answer, and what is settled after.

A request's ``Admission`` holds every limit that applies to it at once (its key's, its team's,
its route's; or one candidate's provider limits): rates (RPM: one unit; TPM: the prompt's tokens
plus ``max_tokens``) and budgets (the worst-case USD). The counters admit all of them or none.
The ``Ticket`` they give back is settled once the request is over: the TPM reservation replaced
by the real tokens, the USD reservation by the real cost, the usage recorded for ``keys usage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgeproxy.snapshot.limits import Period


@dataclass(frozen=True, slots=True)
class RateAsk:
    """``cost`` units of a per-minute ``limit`` on the counter ``counter``."""

    counter: str  # e.g. "key:key_1a2b:rpm", "candidate:p/r/m:tpm"
    limit: int
    cost: int
    label: str  # in words, for the client's 429: "key 'ci' rpm 60"
    tokens: bool = False  # a TPM (settled on usage) rather than an RPM


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """``reserve`` USD of a ``limit`` per ``period`` (the period named ``period_id``)."""

    counter: str  # e.g. "key:key_1a2b" (the period is added by the counters)
    scope: str  # "key", "team" or "route": which usage rows the spend is the sum of
    name: str  # the key id, the team or the route
    limit: float
    reserve: float
    period: Period
    period_id: str  # "2025-06"
    period_start: float  # epoch seconds
    period_end: float  # epoch seconds: when the budget is whole again (Retry-After)
    label: str


@dataclass(frozen=True, slots=True)
class Admission:
    rates: tuple[RateAsk, ...] = ()
    budgets: tuple[BudgetAsk, ...] = ()
    # A reservation not settled in this long (its sidecar died mid-request) is released.
    hold: float = 900.0

    @property
    def empty(self) -> bool:
        return not self.rates and not self.budgets


@dataclass(frozen=True, slots=True)
class Verdict:
    """Admitted, or refused by ``hit`` (the first limit that had no room) for ``retry_after``."""

    admitted: bool
    hit: RateAsk | BudgetAsk | None = None
    retry_after: float = 0.0
    ticket: Ticket | None = None


@dataclass(slots=True)
class Ticket:
    """An admitted request's reservations, until it is settled (once)."""

    admission: Admission
    reservation: str  # the id its budget reservations are held under
    where: str  # "local" or "fleet": the counters that hold the reservation
    settled: bool = False


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one request spent on one model, for ``keys usage`` (rows of a day add up)."""

    day: str  # "2025-06-14" (UTC)
    key_id: str  # "" without a key
    team: str  # "" without a team
    route: str
    model: str  # the model (policy name) the tokens went to; "" when none answered
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """A ticket's real usage: tokens per TPM counter, the request's cost, its usage rows."""

    tokens: int  # input + output tokens of the request (all its attempts)
    usd: float
    rows: Sequence[UsageRow] = field(default_factory=tuple)


class Counters(Protocol):
    """Admits a request's limits all at once, and settles them after (one process, or Redis)."""

    async def admit(self, admission: Admission) -> Verdict: ...

    async def settle(self, ticket: Ticket, settlement: Settlement) -> None: ...
