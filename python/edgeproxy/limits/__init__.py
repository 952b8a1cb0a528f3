"""Limits and budgets (docs/keys.md): what a request asks of the counters, and the counters of
one process. The fleet's shared counters on Redis (``edgeproxy.fleet.counters``) keep the same
rules in Lua; ``LocalCounters`` here is what a single sidecar uses, and what a fleet sidecar
falls back to while Redis is away.
"""

from edgeproxy.limits.asks import (
    Admission,
    BudgetAsk,
    Counters,
    RateAsk,
    Settlement,
    Ticket,
    UsageRow,
    Verdict,
)
from edgeproxy.limits.local import LocalCounters, SpentLoader
from edgeproxy.limits.periods import period_bounds

__all__ = [
    "Admission",
    "BudgetAsk",
    "Counters",
    "LocalCounters",
    "RateAsk",
    "Settlement",
    "SpentLoader",
    "Ticket",
    "UsageRow",
    "Verdict",
    "period_bounds",
]
