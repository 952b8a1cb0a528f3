"""Circuit breaker transitions on a fake clock."""

from __future__ import annotations

import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.events import BreakerTransition
from edgeproxy.failure import FailureClass
from edgeproxy.resilience.breaker import Breaker, BreakerRegistry, Ejection
from edgeproxy.snapshot import BreakerSettings, Policy

FAIL = FailureClass.SERVER_ERROR


def make(clock: FakeClock, **overrides: object) -> Breaker:
    return Breaker("openai/east/gpt", BreakerSettings(**overrides), clock)  # type: ignore[arg-type]


def trip(breaker: Breaker) -> None:
    for _ in range(breaker.settings.consecutive_failures):
        breaker.record_failure(FAIL)
    assert breaker.state == "open"


def test_consecutive_failures_open_the_breaker() -> None:
    clock = FakeClock()
    b = make(clock, consecutive_failures=5)
    for _ in range(4):
        b.record_failure(FAIL)
    assert b.state == "closed" and b.allow()
    b.record_failure(FAIL)
    assert b.state == "open"
    assert not b.allow() and b.acquire() is None
    assert "5 consecutive failures" in b.reason


def test_a_success_resets_the_consecutive_count() -> None:
    b = make(FakeClock(), consecutive_failures=5)
    for _ in range(4):
        b.record_failure(FAIL)
    b.record_success()
    for _ in range(4):
        b.record_failure(FAIL)
    assert b.state == "closed"


def test_failure_ratio_opens_once_the_request_volume_is_reached() -> None:
    b = make(FakeClock(), consecutive_failures=100, failure_ratio=0.5, min_requests=20)
    for _ in range(9):
        b.record_success()
        b.record_failure(FAIL)
    b.record_success()  # 19 requests, 9 failures: below the volume
    assert b.state == "closed"
    b.record_failure(FAIL)  # 20 requests, 10 failures: 50 %
    assert b.state == "open"
    assert "10/20" in b.reason


def test_a_failure_ratio_below_the_threshold_stays_closed() -> None:
    b = make(FakeClock(), consecutive_failures=100, failure_ratio=0.5, min_requests=20)
    for _ in range(30):
        b.record_success()
        b.record_success()
        b.record_failure(FAIL)  # one in three
    assert b.state == "closed"


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    b = make(clock, consecutive_failures=100, failure_ratio=0.5, min_requests=4, window=30.0)
    b.record_failure(FAIL)
    b.record_success()
    clock.advance(31)
    b.record_failure(FAIL)
    b.record_success()  # 4 requests, 2 failures, but only 2 of them within the window
    assert b.state == "closed"
    b.record_failure(FAIL)
    b.record_failure(FAIL)  # now 4 in the window, 3 failed
    assert b.state == "open"


@pytest.mark.parametrize(
    "failure",
    [FailureClass.CLIENT_ERROR, FailureClass.CONTEXT_LENGTH, FailureClass.DEADLINE],
    ids=lambda f: str(f),
)
def test_failures_that_are_not_the_upstreams_fault_are_ignored(failure: FailureClass) -> None:
    b = make(FakeClock(), consecutive_failures=3, min_requests=1)
    for _ in range(10):
        b.record_failure(failure)
    assert b.state == "closed"
    assert b.snapshot()["window_requests"] == 0


def test_ejection_time_grows_with_consecutive_ejections_and_is_capped() -> None:
    clock = FakeClock()
    b = make(clock, base_ejection_time=30.0, max_ejection_time=100.0)
    trip(b)
    durations = []
    for _ in range(5):
        reopen_at = b.reopen_at
        assert reopen_at is not None
        durations.append(reopen_at - clock.monotonic())
        clock.advance(reopen_at - clock.monotonic() - 0.001)
        assert b.state == "open"  # not a moment early
        clock.advance(0.001)
        assert b.state == "half_open"
        permit = b.acquire()
        assert permit is not None and permit.trial
        permit.failure(FAIL)
        assert b.state == "open"
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]


