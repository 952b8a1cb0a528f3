"""``GET /admin/debug/runtime`` on a real proxy: the facts the soak reads to tell a leak from a
pool doing its job (asyncio tasks, open fds, RSS, the upstream pool's idle connections)."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from edgeproxy.server.runner import ProxyServer
from edgeproxy.telemetry import runtime as runtime_module
from fixtures.reloadkit import wait_until
from harness import LoopThread, Stack


def runtime(stack: Stack) -> dict[str, Any]:
    response = stack.http.get("/admin/debug/runtime")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    return data


def test_runtime_reports_tasks_fds_memory_and_pool(stack: Stack) -> None:
    data = runtime(stack)
    assert isinstance(data["asyncio_tasks"], int) and data["asyncio_tasks"] >= 1
    # This very handler runs in a task; the per-coroutine view counts it.
    by_coroutine = data["asyncio_tasks_by_coroutine"]
    assert by_coroutine and sum(by_coroutine.values()) >= 1
    assert sum(by_coroutine.values()) <= data["asyncio_tasks"]
    assert data["allocated_blocks"] > 0
    assert data["uptime_seconds"] >= 0
    assert data["threads"] >= 1
    assert len(data["gc"]["counts"]) == 3 and len(data["gc"]["collections"]) == 3
    assert data["requests_in_flight"] == 0
    assert data["cache"]["in_flight"] == 0
    # The proxy runs in this process (a loop thread): tracemalloc is on only if the test run set it.
    if not tracemalloc.is_tracing():
        assert data["tracemalloc"] is None  # unless PYTHONTRACEMALLOC is set
    if sys.platform == "linux":
        assert data["open_fds"] > 0
        assert data["rss_bytes"] > 2**20
        assert data["max_rss_bytes"] > 2**20  # the kernel updates its high-water mark lazily
    pool = data["upstream_pool"]
    # Health probes may already have left keep-alive connections to the sims in the pool.
    assert isinstance(pool["idle"], int) and isinstance(pool["in_use"], int)
    assert pool["idle"] == sum(pool["idle_by_host"].values())
    assert "sk-alpha-secret" not in stack.http.get("/admin/debug/runtime").text


def test_runtime_lists_the_top_allocation_sites_when_tracemalloc_is_on(stack: Stack) -> None:
    # The proxy runs in this process, so tracing here traces it; off again after one request.
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        response = stack.http.get("/admin/debug/runtime", params={"tracemalloc": "top"})
    finally:
        if not was_tracing:
            tracemalloc.stop()
        # The comparison base of the next ``?tracemalloc=top``: none left over from this test.
        runtime_module._last_snapshot.clear()
    assert response.status_code == 200, response.text
    traced = response.json()["tracemalloc"]
    assert traced["traced_bytes"] > 0 and traced["peak_bytes"] >= traced["traced_bytes"]
    top = traced["top_growth"]
    assert 1 <= len(top) <= 15
    assert all({"site", "size_diff", "size", "count_diff"} <= set(site) for site in top)
    diffs = [site["size_diff"] for site in top]
    assert diffs == sorted(diffs, reverse=True)


def test_pool_keeps_idle_connections_and_tasks_come_back(stack: Stack) -> None:
    before = runtime(stack)
    sim_port = stack.cluster.sims["alpha_one"].port
    with httpx.Client(timeout=10) as http:
        client = stack.client(http_client=http)
        for _ in range(5):
            text = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                if chunk.choices
            )
            assert text
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    after = runtime(stack)
    pool = after["upstream_pool"]
    # Sequential requests reuse one keep-alive connection to the first candidate, kept idle.
    assert pool["in_use"] == 0
    assert pool["idle"] >= 1
    assert pool["idle_by_host"].get(f"127.0.0.1:{sim_port}", 0) >= 1

    # The sims run on the same event loop, one server task per kept-alive connection from the
    # pool; apart from those, the task count is back where it was once the client has gone.
    def back() -> bool:
        now = runtime(stack)
        return now["asyncio_tasks"] - now["upstream_pool"]["idle"] <= before["asyncio_tasks"]

    wait_until(back, timeout=10, what="asyncio tasks back to the baseline")


def test_runtime_needs_the_admin_token_when_one_is_set(
    make_token_proxy: Callable[[str], ProxyServer],
) -> None:
    proxy = make_token_proxy("s3cret-runtime")
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = http.get("/admin/debug/runtime", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_admin_token"
        response = http.get(
            "/admin/debug/runtime", headers={"Authorization": "Bearer s3cret-runtime"}
        )
        assert response.status_code == 200
        assert response.json()["asyncio_tasks"] >= 1


@pytest.fixture
def make_token_proxy(
    stack: Stack, loop_thread: LoopThread
) -> Iterator[Callable[[str], ProxyServer]]:
    """A second proxy on the stack's policy, with an admin token."""
    proxies: list[ProxyServer] = []

    def make(token: str) -> ProxyServer:
        proxy = ProxyServer(stack.policy, port=0, admin_token=token)
        loop_thread.run(proxy.start())
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        loop_thread.run(proxy.stop())
