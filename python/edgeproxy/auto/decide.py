"""The switching rule with hysteresis, and the state of one route x task (docs/auto.md).

**The rule**, applied to each new scorecard (its ``Evidence`` for the task) against the
incumbent, the candidate serving the task now:

1. No incumbent yet: the leader serves at once (the first evidence); with no leader, nothing
   does (the route's own chain serves the task).
2. The incumbent misses the objective (under the floor, over a latency limit, not measured):
   the floor has hysteresis too, so that a noisy eval does not evict a good incumbent. It is
   replaced by the leader at once only when its quality's 99.9 % interval lies wholly under the
   floor (a real degradation), else after ``confirmations`` consecutive scorecards that it
   misses.
3. The incumbent still leads: keep it.
4. Another candidate leads. It *switches* when its objective beats the incumbent's by at least
   ``margin`` **and** their 95 % intervals do not overlap (``evals.objective.beats``); or when
   it beats it by the margin in each of ``confirmations`` consecutive scorecards and the beats
   rule holds on their samples pooled (small evals add up to a clear answer). Otherwise the
   incumbent holds. Noise moves a leader by less than the margin, or not in the same direction
   scorecard after scorecard, or not far enough for pooled intervals to part: it never flaps
   traffic.

**Admission.** A candidate other than the incumbent must meet the floor on its last
``confirmations`` scorecards of the same suite *pooled* (``TaskState.admit``): an eval that
happens to flatter a model under the floor (at 30 samples, a true 78 % model measures 85 % or
more one time in six) does not let it in, as a leader or as a fallback.

A switch starts a canary ramp (``ramp.py``) when it happens live; while the proxy replays the
scorecards it finds at start (or after a policy change resets a task), each decision is taken as
settled. A newer scorecard that no longer says *switch* to the ramping challenger cancels its
ramp.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from edgeproxy.auto.evidence import Evidence, Standing
from edgeproxy.auto.ramp import Graded, Outcomes, Ramp
from edgeproxy.evals.compare import fmt
from edgeproxy.evals.objective import Measured, beats, improvement, separated
from edgeproxy.evals.scorecard import Cell
from edgeproxy.evals.stats import Z95, wilson
from edgeproxy.snapshot import AutoSettings

HISTORY = 64  # decision records kept per route x task
log = logging.getLogger("edgeproxy.auto")


class Kind(enum.StrEnum):
    FIRST = "first"  # the first evidence: its leader serves
    KEEP = "keep"  # the incumbent still leads
    HOLD = "hold"  # another leads, not by enough yet (hysteresis)
    SWITCH = "switch"  # a challenger takes over (through the ramp)
    REPLACE = "replace"  # the incumbent no longer meets the objective: the leader, at once
    NONE = "none"  # nothing meets the objective: the route's chain serves
    STEP = "step"  # the ramp moved a step
    PROMOTE = "promote"  # the ramp ended: the challenger is the incumbent
    ROLLBACK = "rollback"  # the challenger went back out
    CANCEL = "cancel"  # a newer scorecard no longer backs the ramping challenger


_LOGGED: Final = frozenset({Kind.STEP, Kind.PROMOTE, Kind.ROLLBACK, Kind.CANCEL})


@dataclass(frozen=True, slots=True)
class Decision:
    """One record: what was decided, when, on which scorecard, and why."""

    kind: Kind
    at: float  # clock seconds
    wall: float  # epoch seconds
    reason: str
    candidate: str | None = None  # the subject (the challenger, the new incumbent)
    incumbent: str | None = None  # the incumbent before the decision
    card: str | None = None  # the scorecard's label

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "wall": self.wall,
            "reason": self.reason,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "scorecard": self.card,
        }


@dataclass
class Streak:
    """Consecutive scorecards: a leader better by the margin (intervals overlapping) with its
    and the incumbent's cells in each, and the incumbent missing the objective."""

    candidate: str | None = None
    count: int = 0
    misses: int = 0
    cells: tuple[tuple[Cell, Cell], ...] = ()  # (leader, incumbent) per scorecard of the streak