def test_the_multiplier_resets_after_a_healthy_max_ejection_time() -> None:
    clock = FakeClock()
    b = make(clock, base_ejection_time=30.0, max_ejection_time=100.0)

    def trip_and_recover() -> float:
        trip(b)
        assert b.reopen_at is not None
        duration = b.reopen_at - clock.monotonic()
        clock.advance(duration)
        permit = b.acquire()
        assert permit is not None
        permit.success()
        assert b.state == "closed"
        return duration

    assert trip_and_recover() == 30.0
    clock.advance(10)  # flapping: closed only briefly
    assert trip_and_recover() == 60.0
    clock.advance(100)  # healthy for a whole max_ejection_time
    assert trip_and_recover() == 30.0


def test_half_open_admits_a_bounded_number_of_concurrent_trials() -> None:
    clock = FakeClock()
    b = make(clock, half_open_max_trials=2, base_ejection_time=30.0)
    trip(b)
    clock.advance(30)
    first, second = b.acquire(), b.acquire()
    assert first is not None and second is not None
    assert b.acquire() is None and not b.allow()
    first.release()  # e.g. the request was cancelled: the slot comes back
    first.release()  # idempotent: must not free a second slot
    assert b.allow()
    third = b.acquire()
    assert third is not None
    assert b.acquire() is None


def test_a_trial_that_fails_for_the_clients_fault_frees_its_slot_only() -> None:
    clock = FakeClock()
    b = make(clock, half_open_max_trials=1)
    trip(b)
    clock.advance(b.settings.base_ejection_time)
    permit = b.acquire()
    assert permit is not None
    permit.failure(FailureClass.CLIENT_ERROR)
    assert b.state == "half_open" and b.allow()


def test_a_successful_trial_closes_the_breaker() -> None:
    clock = FakeClock()
    b = make(clock)
    trip(b)
    clock.advance(b.settings.base_ejection_time)
    with b.acquire() as permit:  # type: ignore[union-attr]
        permit.success()
    assert b.state == "closed" and b.allow() and b.reason == ""
    assert b.snapshot()["consecutive_failures"] == 0


def test_a_stale_permit_from_before_the_trip_does_not_decide_half_open() -> None:
    clock = FakeClock()
    b = make(clock)
    stale = b.acquire()
    assert stale is not None
    trip(b)
    clock.advance(b.settings.base_ejection_time)
    assert b.state == "half_open"
    stale.success()
    assert b.state == "half_open"
    stale2 = make(clock)
    s2 = stale2.acquire()
    assert s2 is not None
    trip(stale2)
    clock.advance(stale2.settings.base_ejection_time)
    s2.failure(FAIL)
    assert stale2.state == "half_open"


def test_late_failures_while_open_do_not_extend_the_ejection() -> None:
    clock = FakeClock()
    b = make(clock)
    trip(b)
    reopen_at = b.reopen_at
    for _ in range(20):
        b.record_failure(FAIL)
    assert b.reopen_at == reopen_at


def test_a_quota_ejection_holds_the_breaker_open_and_probes_cannot_end_it() -> None:
    clock = FakeClock()
    b = make(clock)  # max_ejection_time 300 s: a quota ejection is not capped by it
    b.eject(3600, Ejection.QUOTA)
    assert b.state == "open" and b.reopen_at == clock.monotonic() + 3600
    b.probe_succeeded()
    assert b.state == "open"
    b.eject(5, Ejection.RETRY_AFTER)  # a shorter ejection does not shorten a longer one
    assert b.reopen_at == clock.monotonic() + 3600
    clock.advance(3600)
    assert b.state == "half_open"


def test_a_retry_after_ejection_is_capped_and_a_passing_probe_ends_it() -> None:
    clock = FakeClock()
    b = make(clock, max_ejection_time=300.0)
    b.eject(1e308, Ejection.RETRY_AFTER)  # what a hostile upstream says
    assert b.reopen_at == clock.monotonic() + 300
    b.probe_succeeded()  # the upstream answers again: trial traffic decides
    assert b.state == "half_open"
    b.eject(30, Ejection.RETRY_AFTER)
    assert b.reopen_at == clock.monotonic() + 30
    assert b.trips_total == 0  # the upstream named the time: no growing outlier ejection


