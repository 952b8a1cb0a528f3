"""The auto route's evidence and switching rule on synthetic scorecards (docs/auto.md).

What it attacks: a candidate without eval data or under the floor being chosen, noise flapping
traffic (margin, intervals, confirmations pooled), a floor breach kept by hysteresis or a noisy
dip evicting a good incumbent, fallbacks on one provider, the ramp's steps and its rollbacks on
the fake clock.
"""

from __future__ import annotations

import random

import pytest

from autokit import card, cell, evidence, noisy_card, ref
from edgeproxy.auto.decide import Kind, Streak, TaskState, switching_rule
from edgeproxy.auto.evidence import fallback_order, read
from edgeproxy.auto.ramp import Graded
from edgeproxy.clock import FakeClock
from edgeproxy.evals.objective import OBJECTIVES
from edgeproxy.snapshot import (
    OPTIMIZE,
    AutoObjective,
    AutoSettings,
    RampSettings,
    RollbackSettings,
)

FLOOR = AutoObjective(min_quality=0.85)


def test_the_snapshot_objectives_are_the_eval_objectives() -> None:
    assert OPTIMIZE == OBJECTIVES


# -- evidence ---------------------------------------------------------------------------------


def test_only_measured_candidates_over_the_floor_with_enough_samples_rank() -> None:
    scorecard = card(
        [
            cell("a/r/cheap-bad", successes=18, cost=1e-6),  # 60 %: under the floor
            cell("b/r/good", successes=29, cost=1e-5),
            cell("c/r/pricey", successes=30, cost=9e-5),
            cell("d/r/few", successes=10, graded=10, cost=1e-7),  # too few samples
            cell("e/r/other-task", task="writing", cost=1e-9),
        ]
    )
    ev = evidence(
        scorecard, objective=FLOOR, pool=[*(c.candidate for c in scorecard.cells), "x/r/unmeasured"]
    )
    assert [s.candidate for s in ev.ranked] == ["b/r/good", "c/r/pricey"]
    reasons = {s.candidate: s.why_not for s in ev.others}
    assert reasons["a/r/cheap-bad"] == "quality 0.600 < min_quality 0.85"
    assert reasons["d/r/few"] == "10 graded requests < min_samples 30"
    assert ev.standing("x/r/unmeasured") is None and ev.standing("e/r/other-task") is None
    # Candidates outside the pool are not read at all; a card without the task gives nothing.
    assert read(scorecard, ref(scorecard), "qa", ["z/r/z"], FLOOR, 30) is None


def test_the_floor_on_the_lower_bound_is_stricter() -> None:
    scorecard = card([cell("a/r/m", successes=27), cell("b/r/m", successes=30, cost=2e-5)])
    mean = evidence(scorecard, objective=FLOOR)
    low = evidence(scorecard, objective=AutoObjective(min_quality=0.85, floor_on="lower_bound"))
    assert [s.candidate for s in mean.ranked] == ["a/r/m", "b/r/m"]
    assert [s.candidate for s in low.ranked] == ["b/r/m"]  # 27/30 reaches down to 74 %
    assert "quality lower bound 0.744" in str(low.standing("a/r/m").why_not)  # type: ignore[union-attr]


def test_latency_limits_and_other_objectives() -> None:
    scorecard = card(
        [
            cell("a/r/fast", cost=3e-5, latency=0.1),
            cell("b/r/slow", cost=1e-5, latency=2.0),
        ]
    )
    limited = evidence(scorecard, objective=AutoObjective(max_latency_p95=1.0))
    assert [s.candidate for s in limited.ranked] == ["a/r/fast"]
    assert limited.others[0].why_not == "latency p95 2.600s > 1s"
    assert evidence(scorecard).leader.candidate == "b/r/slow"  # type: ignore[union-attr]
    fastest = evidence(scorecard, objective=AutoObjective(optimize="latency"))
    assert fastest.leader.candidate == "a/r/fast"  # type: ignore[union-attr]


