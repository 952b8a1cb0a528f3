"""Circuit breakers per candidate ("provider/region/model"), after Envoy's outlier detection.

closed ──(N consecutive failures, or failure ratio over a window)──▶ open
open ──(ejection time passed, or a health probe succeeded)──▶ half_open
half_open ──(a trial succeeds)──▶ closed;  ──(a trial fails)──▶ open, for longer

An ejection lasts ``base_ejection_time * consecutive ejections``, capped at ``max_ejection_time``,
so a candidate that keeps failing is tried less and less often. The multiplier resets once the
candidate has stayed closed for ``max_ejection_time``.

An upstream can also name the time itself (``eject``): a ``Retry-After`` on a 429 opens the
breaker for that long, capped at ``max_ejection_time``, and a passing health probe ends it early
(the upstream's own word is a hint, not a sentence: a hostile ``Retry-After: 1e308`` must not
take a candidate out for good). An exhausted quota is held instead: ``/models`` answers fine on an
account without credit, so only the ejection's end (``quota_ejection_time``) lets trials back in.
A model the upstream does not serve (``model_not_found``) is held the same way, for the same
time: ``/models`` answers fine after a model is retired. A key the upstream refuses
(``auth_rejected``) is out for that long too, but a passing probe ends it early: the probe sends
the same key, so it passes only once the key works again (``wires.common.probe_verdict``). Both
log one ERROR line when they start (never the key: the candidate and what to fix).

Every state change is reported as a ``BreakerTransition`` to the callbacks registered with
``BreakerRegistry.on_transition`` (telemetry counts them); a transition from ``open`` to
``open`` is an ejection that lengthened an open breaker's.

A permit carries the candidate's recent failure ratio (failures over outcomes in the breaker's
window, as it stood when the permit was taken; 1.0 for a half-open trial): the retry budget asks
it whether failing over to this candidate is free (``budget.RetryBudget.try_attempt``).

Why not pybreaker: see docs/failover.md ("Why not pybreaker"). In short, it reads wall-clock
``datetime.now``, serialises calls with a thread lock around a synchronous ``call(func)``, has no
ratio trigger, no growing ejection and no bound on half-open trials.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

from edgeproxy.clock import Clock
from edgeproxy.events import BreakerState, BreakerTransition, TransitionListener
from edgeproxy.failure import FailureClass
from edgeproxy.resilience.budget import WindowCounter
from edgeproxy.snapshot.settings import BreakerSettings

log = logging.getLogger("edgeproxy.resilience")


class Ejection(enum.StrEnum):
    """The reasons an upstream names an ejection's length itself (``Breaker.eject``)."""

    # Capped at ``max_ejection_time``; a passing health probe ends it early.
    RETRY_AFTER = "Retry-After"
    # Held for its whole length (``quota_ejection_time``): a probe cannot see a quota.
    QUOTA = "quota exhausted"
    # ``quota_ejection_time`` too; held: a probe cannot see whether a model is served.
    MODEL_NOT_FOUND = "model not found (retired or renamed?)"
    # ``quota_ejection_time``, not capped; a passing probe (it sends the same key) ends it.
    AUTH_REJECTED = "the provider rejected the proxy's key"


# Ejections a passing health probe may end early; any other reason is held for its length.
_PROBE_ENDS: frozenset[str] = frozenset({Ejection.RETRY_AFTER, Ejection.AUTH_REJECTED})
# The proxy's own configuration is wrong: said once per ejection, at ERROR (never the key).
_MISCONFIGURED: dict[str, str] = {
    Ejection.AUTH_REJECTED: "provider rejected the proxy's key for %s: ejected for %gs",
    Ejection.MODEL_NOT_FOUND: "model not found at %s (retired or renamed?): ejected for %gs",
}