@pytest.mark.parametrize("seconds", [float("nan"), float("-inf"), -5.0, 0.0])
def test_an_ejection_of_no_time_does_nothing(seconds: float) -> None:
    b = make(FakeClock())
    b.eject(seconds, Ejection.RETRY_AFTER)
    b.eject(seconds, Ejection.QUOTA)
    assert b.state == "closed"


def test_a_permit_carries_the_candidates_recent_failure_ratio() -> None:
    clock = FakeClock()
    b = make(clock, consecutive_failures=100)
    permit = b.acquire()
    assert permit is not None and permit.failure_ratio == 0.0  # no evidence: healthy
    b.record_failure(FAIL)
    for _ in range(3):
        b.record_success()
    permit = b.acquire()
    assert permit is not None and permit.failure_ratio == 0.25
    b.trip("down")
    clock.advance(b.settings.base_ejection_time)
    trial = b.acquire()
    assert trial is not None and trial.trial and trial.failure_ratio == 1.0


def test_a_probe_success_ends_an_outlier_ejection_early() -> None:
    clock = FakeClock()
    b = make(clock)
    trip(b)
    clock.advance(1)
    b.probe_succeeded()
    assert b.state == "half_open"
    assert b.reopen_at is None


def test_trip_is_a_growing_ejection_and_does_nothing_while_open() -> None:
    clock = FakeClock()
    b = make(clock, base_ejection_time=10.0)
    b.trip("probe failed")
    assert b.reopen_at == clock.monotonic() + 10
    b.trip("again")
    assert b.reopen_at == clock.monotonic() + 10 and b.reason == "probe failed"


def test_snapshot_reports_the_state_for_admin_status() -> None:
    clock = FakeClock()
    b = make(clock, base_ejection_time=30.0)
    trip(b)
    clock.advance(12)
    snap = b.snapshot()
    assert snap["key"] == "openai/east/gpt"
    assert snap["state"] == "open"
    assert snap["reopen_in_seconds"] == 18.0
    assert snap["ejections"] == 1 and snap["trips_total"] == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_ratio=0)
    with pytest.raises(ValueError):
        BreakerSettings(base_ejection_time=60, max_ejection_time=30)


def test_registry_carry_over_keeps_unchanged_candidates_only() -> None:
    clock = FakeClock()
    settings = {"a": BreakerSettings(), "b": BreakerSettings(), "c": BreakerSettings()}
    registry = BreakerRegistry(lambda key: settings[key], clock)
    for key in "abc":
        trip(registry.get(key))
    new = {
        "a": BreakerSettings(),  # equal settings
        "b": BreakerSettings(consecutive_failures=3),  # changed
        "d": BreakerSettings(),  # new candidate
    }
    result = registry.carry_over(["a", "b", "d"], lambda key: new[key])
    assert (result.kept, result.reset, result.added, result.dropped) == (
        ("a",),
        ("b",),
        ("d",),
        ("c",),
    )
    assert registry.get("a").state == "open"  # still down after the reload
    assert registry.get("b").state == "closed"
    assert registry.get("b").settings.consecutive_failures == 3
    assert "c" not in registry
    assert [s["key"] for s in registry.snapshot()] == ["a", "b", "d"]


