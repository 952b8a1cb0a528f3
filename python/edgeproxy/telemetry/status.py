"""``GET /admin/status``: the JSON shape, and the terminal table ``edgeproxy status`` draws of it.

Shape (``STATUS_SCHEMA_VERSION`` 1)::

    {
      "schema": 1,
      "policy": {"version": "ab12cd34", "source": "policies/default.yaml", "routes": 2},
      "inflight": 3,
      "routes": [{"name": "gpt-4o-mini", "aliases": ["default"], "chain": ["alpha/us-east/…", …],
                  "tasks": {"extraction": ["…"]} (only a route with per-task chains)}],
      "candidates": [
        {
          "key": "alpha/us-east/gpt-4o-mini", "provider": "alpha", "region": "us-east",
          "model": "gpt-4o-mini", "routes": ["gpt-4o-mini"],
          "breaker": {"state": "closed", "reason": "", "reopen_in_seconds": null, …} | null,
          "probe": {"ok": true | false | null (not probed yet), "detail": "…",
                    "fail_streak": 0, "probes_total": 12, "next_in_seconds": 4.2, …} | null,
          "recent": {"requests": 40, "errors": 1, "error_rate": 0.025, "p50_ms": 210.0,
                     "p95_ms": 480.0, "last_error": "server_error"}
        }
      ],
      "reload": {"counts": {…}, "last_error": {…} | null, …} | null   (added by admin.py)
    }
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.recent import CandidateStats, RecentStats

STATUS_SCHEMA_VERSION = 1

Rows = Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None


def _by_key(rows: Rows) -> dict[str, dict[str, Any]]:
    """Accept a list of dicts with a ``key`` (``BreakerRegistry.snapshot()``) or a dict by key."""
    if rows is None:
        return {}
    if isinstance(rows, Mapping):
        return {str(k): dict(v) for k, v in rows.items()}
    return {str(row["key"]): dict(row) for row in rows if "key" in row}


def build_status(
    policy: Policy,
    breakers_snapshot: Rows,
    probes_snapshot: Rows,
    inflight: int,
    recent: RecentStats | Mapping[str, CandidateStats] | None,
) -> dict[str, Any]:
    """The ``/admin/status`` document. Secrets never appear: candidates are read by key,
    provider, region and model only."""
    breakers = _by_key(breakers_snapshot)
    probes = _by_key(probes_snapshot)
    stats: Mapping[str, CandidateStats] = (
        recent.snapshot() if isinstance(recent, RecentStats) else (recent or {})
    )
    routes: list[dict[str, Any]] = []
    candidates: dict[str, dict[str, Any]] = {}
    for name in policy.route_names:
        route = policy.routes[name]
        entry_route: dict[str, Any] = {
            "name": name,
            "aliases": list(route.aliases),
            "chain": [c.key for c in route.chain],
        }
        if route.task_chains:
            entry_route["tasks"] = {t: [c.key for c in ch] for t, ch in route.task_chains.items()}
        routes.append(entry_route)
        # Every candidate the route may send to: task chains and an auto route's pool as well.
        for c in route.candidates:
            entry = candidates.get(c.key)
            if entry is None:
                breaker = breakers.get(c.key)
                if breaker is not None:
                    breaker.pop("key", None)
                probe = probes.get(c.key)
                if probe is not None:
                    probe.pop("key", None)
                entry = candidates[c.key] = {
                    "key": c.key,
                    "provider": c.provider,
                    "region": c.region,
                    "model": c.model,
                    "routes": [],
                    "breaker": breaker,
                    "probe": probe,
                    "recent": dict(stats[c.key]) if c.key in stats else None,
                }
            entry["routes"].append(name)
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "policy": {
            "version": policy.version,
            "source": policy.source,
            "routes": len(policy.route_names),
        },
        "inflight": inflight,
        "routes": routes,
        "candidates": list(candidates.values()),
    }


# -- rendering -----------------------------------------------------------------------------------
#
# Fits 80 columns: the routes are listed above the table (a route column would take a third of
# the width), states are short words, and the last error is cut to what is left.

_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _breaker_cell(breaker: Mapping[str, Any] | None) -> Text:
    if not breaker:
        return Text("-", style="dim")
    state = str(breaker.get("state", "?"))
    text = Text(state.replace("_", "-"), style=_BREAKER_STYLE.get(state, ""))
    reopen = breaker.get("reopen_in_seconds")
    if state == "open" and isinstance(reopen, int | float):
        text.append(f" {reopen:.0f}s", style="dim")
    return text


def _probe_cell(probe: Mapping[str, Any] | None) -> Text:
    """``/admin/status`` probe rows carry ``ok``: True, False, or None before the first probe."""
    if not probe:
        return Text("-", style="dim")
    ok = probe.get("ok")
    if ok is None:
        return Text("pending", style="dim")
    if ok:
        return Text("ok", style="green")
    streak = probe.get("fail_streak")
    text = Text("failing", style="bold red")
    if isinstance(streak, int) and streak > 1:
        text.append(f" x{streak}", style="dim")
    return text


def _ms(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "-"


def _header(status: Mapping[str, Any]) -> Text:
    policy = status.get("policy", {})
    text = Text.assemble(
        ("policy ", "bold"),
        (str(policy.get("version", "?")), "cyan"),
        f" ({policy.get('source', '?')}, {policy.get('routes', 0)} routes)  ",
        ("in flight ", "bold"),
        str(status.get("inflight", 0)),
    )
    if status.get("draining"):
        text.append("  DRAINING (shutting down)", style="bold yellow")
    return text


def _reload_lines(reload: Mapping[str, Any] | None) -> list[Text]:
    """The reloader's counts, and the rejected file's problems while it is rejected (the last
    good policy serving meanwhile)."""
    if not reload:
        return []
    counts = reload.get("counts") or {}
    line = Text.assemble(
        ("reload ", "bold"),
        f"{'watching' if reload.get('watching') else 'not watching'}; applied "
        f"{counts.get('applied', 0)}, rejected {counts.get('rejected', 0)}",
    )
    lines = [line]
    error = reload.get("last_error")
    if error:
        problems = error.get("problems") or []
        lines.append(
            Text(
                f"REJECTED {error.get('at', '')}: {len(problems)} problem(s) in the file; "
                f"{error.get('previous_version', '?')} keeps serving",
                style="bold red",
            )
        )
        for problem in problems[:5]:
            lines.append(Text(f"  {problem.get('text', '')}", style="red"))
        if len(problems) > 5:
            lines.append(Text(f"  ... and {len(problems) - 5} more", style="red"))
    return lines


def _routes_lines(status: Mapping[str, Any], width: int) -> list[Text]:
    """One route a line (wrapped with a hanging indent): its name, aliases and chain."""
    import textwrap

    lines = []
    for route in status.get("routes", []):
        aliases = route.get("aliases") or []
        name = str(route.get("name", "?")) + (f" ({', '.join(aliases)})" if aliases else "")
        texts = [f"{name}: " + " > ".join(str(key) for key in route.get("chain", []))]
        for task, chain in (route.get("tasks") or {}).items():
            texts.append(f"  task {task}: " + " > ".join(str(key) for key in chain))
        for text in texts:
            indent = "  " + " " * (len(text) - len(text.lstrip()))
            wrapped = textwrap.wrap(
                text.lstrip(),
                width=max(width, 20),
                initial_indent=indent,
                subsequent_indent=indent + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            lines += [Text(line) for line in wrapped]
    return lines


_HEADERS = ("candidate", "breaker", "probe", "reqs", "err%", "p50/p95 ms", "last error")
_RIGHT = frozenset({3, 4, 5})  # numbers are right-aligned
_GAP = 2
_MIN_LAST_ERROR = 12


def _row_cells(c: Mapping[str, Any]) -> list[Text]:
    recent = c.get("recent") or {}
    rate = recent.get("error_rate")
    rate_text = (
        Text(f"{rate * 100:.1f}", style="red" if rate >= 0.05 else "")
        if isinstance(rate, int | float) and recent.get("requests")
        else Text("-", style="dim")
    )
    return [
        Text(str(c.get("key", "?"))),
        _breaker_cell(c.get("breaker")),
        _probe_cell(c.get("probe")),
        Text(str(recent.get("requests", 0))),
        rate_text,
        Text(f"{_ms(recent.get('p50_ms'))}/{_ms(recent.get('p95_ms'))}"),
        Text(str(recent.get("last_error") or ""), style="red"),
    ]


def _cut(text: Text, width: int) -> Text:
    if text.cell_len <= width:
        return text
    cut = text.copy()
    cut.truncate(max(width - 1, 0))
    cut.append("…")
    return cut


def _line(cells: list[Text], widths: list[int]) -> Text:
    line = Text()
    for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        if i:
            line.append(" " * _GAP)
        cell = _cut(cell, width)
        pad = " " * (width - cell.cell_len)
        if i in _RIGHT:
            line.append(pad)
            line.append_text(cell)
        elif i < len(cells) - 1:
            line.append_text(cell)
            line.append(pad)
        else:
            line.append_text(cell)  # the last column: no trailing spaces
    line.rstrip()
    return line


def _table(candidates: list[Mapping[str, Any]], width: int) -> list[Text]:
    """The candidates as aligned columns within ``width``: every column as wide as its widest
    cell, the key whole; when the last error does not fit beside a row it goes on a line of its
    own under it (and a key too long for any column gets a line of its own above its row)."""
    rows = [_row_cells(c) for c in candidates]
    widths = [
        max([len(_HEADERS[i])] + [row[i].cell_len for row in rows]) for i in range(len(_HEADERS))
    ]
    middle = sum(widths[1:6]) + _GAP * 5
    widths[0] = max(len(_HEADERS[0]), min(widths[0], width - middle - _GAP))
    room = width - widths[0] - middle - _GAP
    inline_errors = room >= _MIN_LAST_ERROR or not any(row[6].plain for row in rows)
    shown = 7 if inline_errors else 6
    widths[6] = max(len(_HEADERS[6]), min(widths[6], room))
    header = _line([Text(h, style="bold") for h in _HEADERS[:shown]], widths[:shown])
    lines = [header, Text("-" * min(width, header.cell_len), style="dim")]
    for row in rows:
        if row[0].cell_len > widths[0]:
            lines.append(row[0])
            row = [Text(""), *row[1:]]
        lines.append(_line(row[:shown], widths[:shown]))
        if not inline_errors and row[6].plain:
            lines.append(_cut(Text.assemble("    last error: ", row[6]), width))
    return lines


def status_renderable(status: Mapping[str, Any], width: int = 80) -> Group:
    """The whole view for a terminal ``width`` columns wide."""
    parts: list[Text] = [_header(status), *_reload_lines(status.get("reload"))]
    parts += [Text("routes", style="bold"), *_routes_lines(status, width)]
    parts += _table(list(status.get("candidates", [])), width)
    return Group(*parts)


def render_status(status: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(status_renderable(status, console.width))


def render_status_text(status: Mapping[str, Any], width: int = 80) -> str:
    """The view as plain text (tests, logs)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(status_renderable(status, width))
    return capture.get()