class Permit:
    """The right to send one attempt. Record its outcome once; ``release()`` (or leaving a ``with``
    block) without an outcome frees a half-open trial slot, e.g. when the request was cancelled."""

    __slots__ = ("_breaker", "_done", "failure_ratio", "trial")

    def __init__(self, breaker: Breaker, trial: bool) -> None:
        self._breaker = breaker
        self.trial = trial  # taken in half_open: its outcome decides the breaker's state
        # The candidate's recent failures / outcomes when the permit was taken (a trial's
        # candidate was failing until it proves otherwise).
        self.failure_ratio = 1.0 if trial else breaker.failure_ratio()
        self._done = False

    # A permit taken while closed only counts while the breaker is still closed: a request sent
    # before a trip that ends after the ejection is stale evidence, and must neither close a
    # half-open breaker nor re-open it. Only trial permits decide half-open.

    def success(self) -> None:
        if self._settle() and self._counts():
            self._breaker.record_success()

    def failure(self, failure: FailureClass) -> None:
        if self._settle() and self._counts():
            self._breaker.record_failure(failure)

    def _counts(self) -> bool:
        return self.trial or self._breaker.state == "closed"

    def release(self) -> None:
        self._settle()

    def _settle(self) -> bool:
        if self._done:
            return False
        self._done = True
        if self.trial:
            self._breaker._trials -= 1
        return True

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Breaker:
    def __init__(
        self,
        key: str,
        settings: BreakerSettings,
        clock: Clock,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self.key = key
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._requests = WindowCounter(settings.window, clock)
        self._failures = WindowCounter(settings.window, clock)
        self._ejections = 0  # consecutive ejections: the multiplier of base_ejection_time
        self._opened_at: float | None = None
        self._reopen_at: float | None = None
        self._held = False  # opened by eject(): a health probe must not end it early
        self._closed_at = clock.monotonic()
        self._trials = 0  # half-open trials in flight
        self.reason = ""
        self.trips_total = 0

    # -- reading ------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        # Open → half_open happens when it is looked at; no timer task needed.
        if (
            self._state == "open"
            and self._reopen_at is not None
            and self._clock.monotonic() >= self._reopen_at
        ):
            self._to_half_open()
        return self._state

    @property
    def held(self) -> bool:
        """Open by an ejection a health probe may not end early (``eject``)."""
        return self._held and self.state == "open"

    @property
    def reopen_at(self) -> float | None:
        """Clock time when an open breaker admits trials again; None unless open."""
        return self._reopen_at if self.state == "open" else None

    def failure_ratio(self) -> float:
        """Failures over outcomes in the window (0 without any): how much the candidate fails
        now. Counted while closed only; the window starts afresh when the breaker closes."""
        requests = self._requests.total()
        return self._failures.total() / requests if requests else 0.0

    def allow(self) -> bool:
        """Would ``acquire()`` admit an attempt now? Takes nothing (for filtering a chain)."""
        state = self.state
        return state == "closed" or (
            state == "half_open" and self._trials < self.settings.half_open_max_trials
        )

    def acquire(self) -> Permit | None:
        """A permit to send one attempt, or None while open or while half-open trials are full."""
        state = self.state
        if state == "closed":
            return Permit(self, trial=False)
        if state == "half_open" and self._trials < self.settings.half_open_max_trials:
            self._trials += 1
            return Permit(self, trial=True)
        return None

    # -- outcomes -----------------------------------------------------------------------------

    def record_success(self) -> None:
        state = self.state
        if state == "half_open":
            self._close()
        elif state == "closed":
            self._consecutive = 0
            self._requests.add()
        # open: a request admitted before the trip finished late; it proves nothing now.

    def record_failure(self, failure: FailureClass) -> None:
        if failure in self.settings.not_counted:
            return
        state = self.state
        if state == "half_open":
            self._trip(f"half-open trial failed ({failure})")
        elif state == "closed":
            self._consecutive += 1
            self._requests.add()
            self._failures.add()
            self._check_thresholds(failure)
        # open: late failures of requests sent before the trip must not extend the ejection.

    def _check_thresholds(self, failure: FailureClass) -> None:
        s = self.settings
        if self._consecutive >= s.consecutive_failures:
            self._trip(f"{self._consecutive} consecutive failures (last: {failure})")
            return
        requests = self._requests.total()
        if requests >= s.min_requests:
            failures = self._failures.total()
            if failures >= s.failure_ratio * requests:
                self._trip(
                    f"{failures}/{requests} requests failed in {s.window:g}s (last: {failure})"
                )

    # -- forced transitions -------------------------------------------------------------------

    def trip(self, reason: str) -> None:
        """Eject as an outlier (growing ejection time), e.g. after failed health probes."""
        if self.state != "open":
            self._trip(reason)

    def eject(self, seconds: float, reason: str, *, held: bool | None = None) -> None:
        """Open for at least ``seconds``, whatever the state: the upstream said how long.

        Unlike a trip, it does not grow the ejection multiplier. ``Ejection.RETRY_AFTER`` is
        capped at ``max_ejection_time`` and a passing health probe ends it early;
        ``Ejection.AUTH_REJECTED`` is not capped, and a passing probe ends it early; any other
        reason (``Ejection.QUOTA``, ``Ejection.MODEL_NOT_FOUND``) is held: a probe does not end
        it (/models answers fine on an account whose quota is exhausted, or after a model is
        retired). ``held`` says so explicitly (another sidecar's ejection, received through the
        fleet, keeps its own: docs/fleet.md).
        """
        if not seconds > 0:  # also NaN: nothing to eject for
            return
        if held is None:
            held = reason not in _PROBE_ENDS
        if not held and reason != Ejection.AUTH_REJECTED:
            seconds = min(seconds, self.settings.max_ejection_time)
        state = self.state
        if state == "open" and reason in _MISCONFIGURED and self.reason == reason:
            return  # the same ejection, met again by a request that was already in flight
        now = self._clock.monotonic()
        until = now + seconds
        if state == "open" and self._reopen_at is not None and self._reopen_at >= until:
            return  # already out for longer
        self._open(now, until, reason, held=held)
        message = _MISCONFIGURED.get(reason)
        if message is not None:
            log.error(message, self.key, seconds, extra={"candidate": self.key})

    def probe_succeeded(self) -> None:
        """A health probe passed: an outlier ejection may end now (trial traffic decides)."""
        if self.state == "open" and not self._held:
            self._to_half_open()

    # -- internals ----------------------------------------------------------------------------

    def _trip(self, reason: str) -> None:
        s = self.settings
        now = self._clock.monotonic()
        if self._state == "closed" and now - self._closed_at >= s.max_ejection_time:
            self._ejections = 0  # healthy for a whole max ejection: start over at the base time
        self._ejections += 1
        self.trips_total += 1
        duration = min(s.base_ejection_time * self._ejections, s.max_ejection_time)
        self._open(now, now + duration, reason, held=False)

    def _open(self, now: float, until: float, reason: str, *, held: bool) -> None:
        old = self._state
        self._state = "open"
        self._opened_at = now
        self._reopen_at = until
        self._held = held
        self.reason = reason
        self._consecutive = 0
        self._requests.clear()
        self._failures.clear()
        # Trials still in flight keep their permits; they settle against the open state.
        self._emit(old, "open", reason)

    def _to_half_open(self) -> None:
        self._state = "half_open"
        self._reopen_at = None
        self._held = False
        self._emit("open", "half_open", self.reason)

    def _close(self) -> None:
        old = self._state
        self._state = "closed"
        self._closed_at = self._clock.monotonic()
        self._opened_at = self._reopen_at = None
        self._consecutive = 0
        self._requests.clear()
        self._failures.clear()
        self.reason = ""
        self._emit(old, "closed", "half-open trial succeeded")

    def _emit(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        if self._on_transition is not None:
            self._on_transition(BreakerTransition(self.key, old, new, reason))

    def snapshot(self) -> dict[str, object]:
        state = self.state
        now = self._clock.monotonic()
        return {
            "key": self.key,
            "state": state,
            "reason": self.reason,
            "reopen_in_seconds": (
                round(self._reopen_at - now, 3)
                if state == "open" and self._reopen_at is not None
                else None
            ),
            "consecutive_failures": self._consecutive,
            "window_requests": self._requests.total(),
            "window_failures": self._failures.total(),
            "ejections": self._ejections,
            "trips_total": self.trips_total,
            "half_open_trials": self._trials,
        }


@dataclass(frozen=True, slots=True)
class CarryOver:
    kept: tuple[str, ...]  # same key, same settings: state kept
    reset: tuple[str, ...]  # same key, new settings: a fresh closed breaker
    added: tuple[str, ...]
    dropped: tuple[str, ...]  # no longer in the policy


class BreakerRegistry:
    """One breaker per candidate key; created on first use. Every breaker's state changes go to
    the callbacks given to ``on_transition``."""

    def __init__(
        self,
        settings_for_key: Callable[[str], BreakerSettings],
        clock: Clock,
        on_transition: Iterable[TransitionListener] = (),
    ) -> None:
        self._settings_for_key = settings_for_key
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._listeners: list[TransitionListener] = list(on_transition)

    def on_transition(self, listener: TransitionListener) -> Callable[[], None]:
        """Call ``listener`` with every ``BreakerTransition`` from now on; returns the function
        that unsubscribes it. A listener runs inline on the event loop: it must be quick."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, transition: BreakerTransition) -> None:
        for listener in list(self._listeners):
            try:
                listener(transition)
            except Exception as exc:  # a listener's bug must not break a breaker mid-change
                log.warning(
                    "breaker transition listener failed",
                    extra={"candidate": transition.key, "error": type(exc).__name__},
                )

    def _new(self, key: str, settings: BreakerSettings) -> Breaker:
        return Breaker(key, settings, self._clock, self._emit)

    def get(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._new(key, self._settings_for_key(key))
            self._breakers[key] = breaker
        return breaker

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def __iter__(self) -> Iterator[Breaker]:
        return iter(list(self._breakers.values()))

    def carry_over(
        self,
        keys: Iterable[str],
        settings_for_key: Callable[[str], BreakerSettings] | None = None,
        changed: Collection[str] = (),
    ) -> CarryOver:
        """After a policy reload: keep the state of candidates that still exist with the same
        settings (an upstream that was down is still down), start the others fresh, drop the
        rest. ``settings_for_key`` replaces the lookup when the new policy brings its own;
        ``changed``: keys whose upstream the policy changed (a URL, the model sent, the key), so
        what the breaker learned is about another upstream: they start fresh."""
        if settings_for_key is not None:
            self._settings_for_key = settings_for_key
        kept: list[str] = []
        reset: list[str] = []
        added: list[str] = []
        fresh: dict[str, Breaker] = {}
        for key in dict.fromkeys(keys):
            settings = self._settings_for_key(key)
            old = self._breakers.get(key)
            if old is not None and old.settings == settings and key not in changed:
                fresh[key] = old
                kept.append(key)
            else:
                fresh[key] = self._new(key, settings)
                (reset if old is not None else added).append(key)
        dropped = tuple(k for k in self._breakers if k not in fresh)
        self._breakers = fresh
        return CarryOver(tuple(kept), tuple(reset), tuple(added), dropped)

    def snapshot(self) -> list[dict[str, object]]:
        return [b.snapshot() for b in self._breakers.values()]