def test_every_state_change_is_reported_to_the_registrys_listeners() -> None:
    clock = FakeClock()
    settings = BreakerSettings(consecutive_failures=2, base_ejection_time=10.0)
    registry = BreakerRegistry(lambda _key: settings, clock)
    seen: list[BreakerTransition] = []
    registry.on_transition(seen.append)
    b = registry.get("p/r/m")
    b.record_failure(FAIL)
    b.record_failure(FAIL)  # closed -> open
    clock.advance(10)
    assert b.state == "half_open"  # open -> half_open, when looked at
    trial = b.acquire()
    assert trial is not None
    trial.failure(FAIL)  # half_open -> open
    clock.advance(20)
    assert b.state == "half_open"
    trial = b.acquire()
    assert trial is not None
    trial.success()  # half_open -> closed
    b.eject(30, Ejection.RETRY_AFTER)  # closed -> open
    b.eject(60, Ejection.QUOTA)  # open -> open: a longer ejection
    b.probe_succeeded()  # held: no change
    b.trip("probe failed 2x")  # already open: no change
    assert [(t.key, t.old, t.new) for t in seen] == [
        ("p/r/m", "closed", "open"),
        ("p/r/m", "open", "half_open"),
        ("p/r/m", "half_open", "open"),
        ("p/r/m", "open", "half_open"),
        ("p/r/m", "half_open", "closed"),
        ("p/r/m", "closed", "open"),
        ("p/r/m", "open", "open"),
    ]
    assert "2 consecutive failures" in seen[0].reason
    assert seen[2].reason.startswith("half-open trial failed")
    assert (seen[5].reason, seen[6].reason) == ("Retry-After", "quota exhausted")


def test_probe_trips_and_breakers_made_by_a_reload_report_too() -> None:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    registry = BreakerRegistry(lambda _key: BreakerSettings(), clock, on_transition=[seen.append])
    registry.get("a").trip("health probe failed 2x: refused")
    registry.carry_over(["a", "b"], lambda _key: BreakerSettings(consecutive_failures=1))
    registry.get("b").record_failure(FAIL)  # a breaker made by the reload
    assert [(t.key, t.new, t.reason) for t in seen] == [
        ("a", "open", "health probe failed 2x: refused"),
        ("b", "open", "1 consecutive failures (last: server_error)"),
    ]


def test_a_listener_can_leave_and_a_failing_one_breaks_nothing() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(lambda _key: BreakerSettings(consecutive_failures=1), clock)
    seen: list[BreakerTransition] = []

    def broken(_transition: BreakerTransition) -> None:
        raise RuntimeError("a telemetry bug")

    registry.on_transition(broken)
    leave = registry.on_transition(seen.append)
    registry.get("a").record_failure(FAIL)
    assert registry.get("a").state == "open" and len(seen) == 1
    leave()
    registry.get("b").record_failure(FAIL)
    assert registry.get("b").state == "open" and len(seen) == 1


_RELOADED = """
version: 1
providers:
  p:
    kind: openai
    api_key: KEY
    regions: {one: {base_url: "BASE"}}
    models: {m: {upstream_name: UPSTREAM}}
routes:
  r: {chain: [p/one/m]}
"""


def _policy(
    base: str = "http://127.0.0.1:1/v1", upstream: str = "m-1", key: str = "sk-a"
) -> Policy:
    from edgeproxy.policy import load_policy_text

    text = _RELOADED.replace("BASE", base).replace("UPSTREAM", upstream).replace("KEY", key)
    return load_policy_text(text, "t.yaml", {})


@pytest.mark.parametrize(
    "fixed",
    [
        {"upstream": "m-2"},  # the retired model's successor
        {"base": "http://127.0.0.1:2/v1"},  # a wrong base URL corrected
        {"key": "sk-b"},  # a rotated provider key
    ],
    ids=["model", "base-url", "key"],
)
def test_a_reload_that_changes_a_candidates_upstream_gives_it_a_fresh_breaker(
    fixed: dict[str, str],
) -> None:
    from edgeproxy.resilience.engine import ResilienceEngine

    first = _policy()
    engine = ResilienceEngine(FakeClock(), first.engine, first)
    engine.breakers.get("p/one/m").eject(3600, Ejection.MODEL_NOT_FOUND)
    # The same upstream reloaded (a comment, another route): what the breaker knows still holds.
    kept = engine.policy_swapped(_policy())
    assert kept.kept == ("p/one/m",) and engine.breakers.get("p/one/m").state == "open"
    # The upstream changed under the same candidate key: the ejection was about the old one.
    swapped = engine.policy_swapped(_policy(**fixed))
    assert swapped.reset == ("p/one/m",) and engine.breakers.get("p/one/m").state == "closed"