def test_fallbacks_prefer_other_providers() -> None:
    ranked = ["p/r1/m", "p/r2/m", "q/r/m", "p/r3/m", "s/r/m"]
    provider = lambda k: k.split("/")[0]  # noqa: E731
    assert fallback_order(["p/r1/m"], ranked, provider, 2) == ["q/r/m", "s/r/m"]
    assert fallback_order(["p/r1/m"], ranked, provider, 4) == ["q/r/m", "s/r/m", "p/r2/m", "p/r3/m"]
    assert fallback_order(["q/r/m", "p/r1/m"], ranked, provider, 2) == ["s/r/m", "p/r2/m"]
    assert fallback_order(["p/r1/m"], ranked, provider, 0) == []


# -- the switching rule -----------------------------------------------------------------------


def _rule(ev: object, incumbent: str | None, streak: Streak | None = None) -> tuple[Kind, Streak]:
    verdict, after = switching_rule(ev, incumbent, streak or Streak(), 0.05, 3)  # type: ignore[arg-type]
    return verdict.kind, after


def test_a_challenger_needs_the_margin_and_intervals_apart() -> None:
    inc = "a/r/inc"
    # 3 % cheaper: not the margin.
    close = evidence(card([cell(inc, cost=1.00e-5), cell("b/r/ch", cost=0.97e-5)]))
    assert _rule(close, inc)[0] is Kind.HOLD
    # 16 % cheaper per success but the intervals overlap: hold, one confirmation.
    near = evidence(
        card([cell(inc, successes=27, cost=1e-5), cell("b/r/ch", successes=29, cost=0.9e-5)])
    )
    kind, streak = _rule(near, inc)
    assert kind is Kind.HOLD and streak.count == 1
    # Twice as cheap with tight intervals: switch at once.
    far = evidence(
        card([cell(inc, successes=30, cost=2e-5), cell("b/r/ch", successes=30, cost=1e-5)])
    )
    assert _rule(far, inc)[0] is Kind.SWITCH
    # The incumbent still leads.
    assert _rule(evidence(card([cell(inc, cost=1e-6), cell("b/r/ch")])), inc)[0] is Kind.KEEP


def test_confirmations_pool_the_consecutive_scorecards() -> None:
    inc, ch = "a/r/inc", "b/r/ch"
    streak = Streak()
    kinds = []
    for day in range(3):  # the same 20 % lead, intervals overlapping in each alone
        ev = evidence(
            card([cell(inc, successes=26, cost=1e-5), cell(ch, successes=29, cost=0.95e-5)], day)
        )
        verdict, streak = switching_rule(ev, inc, streak, 0.05, 3)
        kinds.append(verdict.kind)
    assert kinds == [Kind.HOLD, Kind.HOLD, Kind.SWITCH]
    assert "pooled" in verdict.reason
    # Another leader in between breaks the streak.
    streak = Streak()
    for day, leader in enumerate((ch, "c/r/other", ch)):
        cells = [
            cell(inc, successes=26, cost=1e-5),
            cell(ch, successes=27, cost=1e-5),
            cell("c/r/other", successes=27, cost=1e-5),
        ]
        cells = [
            c if c.candidate != leader else cell(leader, successes=29, cost=0.95e-5) for c in cells
        ]
        verdict, streak = switching_rule(evidence(card(cells, day)), inc, streak, 0.05, 3)
    assert verdict.kind is Kind.HOLD and streak.count == 1


def test_noise_never_flaps_traffic() -> None:
    """A market like the simulated one: the winner 25 % ahead of the runner-up in truth, a cheap
    model under the floor, a pricey good one. 300 noisy evals of 60 samples a task never move
    traffic off the true winner (nor ramp anyone)."""
    rng = random.Random(20250101)
    truth = {
        "a/r/best": (0.94, 1.0e-5),
        "b/r/runner-up": (0.92, 1.3e-5),
        "c/r/pricey": (0.96, 5e-5),
        "d/r/cheap-weak": (0.6, 0.5e-5),
        "e/r/other": (0.88, 1.5e-5),
    }
    state = TaskState("r", "qa", AutoSettings(objective=FLOOR))
    kinds = []
    for day in range(300):
        ev = evidence(noisy_card(truth, rng, day, n=60), objective=FLOOR)
        kinds.append(state.observe(ev, float(day), 0.0, live=True).kind)
    assert kinds[0] is Kind.FIRST
    moves = [k for k in kinds if k not in (Kind.KEEP, Kind.HOLD)][1:]
    assert moves == [], moves
    assert state.incumbent == "a/r/best" and state.ramp is None