def pooled(cells: Sequence[Cell]) -> Measured:
    """The cells of several scorecards as one measurement: pass/fail counts added up (their
    Wilson interval), cost and latency averaged, the latency interval narrowed by the square
    root of the number of scorecards (independent runs)."""
    graded = sum(c.graded for c in cells)
    successes = sum(c.successes for c in cells)
    rate = successes / graded if graded else 0.0
    low, high = wilson(successes, graded)
    weights = [c.graded for c in cells]
    total = sum(weights) or 1
    quality = sum(c.quality.mean * w for c, w in zip(cells, weights, strict=True)) / total
    q_half = sum((c.quality.high - c.quality.low) / 2 for c in cells) / len(cells)
    q_half /= math.sqrt(len(cells))
    latencies = [c.latency_s.mean or 0.0 for c in cells]
    latency = sum(latencies) / len(cells)
    halves = [((c.latency_s.mean_high or 0.0) - (c.latency_s.mean_low or 0.0)) / 2 for c in cells]
    l_half = sum(halves) / len(cells) / math.sqrt(len(cells))
    return Measured(
        quality=quality,
        success_rate=rate,
        cost=sum(c.cost_usd for c in cells) / len(cells),
        latency=latency,
        quality_low=max(0.0, quality - q_half),
        quality_high=min(1.0, quality + q_half),
        success_low=min(low, rate),
        success_high=max(high, rate),
        latency_low=max(0.0, latency - l_half),
        latency_high=latency + l_half,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    reason: str
    candidate: str | None = None


def _value(s: Standing, ev: Evidence) -> str:
    goal = ev.objective.optimize
    return f"{fmt(goal, s.value)} [{fmt(goal, s.low)}, {fmt(goal, s.high)}]"


def _pct(gain: float) -> str:
    return "infinitely" if math.isinf(gain) else f"{gain * 100:.1f}%"


def switching_rule(
    ev: Evidence, incumbent: str | None, streak: Streak, margin: float, confirmations: int
) -> tuple[Verdict, Streak]:
    """The rule of the module docstring on one scorecard; the streaks after it."""
    goal = ev.objective.optimize
    leader = ev.leader
    if incumbent is None:
        if leader is None:
            return Verdict(Kind.NONE, f"no candidate meets {ev.objective.describe()}"), Streak()
        return Verdict(
            Kind.FIRST, f"{leader.candidate} leads with {_value(leader, ev)}", leader.candidate
        ), Streak()
    mine = ev.standing(incumbent)
    if mine is None or not mine.eligible:
        return _missed(ev, incumbent, mine, streak, margin, confirmations)
    if leader is None or leader.candidate == incumbent:
        reason = f"{incumbent} still leads with {_value(mine, ev)}"
        if len(ev.ranked) > 1:
            second = ev.ranked[1]
            lead = improvement(mine.value, second.value, goal)
            reason += f"; next {second.candidate} is {_pct(lead)} behind"
        return Verdict(Kind.KEEP, reason), Streak()
    return _challenged(ev, incumbent, mine, leader, streak, margin, confirmations)


def _challenged(
    ev: Evidence,
    incumbent: str,
    mine: Standing,
    leader: Standing,
    streak: Streak,
    margin: float,
    confirmations: int,
    misses: int = 0,
) -> tuple[Verdict, Streak]:
    """Another candidate leads: a switch only with the margin and intervals apart, or the
    margin in ``confirmations`` consecutive scorecards."""
    goal = ev.objective.optimize
    gain = improvement(leader.value, mine.value, goal)
    apart = separated(leader.cell, mine.cell, goal)
    versus = (
        f"{leader.candidate} {_value(leader, ev)} vs {incumbent} {_value(mine, ev)}: "
        f"{_pct(gain)} better"
    )
    if gain >= margin and apart:
        return Verdict(
            Kind.SWITCH,
            f"{versus} (margin {margin * 100:g}%), 95% intervals apart",
            leader.candidate,
        ), Streak()
    if gain >= margin:
        same = streak.candidate == leader.candidate
        cells = (*(streak.cells if same else ()), (leader.cell, mine.cell))[-confirmations:]
        count = len(cells)
        if count >= confirmations:
            theirs = pooled([c for c, _ in cells])
            ours = pooled([i for _, i in cells])
            if beats(theirs, ours, goal, margin):
                return Verdict(
                    Kind.SWITCH,
                    f"{versus} (margin {margin * 100:g}%) in {count} consecutive scorecards, "
                    "and their pooled 95% intervals are apart",
                    leader.candidate,
                ), Streak()
            return Verdict(
                Kind.HOLD,
                f"{versus} in {count} consecutive scorecards, but even pooled their "
                "intervals overlap",
                leader.candidate,
            ), Streak(leader.candidate, count, misses, cells)
        return Verdict(
            Kind.HOLD,
            f"{versus} but the intervals overlap: {count}/{confirmations} scorecards",
            leader.candidate,
        ), Streak(leader.candidate, count, misses, cells)
    return Verdict(
        Kind.HOLD, f"{versus}: less than the margin {margin * 100:g}%", leader.candidate
    ), Streak(misses=misses)


Z999: Final = 3.2905  # two-sided 99.9 %


def quality_ceiling(cell: Cell) -> float:
    """The upper end of the cell's quality at 99.9 %: pass/fail counts by Wilson, graded
    scores by widening the 95 % t interval (a clear breach of the floor must not be noise)."""
    q = cell.quality
    if q.method == "wilson":
        return wilson(cell.successes, cell.graded, z=Z999)[1]
    if q.method == "t":
        return min(1.0, q.mean + (q.high - q.mean) * Z999 / Z95)
    return 1.0


def _missed(
    ev: Evidence,
    incumbent: str,
    mine: Standing | None,
    streak: Streak,
    margin: float,
    confirmations: int,
) -> tuple[Verdict, Streak]:
    """The incumbent misses the objective in this scorecard. The floor has hysteresis too (a
    noisy eval must not evict a good incumbent): it goes at once only when its quality's 95 %
    interval lies wholly under the floor, else after ``confirmations`` scorecards in a row that
    it misses; meanwhile a challenger may still beat it by the usual rule."""
    leader = ev.leader
    why = "not measured in this scorecard" if mine is None else mine.why_not
    floor = ev.objective.min_quality
    clear = mine is not None and floor is not None and quality_ceiling(mine.cell) < floor
    misses = streak.misses + 1
    if clear or misses >= confirmations:
        reason = f"{incumbent} no longer qualifies ({why}; " + (
            "its 99.9% interval is wholly under the floor)"
            if clear
            else f"in {misses} consecutive scorecards)"
        )
        if leader is None:
            return Verdict(Kind.NONE, f"{reason}; no other candidate qualifies"), Streak()
        return Verdict(
            Kind.REPLACE,
            f"{reason}; {leader.candidate} leads with {_value(leader, ev)}",
            leader.candidate,
        ), Streak()
    if mine is not None and leader is not None:
        verdict, after = _challenged(
            ev, incumbent, mine, leader, streak, margin, confirmations, misses
        )
        if verdict.kind is Kind.SWITCH:
            return verdict, after
    return Verdict(
        Kind.HOLD,
        f"{incumbent} misses the objective here ({why}): kept until its 99.9% quality interval "
        f"is wholly under the floor or it misses {confirmations} scorecards in a row "
        f"({misses}/{confirmations})",
        leader.candidate if leader is not None else None,
    ), Streak(misses=misses)


@dataclass
class TaskState:
    """What ``auto`` serves one route x task with, and why (mutated on the event loop only)."""

    route: str
    task: str
    settings: AutoSettings
    incumbent: str | None = None
    ramp: Ramp | None = None
    streak: Streak = field(default_factory=Streak)
    evidence: Evidence | None = None  # the latest scorecard's word on the task
    seen: set[str] = field(default_factory=set)  # scorecard ids observed
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=HISTORY))
    recent: dict[str, Outcomes] = field(default_factory=dict)  # live, since the state began
    shadow: dict[str, Graded] = field(default_factory=dict)  # shadow-graded, per candidate
    ramps: int = 0  # ramps started (their ids)
    # Each candidate's cells of its last ``confirmations`` scorecards: (suite hash, cell).
    measured: dict[str, deque[tuple[str, Cell]]] = field(default_factory=dict)

    @property
    def last(self) -> Decision | None:
        return self.history[-1] if self.history else None

    def _record(self, decision: Decision) -> Decision:
        self.history.append(decision)
        if decision.kind in _LOGGED:  # only ever taken while serving (a replay takes none)
            level = logging.WARNING if decision.kind is Kind.ROLLBACK else logging.INFO
            log.log(
                level,
                "auto %s: %s",
                decision.kind,
                decision.reason,
                extra={"route": self.route, "task": self.task, "scorecard": decision.card},
            )
        return decision

    # -- scorecards --------------------------------------------------------------------------

    def admit(self, ev: Evidence) -> Evidence:
        """``ev`` with the floor applied to the other candidates' last scorecards *pooled*
        (of the same suite, up to ``confirmations`` of them): one lucky eval does not let a
        model under the floor in, as a fallback or a challenger. The incumbent is judged on
        this scorecard alone (its own hysteresis, ``_missed``, keeps noise from evicting it)."""
        keep = self.settings.confirmations
        for s in (*ev.ranked, *ev.others):
            self.measured.setdefault(s.candidate, deque(maxlen=keep)).append(
                (ev.card.suite, s.cell)
            )
        floor, on = ev.objective.min_quality, ev.objective.floor_on
        if floor is None or keep <= 1:
            return ev
        ranked: list[Standing] = []
        others = list(ev.others)
        for s in ev.ranked:
            cells = [c for suite, c in self.measured[s.candidate] if suite == ev.card.suite]
            if s.candidate == self.incumbent or len(cells) < 2:
                ranked.append(s)
                continue
            together = pooled(cells)
            quality = together.quality
            if on == "lower_bound":
                methods = {c.quality.method for c in cells}
                together_low = (
                    together.success_low if methods == {"wilson"} else together.quality_low
                )
                quality = together_low if together_low is not None else quality
            if quality < floor:
                why = (
                    f"quality {quality:.3f} < min_quality {floor:g} over its last {len(cells)} "
                    "scorecards pooled"
                )
                others.append(replace(s, why_not=why))
                continue
            ranked.append(s)
        return replace(ev, ranked=tuple(ranked), others=tuple(others))

    def observe(self, ev: Evidence, now: float, wall: float, *, live: bool) -> Decision:
        """A scorecard's evidence; ``live``: it arrived while serving (a switch ramps)."""
        self.seen.add(ev.card.id)
        ev = self.admit(ev)
        self.evidence = ev
        verdict, self.streak = switching_rule(
            ev, self.incumbent, self.streak, self.settings.margin, self.settings.confirmations
        )
        before = self.incumbent
        ramp = self.ramp
        label = ev.card.label
        if ramp is not None and not (
            verdict.kind is Kind.SWITCH and verdict.candidate == ramp.challenger
        ):
            self.ramp = None
            if verdict.kind is not Kind.REPLACE or verdict.candidate != ramp.challenger:
                self._record(
                    Decision(
                        Kind.CANCEL,
                        now,
                        wall,
                        f"ramp of {ramp.challenger} cancelled: {verdict.reason}",
                        ramp.challenger,
                        before,
                        label,
                    )
                )
        elif ramp is not None:  # the newer scorecard backs the ramping challenger again
            return self._record(
                Decision(Kind.SWITCH, now, wall, verdict.reason, ramp.challenger, before, label)
            )
        if verdict.kind in (Kind.FIRST, Kind.REPLACE):
            self.incumbent = verdict.candidate
        elif verdict.kind is Kind.NONE:
            self.incumbent = None
        elif verdict.kind is Kind.SWITCH:
            assert verdict.candidate is not None and before is not None
            if live and self.settings.ramp.steps:
                self._start_ramp(verdict.candidate, before, ev, now, label)
            else:
                self.incumbent = verdict.candidate
        return self._record(
            Decision(verdict.kind, now, wall, verdict.reason, verdict.candidate, before, label)
        )

    def _start_ramp(
        self, challenger: str, incumbent: str, ev: Evidence, now: float, label: str
    ) -> None:
        mine, theirs = ev.standing(challenger), ev.standing(incumbent)
        assert mine is not None and theirs is not None
        expected = None
        a, b = mine.cell.latency_s.p50, theirs.cell.latency_s.p50
        if a is not None and b:
            expected = a / b
        self.ramps += 1
        self.ramp = Ramp(
            id=self.ramps,
            challenger=challenger,
            incumbent=incumbent,
            steps=self.settings.ramp.steps,
            started=now,
            card=label,
            expected_latency_ratio=expected,
            baseline_error_rate=theirs.cell.error_rate,
        )

    # -- the clock and live outcomes ---------------------------------------------------------

    def advance(self, now: float, wall: float) -> None:
        """Move the ramp on when its step is due (at most one step per call)."""
        ramp = self.ramp
        if ramp is None:
            return
        rules = self.settings
        if not ramp.step_due(now, rules.ramp.step_time, rules.rollback.min_requests):
            return
        share = ramp.share
        if ramp.next_step(now):
            self.ramp = None
            before, self.incumbent = self.incumbent, ramp.challenger
            self.streak = Streak()
            self._record(
                Decision(
                    Kind.PROMOTE,
                    now,
                    wall,
                    f"{ramp.challenger} served {share:.0%} of the requests without a rollback: "
                    "it now serves them all",
                    ramp.challenger,
                    before,
                    ramp.card,
                )
            )
            return
        self._record(
            Decision(
                Kind.STEP,
                now,
                wall,
                f"{ramp.challenger}: {share:.0%} -> {ramp.share:.0%} of the requests",
                ramp.challenger,
                self.incumbent,
                ramp.card,
            )
        )

    def record(
        self,
        candidate: str,
        ok: bool,
        seconds: float | None,
        ramp_id: int | None,
        now: float,
        wall: float,
    ) -> None:
        """One live attempt outcome of this task (``ramp_id``: the ramp the request was
        routed under, if any); may roll the challenger back."""
        self.recent.setdefault(candidate, Outcomes()).record(ok, seconds)
        ramp = self.ramp
        if ramp is None or ramp_id != ramp.id:
            return
        ramp.record(candidate, ok, seconds)
        if candidate in (ramp.challenger, ramp.incumbent):
            self.check_rollback(now, wall)

    def graded(self, candidate: str) -> Graded:
        return self.shadow.setdefault(candidate, Graded())

    def check_rollback(self, now: float, wall: float) -> Decision | None:
        ramp = self.ramp
        if ramp is None:
            return None
        floor = self.settings.objective_for(self.task).min_quality
        reason = ramp.rollback_reason(
            self.settings.rollback, floor, self.shadow.get(ramp.challenger)
        )
        if reason is None:
            return None
        self.ramp = None
        self.streak = Streak()
        return self._record(
            Decision(
                Kind.ROLLBACK,
                now,
                wall,
                f"{ramp.challenger} rolled back at {ramp.share:.0%}: {reason}",
                ramp.challenger,
                self.incumbent,
                ramp.card,
            )
        )
