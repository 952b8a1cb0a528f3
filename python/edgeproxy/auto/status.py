"""``GET /admin/auto`` and ``edgeproxy auto status``: every route x task's decision, as data and
as text that reads at 80 columns.

Per route x task: the objective, the incumbent (and a pin), the ramping challenger (its share,
step, and what the next step waits for), the latest scorecard's values for every candidate
(with their 95 % intervals and why the others may not be chosen), the chain a request gets now,
the last decision and why, the recent decisions, live outcomes and shadow grades.
"""

from __future__ import annotations

import math
import sys
import textwrap
from typing import TYPE_CHECKING, Any, Final

from edgeproxy.evals.compare import fmt
from edgeproxy.snapshot import Route

if TYPE_CHECKING:
    from edgeproxy.auto.decide import TaskState
    from edgeproxy.auto.router import AutoRouter

WIDTH: Final = 80
RECENT: Final = 10  # decisions shown per route x task


def _number(v: float) -> float | None:
    return v if math.isfinite(v) else None


def task_status(state: TaskState, route: Route, now: float, router: AutoRouter) -> dict[str, Any]:
    auto = route.auto
    assert auto is not None
    objective = auto.objective_for(state.task)
    goal = objective.optimize
    pin = auto.pins.get(state.task)
    ev = state.evidence
    values = []
    if ev is not None:
        for s in (*ev.ranked, *ev.others):
            values.append(
                {
                    "candidate": s.candidate,
                    "value": _number(s.value),
                    "low": _number(s.low),
                    "high": _number(s.high),
                    "shown": f"{fmt(goal, s.value)} [{fmt(goal, s.low)}, {fmt(goal, s.high)}]",
                    "quality": round(s.cell.quality.mean, 4),
                    "eligible": s.eligible,
                    "why_not": s.why_not,
                }
            )
    ramp = state.ramp
    ramp_data = None
    if ramp is not None:
        rules = auto
        ramp_data = {
            "challenger": ramp.challenger,
            "share": ramp.share,
            "step": ramp.step + 1,
            "steps": len(ramp.steps),
            "running_s": round(now - ramp.started, 3),
            "step_time_left_s": round(
                max(0.0, rules.ramp.step_time - (now - ramp.step_started)), 3
            ),
            "challenger_requests_in_step": ramp.step_served,
            "min_requests": rules.rollback.min_requests,
            "scorecard": ramp.card,
            "expected_latency_ratio": ramp.expected_latency_ratio,
            "live": {k: o.as_dict() for k, o in ramp.live.items()},
        }
    chain = [c.key for c in router.preview(route, state.task)]
    last = state.last
    return {
        "objective": {
            "optimize": goal,
            "min_quality": objective.min_quality,
            "floor_on": objective.floor_on,
            "text": objective.describe(),
        },
        "incumbent": state.incumbent,
        "pinned": pin.key if pin is not None else None,
        "ramp": ramp_data,
        "scorecard": ev.card.label if ev is not None else None,
        "values": values,
        "chain": chain,
        "why": last.reason if last is not None else "no scorecard measured this task",
        "decisions": [d.as_dict() for d in list(state.history)[-RECENT:]],
        "live": {k: o.as_dict() for k, o in state.recent.items()},
        "shadow": {k: g.as_dict() for k, g in state.shadow.items()},
    }


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_long_words=True
    )


def _short(key: str | None) -> str:
    return key if key is not None else "-"


def render(data: dict[str, Any]) -> str:
    """The status as text, every line at most 80 columns."""
    lines: list[str] = []
    lines += _wrap(f"edgeproxy auto (policy {data.get('policy_version')})", "")
    cards = data.get("scorecards") or []
    if not cards:
        lines.append("scorecards: none (evals.scorecards names none, or none exists yet)")
    for card in cards:
        what = f"{card['status']}: {card['path']}"
        if card.get("created"):
            what += f" ({card['created']})"
        lines += _wrap(what, "scorecard ")
        if card.get("problem"):
            lines += _wrap(str(card["problem"]), "  problem: ")
    routes = data.get("routes") or {}
    if not routes:
        lines.append("no auto route has a task yet")
    for route, tasks in routes.items():
        for task, t in tasks.items():
            lines.append("")
            lines += _wrap(f"{route} / {task}: {t['objective']['text']}", "")
            if t.get("pinned"):
                lines += _wrap(f"pinned:     {t['pinned']}", "  ")
            lines += _wrap(f"incumbent:  {_short(t.get('incumbent'))}", "  ")
            ramp = t.get("ramp")
            if ramp:
                lines += _wrap(
                    f"challenger: {ramp['challenger']} at {ramp['share']:.0%} (step "
                    f"{ramp['step']}/{ramp['steps']}; next after {ramp['step_time_left_s']:g}s "
                    f"and {max(0, ramp['min_requests'] - ramp['challenger_requests_in_step'])} "
                    "more of its requests)",
                    "  ",
                )
            if t.get("chain"):
                lines += _wrap("chain:      " + " > ".join(t["chain"]), "  ")
            if t.get("scorecard"):
                lines += _wrap(f"scorecard:  {t['scorecard']}", "  ")
            for v in t.get("values") or []:
                mark = "*" if v["candidate"] == t.get("incumbent") else " "
                text = f"{mark} {v['candidate']}  {v['shown']}"
                if not v["eligible"]:
                    text += f"  ({v['why_not']})"
                lines += _wrap(text, "    ")
            lines += _wrap(f"why: {t['why']}", "  ")
    shadow = data.get("shadow")
    if shadow:
        lines.append("")
        lines += _wrap(
            f"shadow: {shadow['sent']} mirrored, {shadow['dropped']} dropped, judge "
            f"{shadow['judge'] or 'none'}",
            "",
        )
    return "\n".join(lines) + "\n"


def fetch(url: str, token: str | None, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /admin/auto`` of a running proxy (urllib: no client library needed)."""
    import urllib.request

    import orjson

    request = urllib.request.Request(f"{url.rstrip('/')}/admin/auto")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = orjson.loads(response.read())
    if not isinstance(data, dict):
        raise ValueError("not a status document")
    return data


def status_command(url: str, *, as_json: bool, token: str | None) -> int:
    """``edgeproxy auto status``: 0 when the proxy answered, 2 when it could not be read."""
    import urllib.error

    import orjson

    try:
        data = fetch(url, token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"edgeproxy auto status: cannot read {url}/admin/auto: {reason}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data))
    return 0