def test_equal_candidates_rarely_trade_places() -> None:
    """Two candidates equal in truth at n=30: a 95 % interval apart by chance now and then (the
    rule's false-switch rate); it stays well under 1 % of scorecards, and traffic only ever
    moves between the two equals."""
    rng = random.Random(5)
    truth = {"a/r/twin": (0.9, 1e-5), "b/r/twin": (0.9, 1e-5), "c/r/pricey": (0.95, 5e-5)}
    floor = AutoObjective(min_quality=0.8)  # well under the twins: the floor plays no part
    state = TaskState("r", "qa", AutoSettings(objective=floor, ramp=RampSettings(steps=())))
    switches = 0
    for day in range(2000):
        ev = evidence(noisy_card(truth, rng, day), objective=floor)
        decision = state.observe(ev, 0, 0, live=True)
        switches += decision.kind in (Kind.SWITCH, Kind.REPLACE)
        assert state.incumbent in ("a/r/twin", "b/r/twin")
    assert switches / 2000 < 0.01


def test_a_clearly_better_challenger_wins_through_noise() -> None:
    rng = random.Random(7)
    truth = {"a/r/inc": (0.9, 1.3e-5), "b/r/ch": (0.92, 1e-5)}  # ~33 % cheaper per success
    state = TaskState("r", "qa", AutoSettings(objective=FLOOR, ramp=RampSettings(steps=())))
    state.observe(evidence(card([cell("a/r/inc", cost=1e-6), cell("b/r/ch")])), 0, 0, live=True)
    assert state.incumbent == "a/r/inc"
    for day in range(1, 10):
        state.observe(evidence(noisy_card(truth, rng, day), objective=FLOOR), day, 0, live=True)
        if state.incumbent == "b/r/ch":
            break
    assert state.incumbent == "b/r/ch" and day <= 4


def test_the_floor_has_hysteresis_but_a_clear_breach_goes_at_once() -> None:
    inc, other = "a/r/inc", "b/r/other"
    state = TaskState("r", "qa", AutoSettings(objective=FLOOR, ramp=RampSettings(steps=())))
    state.observe(
        evidence(
            card([cell(inc, successes=29), cell(other, successes=29, cost=3e-5)]), objective=FLOOR
        ),
        0,
        0,
        live=True,
    )
    assert state.incumbent == inc
    # A noisy dip to 24/30 (80 %): under the floor, but its interval reaches 90 %: kept.
    dip = card([cell(inc, successes=24), cell(other, successes=29, cost=3e-5)], 1)
    assert state.observe(evidence(dip, objective=FLOOR), 1, 0, live=True).kind is Kind.HOLD
    assert state.incumbent == inc
    # Degraded for real: 15/30 is wholly under the floor: replaced at once.
    bad = card([cell(inc, successes=15), cell(other, successes=29, cost=3e-5)], 2)
    decision = state.observe(evidence(bad, objective=FLOOR), 2, 0, live=True)
    assert decision.kind is Kind.REPLACE and state.incumbent == other
    assert "wholly under the floor" in decision.reason
    # Three dips in a row evict too; with nobody else eligible nothing serves (the route's chain).
    state = TaskState("r", "qa", AutoSettings(objective=FLOOR))
    state.observe(evidence(card([cell(inc, successes=29)]), objective=FLOOR), 0, 0, live=True)
    kinds = [
        state.observe(
            evidence(card([cell(inc, successes=24)], d), objective=FLOOR), d, 0, live=True
        ).kind
        for d in (1, 2, 3)
    ]
    assert kinds == [Kind.HOLD, Kind.HOLD, Kind.NONE] and state.incumbent is None


