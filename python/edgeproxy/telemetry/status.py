"""``GET /admin/status``: the JSON shape, and the terminal table ``edgeproxy status`` draws of it.

Shape (``STATUS_SCHEMA_VERSION`` 1)::

    {
      "schema": 1,
      "policy": {"version": "ab12cd34", "source": "policies/default.yaml", "routes": 2},
      "inflight": 3,
      "routes": [{"name": "gpt-4o-mini", "aliases": ["default"], "chain": ["alpha/us-east/…", …]}],
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

from rich import box
from rich.console import Console, Group
from rich.table import Table
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
        routes.append(
            {"name": name, "aliases": list(route.aliases), "chain": [c.key for c in route.chain]}
        )
        for c in route.chain:
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
        lines.append(
            Text(
                f"REJECTED {error.get('at', '')}: the file on disk is not valid; "
                f"{error.get('previous_version', '?')} keeps serving",
                style="bold red",
            )
        )
        problems = error.get("problems") or []
        for problem in problems[:5]:
            lines.append(Text(f"  {problem.get('text', '')}", style="red"))
        if len(problems) > 5:
            lines.append(Text(f"  ... and {len(problems) - 5} more", style="red"))
    return lines


def _routes_lines(status: Mapping[str, Any]) -> list[Text]:
    lines = []
    for route in status.get("routes", []):
        aliases = route.get("aliases") or []
        name = str(route.get("name", "?")) + (f" ({', '.join(aliases)})" if aliases else "")
        lines.append(Text.assemble(("  " + name, "bold"), ": ", " > ".join(route.get("chain", []))))
    return lines


def status_renderable(status: Mapping[str, Any]) -> Group:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, title_justify="left")
    table.add_column("candidate", overflow="fold", ratio=3)
    table.add_column("breaker", no_wrap=True)
    table.add_column("probe", no_wrap=True)
    table.add_column("reqs", justify="right", no_wrap=True)
    table.add_column("err%", justify="right", no_wrap=True)
    table.add_column("p50", justify="right", no_wrap=True)
    table.add_column("p95", justify="right", no_wrap=True)
    table.add_column("last error", overflow="ellipsis", no_wrap=True, ratio=2)
    for c in status.get("candidates", []):
        recent = c.get("recent") or {}
        rate = recent.get("error_rate")
        rate_text = (
            Text(f"{rate * 100:.1f}", style="red" if rate >= 0.05 else "")
            if isinstance(rate, int | float) and recent.get("requests")
            else Text("-", style="dim")
        )
        table.add_row(
            str(c.get("key", "?")),
            _breaker_cell(c.get("breaker")),
            _probe_cell(c.get("probe")),
            str(recent.get("requests", 0)),
            rate_text,
            _ms(recent.get("p50_ms")),
            _ms(recent.get("p95_ms")),
            str(recent.get("last_error") or ""),
        )
    parts: list[Text | Table] = [_header(status), *_reload_lines(status.get("reload"))]
    parts += [Text("routes", style="bold"), *_routes_lines(status), table]
    return Group(*parts)


def render_status(status: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(status_renderable(status))


def render_status_text(status: Mapping[str, Any], width: int = 80) -> str:
    """The view as plain text (tests, logs)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(status_renderable(status))
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
            status_renderable(status),
        )

    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return 0
