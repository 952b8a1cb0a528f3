"""``edgeproxy eval compare OLD NEW``: the "why we switched" report, per task.

For each task: the winner under the objective in each scorecard (among the candidates that meet
the limits), whether that is a switch, and why: each candidate's objective value in both
scorecards with its 95 % interval, the change, and the measurements behind it (quality, cost per
request, output tokens, latency, error rate). Markdown, and a PNG plot when matplotlib is
installed (the ``load`` extra has it).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

from edgeproxy.evals.objective import (
    HIGHER_IS_BETTER,
    UNITS,
    Limits,
    Objective,
    Ranked,
    improvement,
    interval,
    rank,
    separated,
    value,
)
from edgeproxy.evals.scorecard import Cell, Scorecard


@dataclass(frozen=True)
class TaskComparison:
    task: str
    old_winner: Ranked | None
    new_winner: Ranked | None
    old: dict[str, Cell]
    new: dict[str, Cell]
    excluded: dict[str, str]  # candidate -> why it is not ranked in NEW

    @property
    def switched(self) -> bool:
        return (
            self.old_winner is not None
            and self.new_winner is not None
            and self.old_winner.cell.candidate != self.new_winner.cell.candidate
        )

    def auto_rule(self, objective: Objective, margin: float) -> str:
        """What the ``auto`` route's rule makes of this one new scorecard (docs/auto.md): with
        the old winner as the incumbent, ``switch`` only when the new winner beats it by
        ``margin`` with 95 % intervals apart, or the incumbent no longer meets the limits;
        else ``hold`` and why (several scorecards in a row may still switch it)."""
        if not self.switched:
            return "keep" if self.new_winner is not None else "none eligible"
        assert self.old_winner is not None and self.new_winner is not None
        incumbent = self.old_winner.cell.candidate
        mine = self.new.get(incumbent)
        if mine is None or incumbent in self.excluded:
            return "switch (the incumbent no longer meets the limits)"
        challenger = self.new_winner.cell
        gain = improvement(value(challenger, objective), value(mine, objective), objective)
        if gain < margin:
            return f"hold ({_pct(gain)} < margin {margin * 100:g}%)"
        if not separated(challenger, mine, objective):
            return "hold (95 % intervals overlap)"
        return f"switch ({_pct(gain)}, intervals apart)"


def compare(
    old: Scorecard, new: Scorecard, objective: Objective, limits: Limits | None = None
) -> list[TaskComparison]:
    limits = limits or Limits()
    out = []
    for task in sorted(set(old.tasks) | set(new.tasks)):
        old_cells, new_cells = old.for_task(task), new.for_task(task)
        old_ranked = rank(old_cells, objective, limits)
        new_ranked = rank(new_cells, objective, limits)
        excluded = {}
        for c in new_cells:
            why = limits.why_not(c)
            if why is not None:
                excluded[c.candidate] = why
        out.append(
            TaskComparison(
                task=task,
                old_winner=old_ranked[0] if old_ranked else None,
                new_winner=new_ranked[0] if new_ranked else None,
                old={c.candidate: c for c in old_cells},
                new={c.candidate: c for c in new_cells},
                excluded=excluded,
            )
        )
    return out


def fmt(objective: Objective, v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if objective == "cost_per_success":
        return f"${v * 1000:.4g}/1k"
    if objective == "latency":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if objective == "quality":
        return f"{v * 100:.1f}%"
    return f"{v:.4g}"


def _pct(change: float) -> str:
    if math.isinf(change):
        return "better" if change > 0 else "worse"
    return f"{change * 100:+.1f}%"


def _delta(before: Cell, after: Cell, objective: Objective) -> str:
    """The change from ``before`` to ``after`` (positive: better) with its range: from the
    worst end of the new interval against the best of the old, to the reverse."""
    central = improvement(value(after, objective), value(before, objective), objective)
    b_low, b_high = interval(before, objective)
    a_low, a_high = interval(after, objective)
    if HIGHER_IS_BETTER[objective]:
        worst, best = improvement(a_low, b_high, objective), improvement(a_high, b_low, objective)
    else:
        worst, best = improvement(a_high, b_low, objective), improvement(a_low, b_high, objective)
    return f"{_pct(central)} [{_pct(worst)}, {_pct(best)}]"


def _cell_value(cell: Cell | None, objective: Objective) -> str:
    if cell is None:
        return "-"
    low, high = interval(cell, objective)
    return (
        f"{fmt(objective, value(cell, objective))} [{fmt(objective, low)}, {fmt(objective, high)}]"
    )


def _why(t: TaskComparison, objective: Objective, limits: Limits) -> list[str]:
    """Sentences saying why the winner changed (or did not)."""
    lines: list[str] = []
    new_w, old_w = t.new_winner, t.old_winner
    if new_w is None:
        return ["No candidate meets the limits in the new scorecard."]
    if old_w is None:
        return [f"`{new_w.cell.candidate}` leads; the old scorecard had no eligible candidate."]
    incumbent = old_w.cell.candidate
    if not t.switched:
        runner_up = next(
            (c for c in rank(t.new.values(), objective, limits) if c.cell.candidate != incumbent),
            None,
        )
        lines.append(f"`{incumbent}` stays best ({fmt(objective, new_w.value)}).")
        if runner_up is not None:
            lead = improvement(new_w.value, runner_up.value, objective)
            apart = separated(new_w.cell, runner_up.cell, objective)
            lines.append(
                f"Next best: `{runner_up.cell.candidate}` ({fmt(objective, runner_up.value)}); "
                f"the winner is {_pct(lead).lstrip('+')} better, intervals "
                f"{'apart' if apart else 'overlapping'}."
            )
        return lines
    challenger = new_w.cell
    lines.append(
        f"`{challenger.candidate}` takes over from `{incumbent}`: "
        f"{fmt(objective, new_w.value)} vs "
        f"{fmt(objective, value(t.new[incumbent], objective)) if incumbent in t.new else 'not measured'}."
    )
    if incumbent in t.excluded:
        lines.append(f"`{incumbent}` no longer meets the limits: {t.excluded[incumbent]}.")
    before, after = t.old.get(incumbent), t.new.get(incumbent)
    if before is not None and after is not None:
        changes = _changes(before, after)
        if changes:
            lines.append(f"What changed for `{incumbent}`: {'; '.join(changes)}.")
    old_challenger = t.old.get(challenger.candidate)
    if old_challenger is not None:
        changes = _changes(old_challenger, challenger)
        if changes:
            lines.append(f"What changed for `{challenger.candidate}`: {'; '.join(changes)}.")
    if incumbent in t.new:
        apart = separated(challenger, t.new[incumbent], objective)
        lines.append(f"The two 95 % intervals {'do not overlap' if apart else 'overlap'}.")
    return lines


def _changes(before: Cell, after: Cell) -> list[str]:
    out = []
    if before.price is not None and after.price is not None and before.price != after.price:
        out.append(
            f"price ${before.price.input:g}/${before.price.output:g} -> "
            f"${after.price.input:g}/${after.price.output:g} per 1M tokens"
        )
    checks = (
        ("quality", before.quality.mean, after.quality.mean, 0.03, "{:.1%}"),
        ("cost per request", before.cost_usd, after.cost_usd, 0.05, "${:.3g}"),
        ("output tokens", before.output_tokens, after.output_tokens, 0.1, "{:.1f}"),
        ("latency", before.latency_s.mean or 0, after.latency_s.mean or 0, 0.1, "{:.3f}s"),
        ("error rate", before.error_rate, after.error_rate, 0.03, "{:.1%}"),
    )
    for name, a, b, threshold, form in checks:
        moved = (
            abs(b - a) > threshold
            if name in ("quality", "error rate")
            else (a > 0 and abs(b - a) / a > threshold)
        )
        if moved:
            out.append(f"{name} {form.format(a)} -> {form.format(b)}")
    return out


def markdown(
    old: Scorecard,
    new: Scorecard,
    comparisons: list[TaskComparison],
    objective: Objective,
    limits: Limits,
    *,
    old_name: str = "OLD",
    new_name: str = "NEW",
    plot: str | None = None,
    margin: float = 0.05,
) -> str:
    lines = [
        f"# Eval comparison: {objective}",
        "",
        f"- old: `{old_name}` ({old.created.isoformat()}, suite {old.suite.name} "
        f"`{old.suite.hash[:12]}`, policy {old.policy.version})",
        f"- new: `{new_name}` ({new.created.isoformat()}, suite {new.suite.name} "
        f"`{new.suite.hash[:12]}`, policy {new.policy.version})",
    ]
    if old.suite.hash != new.suite.hash:
        lines.append("- **the suites differ**: values are not measured on the same items")
    for name, card in ((old_name, old), (new_name, new)):
        if not card.complete:
            lines.append(f"- **{name} is incomplete** ({card.stopped or 'interrupted'})")
    if limits.min_quality is not None:
        lines.append(f"- quality floor: {limits.min_quality:g}")
    lines.append("")
    lines.append(
        f"| task | old winner | new winner | decision | auto route (margin {margin * 100:g}%) |"
    )
    lines.append("|---|---|---|---|---|")
    for t in comparisons:
        old_w = t.old_winner.cell.candidate if t.old_winner else "-"
        new_w = t.new_winner.cell.candidate if t.new_winner else "-"
        decision = "switch" if t.switched else ("keep" if t.new_winner else "none eligible")
        rule = t.auto_rule(objective, margin)
        lines.append(f"| {t.task} | `{old_w}` | `{new_w}` | {decision} | {rule} |")
    for t in comparisons:
        lines += ["", f"## {t.task}", ""]
        lines += [f"- {sentence}" for sentence in _why(t, objective, limits)]
        lines += [
            "",
            f"| candidate | {objective} old | {objective} new | change (+ better) | quality new | "
            "cost/request new | output tokens new | latency p50 new | errors new |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        ranked = [r.cell.candidate for r in rank(t.new.values(), objective, limits)]
        order = (
            ranked + [c for c in t.new if c not in ranked] + [c for c in t.old if c not in t.new]
        )
        for candidate in order:
            before, after = t.old.get(candidate), t.new.get(candidate)
            change = "-"
            if before is not None and after is not None:
                change = _delta(before, after, objective)
            marks = ""
            if t.new_winner is not None and candidate == t.new_winner.cell.candidate:
                marks = " **(winner)**"
            elif candidate in t.excluded:
                marks = " (below limits)"
            if after is None:
                lines.append(
                    f"| `{candidate}`{marks} | {_cell_value(before, objective)} | - | - | - | - | - | - | - |"
                )
                continue
            lines.append(
                f"| `{candidate}`{marks} | {_cell_value(before, objective)} | "
                f"{_cell_value(after, objective)} | {change} | "
                f"{after.quality.mean:.1%} [{after.quality.low:.1%}, {after.quality.high:.1%}] | "
                f"${after.cost_usd:.3g} | {after.output_tokens:.0f} | "
                f"{fmt('latency', after.latency_s.p50)} | {after.error_rate:.1%} |"
            )
    if plot:
        lines += ["", f"![{objective} per task]({plot})"]
    return "\n".join(lines) + "\n"


def write_plot(comparisons: list[TaskComparison], objective: Objective, path: Path) -> str | None:
    """A PNG of each task's objective values, old and new, with their intervals; None when
    written, else why not (matplotlib missing)."""
    try:
        # Imported by name: an optional dependency (the ``load`` extra), typed as Any here.
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or the `load` extra)"
    fig, axes = plt.subplots(
        len(comparisons),
        1,
        figsize=(9, 2.2 + 0.45 * max(len(t.new) for t in comparisons) * len(comparisons)),
        squeeze=False,
    )
    for ax, t in zip(axes[:, 0], comparisons, strict=True):
        names = sorted(set(t.old) | set(t.new))
        for offset, (label, cells, color) in enumerate(
            (("old", t.old, "#9aa5b1"), ("new", t.new, "#1f6feb"))
        ):
            ys, xs, lows, highs = [], [], [], []
            for i, name in enumerate(names):
                cell = cells.get(name)
                if cell is None:
                    continue
                v = value(cell, objective)
                low, high = interval(cell, objective)
                if not all(math.isfinite(x) for x in (v, low, high)):
                    continue
                ys.append(i + (0.2 if offset else -0.2))
                xs.append(v)
                lows.append(v - low)
                highs.append(high - v)
            ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", color=color, label=label, capsize=3)
        winner = t.new_winner.cell.candidate if t.new_winner else "-"
        labels = [
            name
            + (" (winner)" if name == winner else " (below limits)" if name in t.excluded else "")
            for name in names
        ]
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(labels, fontsize=8)
        finite = [
            value(c, objective)
            for c in (*t.old.values(), *t.new.values())
            if 0 < value(c, objective) < math.inf
        ]
        if finite and max(finite) / min(finite) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{objective} ({UNITS[objective] or 'share'}; 95 % intervals)", fontsize=8)
        ax.set_title(f"{t.task}: {objective}, new winner {winner}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