def test_a_lucky_eval_does_not_admit_a_model_under_the_floor() -> None:
    """Admission pools a candidate's last scorecards: a 78 % model that measures 87 % once is
    not let in after measuring 73 % and 77 %; a newcomer (one scorecard) is judged on it."""
    inc, weak = "a/r/inc", "b/r/weak"
    state = TaskState("r", "qa", AutoSettings(objective=FLOOR))
    for day, weak_successes in enumerate((22, 23)):
        cells = [
            cell(inc, successes=29, cost=2e-5),
            cell(weak, successes=weak_successes, cost=1e-5),
        ]
        state.observe(evidence(card(cells, day), objective=FLOOR), day, 0, live=True)
    lucky = [cell(inc, successes=29, cost=2e-5), cell(weak, successes=26, cost=1e-5)]
    decision = state.observe(evidence(card(lucky, 2), objective=FLOOR), 2, 0, live=True)
    assert decision.kind is Kind.KEEP and state.incumbent == inc
    assert state.evidence is not None and [s.candidate for s in state.evidence.ranked] == [inc]
    why = state.evidence.standing(weak).why_not  # type: ignore[union-attr]
    assert why == "quality 0.789 < min_quality 0.85 over its last 3 scorecards pooled"
    # A newcomer with one good scorecard is admitted on it (and here it wins by far).
    fresh = [*lucky[:1], cell("c/r/new", successes=30, cost=0.5e-5)]
    decision = state.observe(evidence(card(fresh, 3), objective=FLOOR), 3, 0, live=True)
    assert decision.kind is Kind.SWITCH and decision.candidate == "c/r/new"


def test_replayed_switches_are_settled_and_live_ones_ramp() -> None:
    inc, ch = "a/r/inc", "b/r/ch"
    first = card([cell(inc, successes=30, cost=1e-5), cell(ch, successes=30, cost=3e-5)], 0)
    second = card([cell(inc, successes=30, cost=3e-5), cell(ch, successes=30, cost=1e-5)], 1)
    replayed = TaskState("r", "qa", AutoSettings())
    for c in (first, second):
        replayed.observe(evidence(c), 0, 0, live=False)
    assert replayed.incumbent == ch and replayed.ramp is None
    live = TaskState("r", "qa", AutoSettings())
    live.observe(evidence(first), 0, 0, live=True)
    live.observe(evidence(second), 0, 0, live=True)
    assert live.incumbent == inc and live.ramp is not None and live.ramp.challenger == ch
    # A newer scorecard that no longer backs the challenger cancels its ramp.
    live.observe(evidence(card(first.cells, 2)), 1, 0, live=True)
    assert live.ramp is None and live.incumbent == inc
    assert [d.kind for d in live.history][-2:] == [Kind.CANCEL, Kind.KEEP]


# -- the ramp ---------------------------------------------------------------------------------

RAMP = AutoSettings(
    ramp=RampSettings(steps=(0.05, 0.25), step_time=600.0),
    rollback=RollbackSettings(min_requests=20),
)


def _ramping(settings: AutoSettings = RAMP) -> tuple[TaskState, FakeClock]:
    clock = FakeClock()
    state = TaskState("r", "qa", settings)
    state.observe(
        evidence(
            card(
                [cell("a/r/inc", cost=1e-5, latency=0.4), cell("b/r/ch", cost=3e-5, latency=0.5)], 0
            )
        ),
        0,
        0,
        live=True,
    )
    state.observe(
        evidence(
            card(
                [cell("a/r/inc", cost=3e-5, latency=0.4), cell("b/r/ch", cost=1e-5, latency=0.5)], 1
            )
        ),
        clock.monotonic(),
        0,
        live=True,
    )
    assert state.ramp is not None
    return state, clock


def _serve(
    state: TaskState,
    clock: FakeClock,
    candidate: str,
    n: int,
    ok: bool = True,
    seconds: float = 0.4,
) -> None:
    ramp = state.ramp
    for _ in range(n):
        state.record(
            candidate, ok, seconds if ok else None, ramp.id if ramp else None, clock.monotonic(), 0
        )


