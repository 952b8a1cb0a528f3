"""Backoff between attempts, and the decision after a failed one.

Delays use "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): a uniform draw
in ``[0, min(cap, base * 2^n)]``. Spreading retries over the whole interval de-synchronises
clients that failed together, which a fixed or "equal jitter" delay does not. An upstream's
``Retry-After`` is a floor: waiting less only earns another 429.

After a failed attempt, ``decide`` says what the attempt loop does next. Failing over to another
candidate needs no wait (it is a different upstream), so it comes before retrying the same one;
waiting on the same candidate is for when nothing else is left and the wait fits the deadline.

The retry budget is asked here only for a retry of the same candidate, which always spends from
it. Whether a failover spends depends on the candidate it lands on (free onto a healthy one, see
``budget``), so the attempt loop asks the budget when it admits that candidate, not here.

``Retry-After`` (parsed by ``failure.parse_retry_after``: finite, at most a day) is a floor of the
wait, and waits are clamped by ``max_retry_after``: a longer one is not waited out at all (the
request gives up on that candidate), so no upstream can hold a request longer than that.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from edgeproxy.failure import FailureClass
from edgeproxy.snapshot.settings import BackoffSettings

# Worth another try on the same candidate after a pause: the upstream said "not now" or the
# connection broke. Timeouts are not here: a candidate that just spent first_token seconds silent
# would spend the rest of the deadline the same way. CLIENT_ERROR and MALFORMED repeat themselves,
# and so do QUOTA_EXHAUSTED, AUTH_REJECTED and MODEL_NOT_FOUND (none fixes itself in milliseconds).
RETRY_SAME: frozenset[FailureClass] = frozenset(
    {
        FailureClass.RATE_LIMITED,
        FailureClass.SERVER_ERROR,
        FailureClass.RESET,
        FailureClass.CONNECT_ERROR,
        FailureClass.CONNECT_TIMEOUT,
        FailureClass.CUT,
    }
)


class Backoff:
    """Full-jitter delays. Pass a seeded ``random.Random`` for reproducible tests and sims."""

    def __init__(self, settings: BackoffSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng if rng is not None else random.Random()

    def ceiling(self, retry: int) -> float:
        """The largest jittered wait before retry ``retry`` (0 = the first retry)."""
        # min() on the exponent first: 2**retry for a large retry would overflow a float.
        return min(self.settings.cap, self.settings.base * 2.0 ** min(retry, 64))

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        jittered = self._rng.uniform(0.0, self.ceiling(retry))
        if retry_after is not None and retry_after > jittered:
            return retry_after
        return jittered


class Action(enum.StrEnum):
    RETRY_SAME = "retry_same"  # wait ``delay`` seconds, then the same candidate again
    FAIL_OVER = "fail_over"  # the next available candidate, now
    GIVE_UP = "give_up"  # answer the client with what we have


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float  # seconds to wait first; 0 unless RETRY_SAME
    reason: str  # for the access log and the attempt span


def decide(
    failure: FailureClass,
    *,
    retry_after: float | None,
    retries_on_candidate: int,
    next_candidate: bool,
    attempts_left: int,
    remaining: float,
    budget_allows: bool,
    backoff: Backoff,
) -> Decision:
    """What to do after a failed attempt.

    ``retries_on_candidate``: retries already spent on the failed candidate. ``next_candidate``:
    another candidate of the chain is still to be tried. ``attempts_left``: the request's attempt
    cap minus attempts made. ``remaining``: seconds left on the deadline. ``budget_allows``: the
    retry budget's ``can_retry()``, asked only before a retry of the same candidate.
    """
    s = backoff.settings
    if failure is FailureClass.CLIENT_ERROR:
        return Decision(Action.GIVE_UP, 0.0, "the request itself was rejected")
    if failure is FailureClass.DEADLINE or remaining < s.min_attempt_time:
        return Decision(Action.GIVE_UP, 0.0, "the request deadline is (almost) spent")
    if attempts_left <= 0:
        return Decision(Action.GIVE_UP, 0.0, "the attempt cap is reached")
    if next_candidate:
        return Decision(Action.FAIL_OVER, 0.0, f"{failure}: next candidate")
    if failure not in RETRY_SAME:
        return Decision(Action.GIVE_UP, 0.0, f"{failure} is not retried on the same candidate")
    if retries_on_candidate >= s.max_retries_per_candidate:
        return Decision(Action.GIVE_UP, 0.0, "no candidate left to try")
    if not budget_allows:
        return Decision(Action.GIVE_UP, 0.0, "the retry budget is exhausted")
    if retry_after is not None and not retry_after <= s.max_retry_after:  # NaN too
        return Decision(Action.GIVE_UP, 0.0, f"Retry-After {retry_after:g}s is too long to wait")
    delay = backoff.delay(retries_on_candidate, retry_after)
    if delay + s.min_attempt_time > remaining:
        return Decision(Action.GIVE_UP, 0.0, f"a {delay:.3g}s wait does not fit the deadline")
    return Decision(Action.RETRY_SAME, delay, f"{failure}: same candidate after {delay:.3g}s")
