"""/admin/status JSON, the rolling stats behind it, and the `edgeproxy status` table."""

from __future__ import annotations

import asyncio
import io

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console
from test_telemetry_support import BETA, CANARY_KEY, EU, US, policy

from edgeproxy.clock import FakeClock
from edgeproxy.telemetry.recent import RecentStats
from edgeproxy.telemetry.status import build_status, render_status_text, status_command


def recent() -> RecentStats:
    clock = FakeClock()
    stats = RecentStats(window=60, clock=clock)
    for i in range(19):
        stats.record(US.key, True, 0.1 + i * 0.01)
    stats.record(US.key, False, 2.0, "server_error")
    stats.record(EU.key, True, 0.3)
    return stats


def status_doc() -> dict[str, object]:
    return build_status(
        policy(),
        [{"key": US.key, "state": "open", "reason": "5 failures", "reopen_in_seconds": 12.0}],
        {EU.key: {"healthy": False, "detail": "probe timed out"}, BETA.key: {"healthy": True}},
        inflight=3,
        recent=recent(),
    )


def test_build_status_shape() -> None:
    doc = status_doc()
    assert doc["schema"] == 1 and doc["inflight"] == 3
    assert doc["policy"] == {"version": "v1abc", "source": "policies/test.yaml", "routes": 1}
    assert doc["routes"] == [
        {"name": "gpt-4o-mini", "aliases": ["default"], "chain": [US.key, EU.key, BETA.key]}
    ]
    cands = {c["key"]: c for c in doc["candidates"]}  # type: ignore[attr-defined]
    assert list(cands) == [US.key, EU.key, BETA.key]
    us = cands[US.key]
    assert us["breaker"]["state"] == "open" and "key" not in us["breaker"]
    assert us["probe"] is None and us["routes"] == ["gpt-4o-mini"]
    assert us["recent"]["requests"] == 20 and us["recent"]["errors"] == 1
    assert us["recent"]["error_rate"] == 0.05 and us["recent"]["last_error"] == "server_error"
    assert us["recent"]["p50_ms"] == 200.0 and us["recent"]["p95_ms"] == 280.0
    assert cands[EU.key]["probe"] == {"healthy": False, "detail": "probe timed out"}
    assert cands[BETA.key]["recent"] is None and cands[BETA.key]["breaker"] is None
    text = orjson.dumps(doc).decode()
    assert CANARY_KEY not in text and "Authorization" not in text


def test_recent_window_drops_old_samples() -> None:
    clock = FakeClock()
    stats = RecentStats(window=10, max_samples=3, clock=clock)
    stats.record("a", False, 1.0, "reset")
    clock._now += 11
    for _ in range(5):
        stats.record("a", True, 0.5)
    snap = stats.snapshot()["a"]
    assert snap["requests"] == 3 and snap["errors"] == 0 and snap["p95_ms"] == 500.0


def test_status_table_renders() -> None:
    text = render_status_text(status_doc(), width=140)
    assert "v1abc" in text and "in flight 3" in text
    lines = {line.split()[1]: line for line in text.splitlines() if "│" in line and "/" in line}
    assert "open (12s)" in lines[US.key] and "5.0" in lines[US.key] and "200 ms" in lines[US.key]
    assert "unhealthy" in lines[EU.key]
    assert "healthy" in lines[BETA.key] and "-" in lines[BETA.key]


async def test_status_command_against_a_loopback_server() -> None:
    doc = status_doc()

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/admin/status", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        out = io.StringIO()
        console = Console(file=out, width=140, color_system=None)
        url = str(server.make_url("")).rstrip("/")
        code = await asyncio.to_thread(status_command, url, console=console)
        assert code == 0 and "alpha/us-east/gpt-4o-mini" in out.getvalue()
    finally:
        await server.close()
    code = await asyncio.to_thread(status_command, url)  # the server is gone
    assert code == 2