def test_a_ramp_steps_on_time_and_traffic_then_promotes() -> None:
    state, clock = _ramping()
    ramp = state.ramp
    assert ramp is not None and ramp.share == 0.05
    clock.advance(600)
    state.advance(clock.monotonic(), 0)
    assert ramp.share == 0.05  # time is up, but the challenger has not served 20 requests
    _serve(state, clock, "b/r/ch", 20, seconds=0.5)
    _serve(state, clock, "a/r/inc", 30)
    state.advance(clock.monotonic(), 0)
    assert state.ramp is ramp and ramp.share == 0.25
    _serve(state, clock, "b/r/ch", 20, seconds=0.5)
    clock.advance(599)
    state.advance(clock.monotonic(), 0)
    assert ramp.share == 0.25  # 599 s is not the step time
    clock.advance(1)
    state.advance(clock.monotonic(), 0)
    assert state.ramp is None and state.incumbent == "b/r/ch"
    assert [d.kind for d in state.history][-3:] == [Kind.SWITCH, Kind.STEP, Kind.PROMOTE]


def test_a_ramp_rolls_back_on_live_errors() -> None:
    state, clock = _ramping()
    _serve(state, clock, "a/r/inc", 40)
    _serve(state, clock, "b/r/ch", 15)
    _serve(state, clock, "b/r/ch", 4, ok=False)
    assert state.ramp is not None  # 19 requests: not judged yet
    _serve(state, clock, "b/r/ch", 1, ok=False)
    assert state.ramp is None and state.incumbent == "a/r/inc"
    last = state.history[-1]
    assert last.kind is Kind.ROLLBACK and "live error rate 25.0% (5/20)" in last.reason
    # Outcomes of requests routed under the rolled-back ramp no longer count anywhere.
    _serve(state, clock, "b/r/ch", 5, ok=False)
    assert state.history[-1] is last


def test_errors_within_the_bound_do_not_roll_back() -> None:
    state, clock = _ramping()
    _serve(state, clock, "a/r/inc", 100)
    _serve(state, clock, "b/r/ch", 96)
    _serve(state, clock, "b/r/ch", 4, ok=False)  # 4 % errors: within +5 points of 0 %
    assert state.ramp is not None


def test_a_ramp_rolls_back_when_slower_than_the_scorecard_said() -> None:
    state, clock = _ramping()  # measured 0.5 s vs 0.4 s: 1.25x expected; bound 1.875x
    _serve(state, clock, "a/r/inc", 40, seconds=0.4)
    _serve(state, clock, "b/r/ch", 25, seconds=0.7)  # 1.75x: within the bound
    assert state.ramp is not None
    _serve(state, clock, "b/r/ch", 40, seconds=2.0)
    assert state.ramp is None and "median latency" in state.history[-1].reason


def test_a_ramp_rolls_back_on_shadow_quality_under_the_floor() -> None:
    settings = AutoSettings(objective=FLOOR, ramp=RAMP.ramp, rollback=RAMP.rollback)
    clock = FakeClock()
    state = TaskState("r", "qa", settings)
    state.observe(
        evidence(
            card(
                [cell("a/r/inc", successes=30, cost=1e-5), cell("b/r/ch", successes=30, cost=3e-5)]
            ),
            objective=FLOOR,
        ),
        0,
        0,
        live=True,
    )
    state.observe(
        evidence(
            card(
                [cell("a/r/inc", successes=30, cost=3e-5), cell("b/r/ch", successes=30, cost=1e-5)],
                1,
            ),
            objective=FLOOR,
        ),
        0,
        0,
        live=True,
    )
    assert state.ramp is not None
    graded: Graded = state.graded("b/r/ch")
    graded.graded, graded.passed = 20, 14  # 70 %: its interval reaches 86 %: not yet
    assert state.check_rollback(clock.monotonic(), 0) is None
    graded.graded, graded.passed = 40, 24  # 60 % [45 %, 74 %]: wholly under 0.85
    decision = state.check_rollback(clock.monotonic(), 0)
    assert decision is not None and decision.kind is Kind.ROLLBACK and "shadow" in decision.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": (0.5, 0.25)}, "increase"),
        ({"steps": (1.5,)}, "between 0 and 100"),
        ({"step_time": 0}, "step_time"),
    ],
)
def test_ramp_settings_check_themselves(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RampSettings(**kwargs)  # type: ignore[arg-type]
