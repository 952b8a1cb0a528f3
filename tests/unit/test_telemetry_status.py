"""/admin/status JSON, the rolling stats behind it, and the `edgeproxy status` table."""

from __future__ import annotations

import asyncio
import io
from types import MappingProxyType

import orjson
import pytest
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


def probe_row(
    key: str, ok: bool | None, detail: str | None, fail_streak: int = 0
) -> dict[str, object]:
    """A row as ``ProbeScheduler.snapshot()`` makes it (admin.py indexes them by key)."""
    return {
        "url": "http://127.0.0.1:9/v1/models",
        "mode": "models",
        "keys": [key],
        "ok": ok,
        "detail": detail,
        "fail_streak": fail_streak,
        "probes_total": 4,
        "next_in_seconds": 3.5,
    }


def status_doc() -> dict[str, object]:
    return build_status(
        policy(),
        [{"key": US.key, "state": "open", "reason": "5 failures", "reopen_in_seconds": 12.0}],
        {
            US.key: probe_row(US.key, None, None),
            EU.key: probe_row(EU.key, False, "probe timed out", fail_streak=3),
            BETA.key: probe_row(BETA.key, True, "HTTP 200"),
        },
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
    assert us["probe"]["ok"] is None and us["routes"] == ["gpt-4o-mini"]
    assert us["recent"]["requests"] == 20 and us["recent"]["errors"] == 1
    assert us["recent"]["error_rate"] == 0.05 and us["recent"]["last_error"] == "server_error"
    assert us["recent"]["p50_ms"] == 200.0 and us["recent"]["p95_ms"] == 280.0
    assert cands[EU.key]["probe"]["ok"] is False and "key" not in cands[EU.key]["probe"]
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


def _rows(text: str) -> dict[str, str]:
    return {
        line.split()[0]: line
        for line in text.splitlines()
        if line.strip().startswith(("alpha/", "beta/"))
    }


def test_status_table_renders_probe_states_as_the_prober_reports_them() -> None:
    text = render_status_text(status_doc())
    assert "v1abc" in text and "in flight 3" in text
    rows = _rows(text)
    assert "open 12s" in rows[US.key] and "5.0" in rows[US.key] and "200" in rows[US.key]
    assert "pending" in rows[US.key]  # not probed yet: neither ok nor failing
    assert "failing x3" in rows[EU.key]
    assert " ok " in rows[BETA.key] and "failing" not in rows[BETA.key]


def test_status_fits_80_columns_with_long_names() -> None:
    doc = status_doc()
    long_key = "azure-openai/sweden-central/gpt-4o-mini-2024-07-18"
    doc["candidates"].append(  # type: ignore[attr-defined]
        {
            "key": long_key,
            "breaker": {"state": "half_open"},
            "probe": probe_row(long_key, True, "HTTP 200"),
            "recent": {
                "requests": 12345,
                "errors": 3,
                "error_rate": 0.0002,
                "p50_ms": 1234.5,
                "p95_ms": 98765.4,
                "last_error": "timeout: no first token within 30 s",
            },
        }
    )
    text = render_status_text(doc, width=80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for key in (US.key, EU.key, BETA.key):
        assert key in text  # whole, not cut
    assert "half-open" in text and "12345" in text


def test_a_rejected_reload_is_shown_with_its_problems() -> None:
    doc = status_doc()
    doc["reload"] = {
        "watching": True,
        "counts": {"applied": 2, "rejected": 1, "unchanged": 0, "by_trigger": {"watch": 3}},
        "last_error": {
            "outcome": "rejected",
            "at": "2026-12-05T10:00:00.000Z",
            "version": "v1abc",
            "previous_version": "v1abc",
            "problems": [{"text": "policy.yaml:9:5: routes.m.max_atempts: unknown key"}],
        },
    }
    text = render_status_text(doc)
    assert "applied 2, rejected 1" in text
    assert "REJECTED 2026-12-05T10:00:00.000Z" in text and "v1abc keeps serving" in text
    assert "policy.yaml:9:5: routes.m.max_atempts: unknown key" in text
    doc["reload"]["last_error"] = None  # type: ignore[index]
    assert "REJECTED" not in render_status_text(doc)


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


async def test_watch_redraws_until_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = status_doc()
    served = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/admin/status", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    naps = 0

    def nap(seconds: float) -> None:  # the watch's wait between two views; Ctrl-C on the third
        nonlocal naps
        naps += 1
        if naps == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", nap)
    try:
        out = io.StringIO()
        console = Console(file=out, width=80, color_system=None)  # not a terminal: views in turn
        url = str(server.make_url("")).rstrip("/")
        code = await asyncio.to_thread(status_command, url, watch=1.0, console=console)
    finally:
        await server.close()
    assert code == 0 and served == 3
    assert out.getvalue().count("every 1 s, Ctrl-C to stop") == 3
    assert out.getvalue().count("alpha/us-east/gpt-4o-mini  open 12s") == 3


def test_a_routes_task_chains_and_their_candidates_are_shown() -> None:
    import dataclasses

    base = policy()
    route = dataclasses.replace(
        base.routes["gpt-4o-mini"],
        chain=(US, EU),
        task_chains=MappingProxyType({"extraction": (BETA, EU)}),
    )
    doc = build_status(
        dataclasses.replace(base, routes=MappingProxyType({"gpt-4o-mini": route})),
        [{"key": BETA.key, "state": "open", "reason": "5 failures"}],
        {},
        inflight=0,
        recent=None,
    )
    assert doc["routes"] == [
        {
            "name": "gpt-4o-mini",
            "aliases": ["default"],
            "chain": [US.key, EU.key],
            "tasks": {"extraction": [BETA.key, EU.key]},
        }
    ]
    # BETA serves only the task's chain: its breaker is still reported.
    cands = {c["key"]: c for c in doc["candidates"]}  # type: ignore[attr-defined]
    assert list(cands) == [US.key, EU.key, BETA.key]
    assert cands[BETA.key]["breaker"]["state"] == "open"
    text = render_status_text(doc, width=80)
    assert f"task extraction: {BETA.key} > {EU.key}" in text
