"""The generic cell rate algorithm (GCRA) over one minute, as pure functions on a TAT.

A limit of N per minute allows a burst of N at once, then one unit every 60/N seconds (a token
bucket of N that refills in a minute, held as one number: the theoretical arrival time, TAT). A
request of ``cost`` units (1 for RPM; tokens for TPM) is admitted when, after it, the TAT is at
most one minute ahead of now. Units given back (a reservation larger than the real usage) move
the TAT back; units used beyond a reservation move it forward without a check (the call was
already made). ``fleet/scripts.py`` holds the same rules in Lua, on Redis's clock.
"""

from __future__ import annotations

WINDOW = 60.0  # seconds: the limits are per minute
# Floating-point slack: N requests of 60/N seconds each must all fit in the minute.
EPSILON = 1e-6


def interval(limit: int) -> float:
    """Seconds one unit occupies."""
    return WINDOW / limit


def take(tat: float, now: float, limit: int, cost: int) -> tuple[bool, float, float]:
    """(admitted, the new TAT, seconds until it would be admitted when refused)."""
    new_tat = max(tat, now) + cost * interval(limit)
    ahead = new_tat - now - WINDOW
    if ahead <= EPSILON:
        return True, new_tat, 0.0
    # A cost above the whole limit never fits: the caller reports the minute as the wait.
    return False, tat, ahead if cost <= limit else WINDOW


def adjust(tat: float, now: float, limit: int, units: int) -> float:
    """The TAT after ``units`` more (positive: used beyond the reservation) or fewer
    (negative: given back); it never moves behind now."""
    return max(tat + units * interval(limit), now) if units < 0 else tat + units * interval(limit)