def fetch_status(url: str, token: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """GET ``{url}/admin/status`` (blocking; for the CLI), with the admin token if given."""
    import urllib.request

    import orjson

    target = url.rstrip("/") + "/admin/status"
    request = urllib.request.Request(target)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = orjson.loads(response.read())
    if not isinstance(data, dict):
        raise ValueError(f"{target} did not answer a JSON object")
    return data


def _read(url: str) -> dict[str, Any] | str:
    """The status, or why it could not be read."""
    import os
    import urllib.error

    try:
        return fetch_status(url, os.environ.get("EDGEPROXY_ADMIN_TOKEN") or None)
    except urllib.error.HTTPError as exc:
        hint = " (set EDGEPROXY_ADMIN_TOKEN)" if exc.code in (401, 403) else ""
        return f"cannot read {url}/admin/status: HTTP {exc.code}{hint}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot read {url}/admin/status: {reason}"


def status_command(
    url: str,
    *,
    as_json: bool = False,
    watch: float | None = None,
    console: Console | None = None,
) -> int:
    """``edgeproxy status``: 0 when the proxy answered, 2 when it could not be reached.
    ``watch``: redraw every that many seconds until Ctrl-C (then 0)."""
    import sys

    import orjson

    if watch is not None:
        return _watch(url, max(watch, 0.2), console or Console())
    status = _read(url)
    if isinstance(status, str):
        print(f"edgeproxy status: {status}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render_status(status, console)
    return 0


def _watch(url: str, every: float, console: Console) -> int:
    import time

    from rich.live import Live

    def view() -> Group | Text:
        status = _read(url)
        stamp = time.strftime("%H:%M:%S")
        if isinstance(status, str):
            return Text(f"{stamp}  {status}", style="bold red")
        return Group(
            Text(f"{stamp}  every {every:g} s, Ctrl-C to stop", style="dim"),
            status_renderable(status, console.width),
        )

    try:
        if not console.is_terminal:  # a pipe or a file: one view after another
            while True:
                console.print(view())
                console.print()
                time.sleep(every)
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return 0
