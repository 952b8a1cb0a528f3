"""Connection-level attacks against the real proxy on real sockets (issue 15, items 7 and 13):
idle and slow-header connections, more connections than the process has descriptors for, DNS
rebinding through an unchecked ``Host``, and an unauthenticated ``/metrics``.

Timeouts are set short here; the tests wait for an event (a close, an answer) with a generous
upper bound and never assert how fast anything was.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeproxy.policy import load_policy_text
from edgeproxy.server.connections import ConnectionSettings, default_max_connections
from edgeproxy.server.runner import ProxyServer
from fixtures.rawhttp import (
    Trickler,
    closed_by_peer,
    connect,
    read_response,
    request_bytes,
    roundtrip,
)
from fixtures.reloadkit import wait_until
from harness import LoopThread

ROOT = Path(__file__).resolve().parents[2]
# Nothing is sent upstream in these tests: the proxy's own endpoints are enough.
POLICY = """
version: 1
health_check: {enabled: false}
providers:
  p:
    kind: openai
    api_key: sk-unused
    regions: {r: {base_url: "http://127.0.0.1:9/v1"}}
    models: {m: {}}
routes:
  m:
    chain: [p/r/m]
"""
GET_HEALTHZ = request_bytes("GET", "/healthz")


@pytest.fixture
def make_proxy(loop_thread: LoopThread) -> Iterator[Callable[..., ProxyServer]]:
    proxies: list[ProxyServer] = []

    def make(policy: str = POLICY, **kwargs: Any) -> ProxyServer:
        proxy = ProxyServer(load_policy_text(policy, "edge.yaml", {}), port=0, **kwargs)
        loop_thread.run(proxy.start())
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        loop_thread.run(proxy.stop())


def _settings(**kwargs: Any) -> ConnectionSettings:
    values: dict[str, Any] = {"keepalive_timeout": 60.0, "header_timeout": 60.0}
    values.update(kwargs)
    return ConnectionSettings(**values)


def _read_to_close(sock: socket.socket, within: float = 10.0) -> bytes:
    """Everything the proxy sends until it closes (fails if it is still open after ``within``)."""
    sock.settimeout(within)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- keep-alive and header-read timeouts --------------------------------------------------------


def test_an_idle_keepalive_connection_is_closed(make_proxy: Callable[..., ProxyServer]) -> None:
    proxy = make_proxy(connections=_settings(keepalive_timeout=1.5))
    with connect(proxy.port) as sock:
        for _ in range(2):  # the connection is kept alive between requests ...
            sock.sendall(GET_HEALTHZ)
            assert read_response(sock).status == 200
        assert closed_by_peer(sock)  # ... and closed once it sits idle


def test_half_a_request_head_gets_a_408_and_a_close(make_proxy: Callable[..., ProxyServer]) -> None:
    proxy = make_proxy(connections=_settings(header_timeout=0.5))
    with connect(proxy.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        response = read_response(sock)
        assert response.status == 408
        assert response.json()["error"]["code"] == "request_timeout"
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
        assert closed_by_peer(sock)
    assert proxy.connections.header_timeouts_total == 1


def test_a_head_trickled_byte_by_byte_is_cut_too(make_proxy: Callable[..., ProxyServer]) -> None:
    # Bytes keep coming, but the head never ends: the timer runs from its first byte.
    proxy = make_proxy(connections=_settings(header_timeout=0.5))
    slow = Trickler(proxy.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", every=0.05)
    assert slow.response().status == 408


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = make_proxy(connections=_settings(header_timeout=0.5))
    with connect(proxy.port) as sock:
        assert _read_to_close(sock) == b""  # nothing to answer: just closed


def test_the_header_timeout_applies_to_the_next_request_on_a_kept_alive_connection(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = make_proxy(connections=_settings(header_timeout=1.0))
    with connect(proxy.port) as sock:
        sock.sendall(GET_HEALTHZ)
        assert read_response(sock).status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert read_response(sock).status == 408
        assert closed_by_peer(sock)


def test_a_complete_head_is_not_cut_while_its_request_runs(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    # The head arrives in pieces within the timeout; the request then runs past the header
    # timeout (its body is late) and is judged by the body's own limit, not the head's.
    proxy = make_proxy(connections=_settings(header_timeout=1.0))
    with connect(proxy.port) as sock:
        head = request_bytes("POST", "/v1/messages/count_tokens", b"")
        head = head.replace(b"Content-Length: 0", b"Content-Length: 64")
        sock.sendall(head[:10])
        sock.sendall(head[10:])
        wait_until(lambda: proxy.state.telemetry.inflight == 1, what="the request to start")
        assert not closed_by_peer(sock, within=1.5)  # well past the header timeout
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        sock.sendall(body.ljust(64))
        response = read_response(sock)
    assert response.status == 200, response.body
    assert response.json()["input_tokens"] > 0
    assert proxy.connections.header_timeouts_total == 0


# -- the connection cap -------------------------------------------------------------------------


def test_idle_sockets_cannot_lock_everyone_out(
    make_proxy: Callable[..., ProxyServer], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 15 item 7: idle sockets up to the fd limit locked every client out, silently. Now a
    # new connection at the cap closes the longest-idle one (logged and counted), and the header
    # timeout frees the rest.
    caplog.set_level(logging.WARNING, logger="edgeproxy.server")
    proxy = make_proxy(connections=_settings(header_timeout=5.0, max_connections=20))
    idle = [connect(proxy.port) for _ in range(20)]
    try:
        wait_until(lambda: proxy.connections.open == 20, what="20 idle connections")
        assert roundtrip(proxy.port, GET_HEALTHZ).status == 200  # served, at the cap
        assert _read_to_close(idle[0]) == b""  # the oldest idle one made room, without a word
        assert any("near the limit" in r.getMessage() for r in caplog.records)
        assert any("at the limit" in r.getMessage() for r in caplog.records)
        wait_until(lambda: proxy.connections.open == 0, what="idle connections cut")
        assert all(_read_to_close(sock) == b"" for sock in idle[1:])
    finally:
        for sock in idle:
            sock.close()
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert "edgeproxy_client_connections_evicted_total 1" in metrics
    assert "edgeproxy_client_connections_refused_total 0" in metrics
    assert "edgeproxy_client_connections_header_timeouts_total 19" in metrics
    assert "edgeproxy_client_connections_limit 20" in metrics


def test_slow_heads_and_bodies_make_room_for_a_new_client(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = make_proxy(connections=_settings(max_connections=3))
    head = request_bytes("POST", "/v1/chat/completions", b'{"model": ', content_length=1000)
    slow = [
        Trickler(proxy.port, head, every=0.1),  # the oldest: a body that trickles
        Trickler(proxy.port, b"GET /healthz HTTP/1.1\r\nX-Slow: ", every=0.1),  # a slow head
        Trickler(proxy.port, head, every=0.1),
    ]
    try:
        wait_until(lambda: proxy.connections.open == 3, what="3 slow connections")
        wait_until(lambda: proxy.state.telemetry.inflight == 2, what="both bodies being read")
        assert roundtrip(proxy.port, GET_HEALTHZ).status == 200
        evicted = slow[0].response()
        assert evicted.status == 408 and evicted.json()["error"]["code"] == "request_timeout"
        wait_until(lambda: proxy.connections.open == 2, what="the served connection gone")
        with connect(proxy.port):  # at the cap again, with a connection younger than the rest
            wait_until(lambda: proxy.connections.open == 3, what="the cap reached again")
            assert roundtrip(proxy.port, GET_HEALTHZ).status == 200
            assert slow[1].response().status == 408  # the slow head, next in line
    finally:
        for trickler in slow:
            trickler.close()
    assert proxy.connections.evicted_total == 2


def test_when_every_connection_is_serving_a_new_one_gets_a_503(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    # Two requests wait on an upstream that accepts and never answers: both connections are
    # serving, nothing may be closed for a third.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        port = black_hole.getsockname()[1]
        proxy = make_proxy(
            connections=_settings(max_connections=2),
            policy=POLICY.replace("http://127.0.0.1:9/v1", f"http://127.0.0.1:{port}/v1"),
        )
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        busy = [connect(proxy.port) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(request_bytes("POST", "/v1/chat/completions", body))
            wait_until(lambda: proxy.state.telemetry.inflight == 2, what="2 requests upstream")
            refused = roundtrip(proxy.port, GET_HEALTHZ)
            assert refused.status == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "too_many_connections"
            assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]
        finally:
            for sock in busy:
                sock.close()
        wait_until(lambda: proxy.connections.open == 0, what="the busy connections gone")
        assert roundtrip(proxy.port, GET_HEALTHZ).status == 200
        assert proxy.connections.refused_total == 1 and proxy.connections.evicted_total == 0


def test_the_default_cap_is_half_the_open_file_limit(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    proxy = make_proxy()
    assert proxy.connections.limit == default_max_connections() == max(16, soft // 2)
    settings = proxy.connections.settings
    assert (settings.keepalive_timeout, settings.header_timeout) == (75.0, 10.0)


def test_runtime_reports_the_client_connections(make_proxy: Callable[..., ProxyServer]) -> None:
    proxy = make_proxy(connections=_settings(max_connections=50))
    data = httpx.get(f"{proxy.url}/admin/debug/runtime").json()["client_connections"]
    assert data["max_connections"] == 50 and data["open"] >= 1


# -- Host allow-list (DNS rebinding) ------------------------------------------------------------


def _get(proxy: ProxyServer, path: str, host: str | None) -> Any:
    headers = {} if host is None else {"Host": host}
    data = request_bytes("GET", path, headers=headers)
    if host is None:
        data = data.replace(b"Host: 127.0.0.1\r\n", b"").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    return roundtrip(proxy.port, data)


@pytest.mark.parametrize("path", ["/admin/status", "/admin/policy", "/v1/models", "/healthz"])
def test_a_rebound_name_cannot_reach_a_loopback_proxy(
    make_proxy: Callable[..., ProxyServer], path: str
) -> None:
    proxy = make_proxy()  # loopback, no admin token: admin trusts loopback callers
    response = _get(proxy, path, "attacker.example:8080")
    assert response.status == 421
    error = response.json()["error"]
    assert error["code"] == "misdirected_request" and "attacker.example" in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


def test_a_rebound_name_gets_a_421_in_anthropic_wire(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = make_proxy()
    body = b'{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}'
    data = request_bytes("POST", "/v1/messages", body, {"Host": "attacker.example"})
    response = roundtrip(proxy.port, data)
    assert response.status == 421
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("127.0.0.1:8080", 200),
        ("localhost:1", 200),
        ("LOCALHOST.", 200),
        ("[::1]:8080", 200),
        ("127.1.2.3", 200),
        (None, 200),  # HTTP/1.0 without a Host: not a browser
        ("localhost.attacker.example", 421),
        ("127.0.0.1.nip.io", 421),
        ("0.0.0.0", 421),
        ("a:b:c", 421),
        ("[::1", 421),
        ("localhost:port", 421),
    ],
)
def test_loopback_names_are_accepted_and_others_refused(
    make_proxy: Callable[..., ProxyServer], host: str | None, status: int
) -> None:
    proxy = make_proxy()
    assert _get(proxy, "/admin/status", host).status == status


def test_the_allow_list_names_service_names(make_proxy: Callable[..., ProxyServer]) -> None:
    proxy = make_proxy(allowed_hosts="edgeproxy, edgeproxy.llm.svc.cluster.local")
    assert _get(proxy, "/healthz", "edgeproxy:8080").status == 200
    assert _get(proxy, "/healthz", "EDGEPROXY.llm.svc.cluster.local").status == 200
    assert _get(proxy, "/healthz", "localhost").status == 200
    assert _get(proxy, "/healthz", "attacker.example").status == 421
    anything = make_proxy(allowed_hosts="*")
    assert _get(anything, "/healthz", "attacker.example").status == 200


def test_a_proxy_bound_to_every_address_accepts_any_host_by_default(
    make_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = make_proxy(host="0.0.0.0")  # a pod reached by a service name or its IP
    assert _get(proxy, "/healthz", "10.1.2.3:8080").status == 200
    restricted = make_proxy(host="0.0.0.0", allowed_hosts="edgeproxy")
    assert _get(restricted, "/healthz", "10.1.2.3:8080").status == 421


# -- /metrics access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "authorization", "status"),
    [
        ({}, None, 200),  # no token anywhere: open, as before
        ({"admin_token": "adm"}, None, 401),  # an admin token closes /metrics too
        ({"admin_token": "adm"}, "Bearer adm", 200),
        ({"admin_token": "adm", "metrics_token": "scr"}, "Bearer scr", 200),
        ({"admin_token": "adm", "metrics_token": "scr"}, "Bearer adm", 200),
        ({"admin_token": "adm", "metrics_token": "scr"}, "Bearer nope", 401),
        ({"metrics_token": "scr"}, None, 401),
        ({"metrics_token": "scr"}, "Bearer scr", 200),
    ],
)
def test_metrics_need_a_token_when_one_is_set(
    make_proxy: Callable[..., ProxyServer],
    tokens: dict[str, str],
    authorization: str | None,
    status: int,
) -> None:
    proxy = make_proxy(**tokens)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.get(f"{proxy.url}/metrics", headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error"]["code"] == "invalid_metrics_token"
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert "edgeproxy_client_connections " in response.text


# -- the options as a user sets them ------------------------------------------------------------


def test_serve_flags_set_the_timeouts_and_the_allow_list(tmp_path: Path) -> None:
    policy = tmp_path / "edge.yaml"
    policy.write_text(POLICY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [sys.executable, "-m", "edgeproxy.cli", "serve", "--policy", str(policy)]
    argv += ["--port", str(port), "--header-timeout", "0.5", "--keepalive-timeout", "30"]
    argv += ["--max-connections", "40", "--allowed-hosts", "edgeproxy"]
    env = {**os.environ, "EDGEPROXY_METRICS_TOKEN": "scr", "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:

        def listening() -> bool:
            try:
                return roundtrip(port, GET_HEALTHZ).status == 200
            except OSError:
                return False

        wait_until(listening, timeout=30, what="edgeproxy serve listening")
        with connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert read_response(sock).status == 408
        assert _get_port(port, "edgeproxy:1").status == 200
        assert _get_port(port, "attacker.example").status == 421
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Host": "edgeproxy"})
        assert metrics.status_code == 401
        metrics = httpx.get(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer scr"}
        )
        assert "edgeproxy_client_connections_limit 40" in metrics.text
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=20)
    assert serve.returncode == 0


def _get_port(port: int, host: str) -> Any:
    return roundtrip(port, request_bytes("GET", "/healthz", headers={"Host": host}))


def test_serve_refuses_a_nonsense_timeout() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeproxy.cli", "serve", "--port", "0", "--header-timeout", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "header_timeout must be greater than zero" in result.stderr
