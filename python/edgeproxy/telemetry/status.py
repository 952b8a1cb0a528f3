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
          "probe": {"healthy": true, …} | null,
          "recent": {"requests": 40, "errors": 1, "error_rate": 0.025, "p50_ms": 210.0,
                     "p95_ms": 480.0, "last_error": "server_error"}
        }
      ]
    }
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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

_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _breaker_cell(breaker: Mapping[str, Any] | None) -> Text:
    if not breaker:
        return Text("-", style="dim")
    state = str(breaker.get("state", "?"))
    text = Text(state, style=_BREAKER_STYLE.get(state, ""))
    reopen = breaker.get("reopen_in_seconds")
    if state == "open" and isinstance(reopen, int | float):
        text.append(f" ({reopen:.0f}s)", style="dim")
    return text


def _probe_cell(probe: Mapping[str, Any] | None) -> Text:
    if not probe:
        return Text("-", style="dim")
    healthy = probe.get("healthy")
    if healthy is None:
        healthy = probe.get("status") in ("ok", "healthy", "up")
    return Text("healthy", style="green") if healthy else Text("unhealthy", style="bold red")


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "-"


def status_renderable(status: Mapping[str, Any]) -> Group:
    policy = status.get("policy", {})
    header = Text.assemble(
        ("policy ", "bold"),
        (str(policy.get("version", "?")), "cyan"),
        f"  ({policy.get('source', '?')}, {policy.get('routes', 0)} routes)   ",
        ("in flight ", "bold"),
        str(status.get("inflight", 0)),
    )
    table = Table(title="candidates", title_justify="left", expand=False)
    table.add_column("candidate", no_wrap=True)
    table.add_column("routes")
    table.add_column("breaker", no_wrap=True)
    table.add_column("probe", no_wrap=True)
    table.add_column("reqs", justify="right")
    table.add_column("err %", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("last error")
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
            ", ".join(c.get("routes", [])),
            _breaker_cell(c.get("breaker")),
            _probe_cell(c.get("probe")),
            str(recent.get("requests", 0)),
            rate_text,
            _ms(recent.get("p50_ms")),
            _ms(recent.get("p95_ms")),
            str(recent.get("last_error") or ""),
        )
    return Group(header, table)


def render_status(status: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(status_renderable(status))


def render_status_text(status: Mapping[str, Any], width: int = 120) -> str:
    """The table as plain text (tests, logs)."""
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


def status_command(url: str, *, as_json: bool = False, console: Console | None = None) -> int:
    """``edgeproxy status``: 0 when the proxy answered, 2 when it could not be reached."""
    import os
    import sys
    import urllib.error

    import orjson

    try:
        status = fetch_status(url, os.environ.get("EDGEPROXY_ADMIN_TOKEN") or None)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"edgeproxy status: cannot read {url}/admin/status: {reason}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render_status(status, console)
    return 0
