"""The lean upstream HTTP/1.1 client against scripted servers on loopback: keep-alive reuse,
body framing (length, chunked, end of connection), cuts, stale idle connections (dropped before
a byte is written; a request once written is never re-sent), unusable URLs, flow control,
header injection and the idle reaper (on a fake clock)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from edgeproxy.clock import FakeClock
from edgeproxy.upstreams import http1
from edgeproxy.upstreams.http1 import ConnectFailed, Http1Pool, UpstreamConnectionError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Scripted:
    """A raw TCP server: each connection is handed to ``handler`` with its ordinal."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


# ``pool`` (a pool with the defaults) and ``make_pool`` (any arguments) are in conftest.py: both
# close every pool they made after the test.


class Servers:
    """The ``serve`` fixture: ``await serve(handler)`` starts a scripted server;
    ``serve.answering`` the usual one. All are closed after the test."""

    def __init__(self) -> None:
        self.started: list[Scripted] = []

    async def __call__(self, handler: Handler) -> Scripted:
        scripted = Scripted(handler)
        scripted.server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0)
        self.started.append(scripted)
        return scripted

    async def answering(self, *answers: bytes, until_eof: bool = False) -> Scripted:
        """A server that reads the request (recorded in ``requests``), writes ``answers[n - 1]``
        on connection n (the last answer on any later one; none: it answers nothing) and
        drains; then it closes the connection, or with ``until_eof`` waits for the client to
        close it first (the connection stays open)."""

        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
        ) -> None:
            await server.read_request(reader)
            if answers:
                writer.write(answers[min(n, len(answers)) - 1])
                await writer.drain()
            if until_eof:
                await reader.read()

        server = await self(handler)
        return server


@pytest.fixture
async def serve() -> AsyncIterator[Servers]:
    servers = Servers()
    yield servers
    for scripted in servers.started:
        assert scripted.server is not None
        scripted.server.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given(serve, pool) -> None:
    async def handler(reader, writer, n):
        while True:
            body = await server.read_request(reader)
            writer.write(ok(b'{"echo": %d}' % len(body), b"Retry-After: 3\r\n"))

    server = await serve(handler)
    for size in (5, 7, 11):
        response = await pool.post(
            server.url, b"x" * size, {"Authorization": "Bearer k"}, connect_timeout=1
        )
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.headers["retry-after"] == "3"
        assert await response.read(1024) == b'{"echo": %d}' % size
        response.release()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer k\r\n" in first
    assert b"\r\nAccept-Encoding: identity\r\n" in first  # never a compressed answer
    assert first.endswith(b"Content-Length: 5\r\n\r\nxxxxx")


async def test_chunked_body_arrives_piece_by_piece_then_ends(serve, pool) -> None:
    go = asyncio.Event()

    async def handler(reader, writer, n):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await go.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(handler)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert pool.stats() == {"idle_by_host": {}, "in_use": 1}
    assert response.content_type == "text/event-stream"
    assert await response.readany() == b"hello"
    go.set()
    assert await response.readany() == b" world"
    assert await response.readany() == b""
    response.release()
    assert pool.idle_connections == 1
    assert pool.stats() == {"idle_by_host": {f"127.0.0.1:{server.port}": 1}, "in_use": 0}


async def test_a_body_ended_by_the_connection_is_complete_and_not_reused(serve, pool) -> None:
    server = await serve.answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert await response.read(1024) == b"until the end"
    response.release()
    assert pool.idle_connections == 0


async def test_a_cut_body_raises_instead_of_ending(serve, pool) -> None:
    server = await serve.answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    with pytest.raises(UpstreamConnectionError):
        await response.read(1024)
    response.release()
    assert pool.idle_connections == 0


async def test_a_body_over_the_limit_is_reported_longer_and_the_connection_dropped(
    serve, pool
) -> None:
    server = await serve.answering(ok(b"y" * 5000), until_eof=True)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert len(await response.read(100)) > 100
    response.release()
    assert pool.idle_connections == 0


async def test_an_idle_connection_the_upstream_closed_is_replaced_once(serve, pool) -> None:
    # keep-alive was promised, but the upstream closes the idle connection after one answer
    server = await serve.answering(ok(b"{}"))
    for _ in range(3):
        response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
        assert await response.read(100) == b"{}"
        response.release()
    assert len(server.requests) == 3
    assert server.connections == 3  # one answer per connection, none opened in vain


async def test_a_fresh_connection_closed_before_the_answer_is_an_error(serve, pool) -> None:
    server = await serve.answering()
    with pytest.raises(UpstreamConnectionError):
        await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert server.connections == 1  # never sent twice on a fresh connection


async def test_an_interim_100_response_is_skipped(serve, pool) -> None:
    server = await serve.answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done"), until_eof=True)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert (response.status, await response.read(100)) == (200, b"done")
    response.release()


async def test_a_slow_reader_pauses_the_upstream_and_loses_nothing(serve, pool) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB

    server = await serve.answering(ok(payload), until_eof=True)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    conn = response._conn
    assert conn is not None
    received = bytearray()
    paused_seen = False
    while chunk := await response.readany():
        received += chunk
        for _ in range(20):  # let the upstream fill the buffer before the next read
            await asyncio.sleep(0)
        paused_seen = paused_seen or conn.paused
    assert bytes(received) == payload
    assert paused_seen
    response.release()
    assert pool.idle_connections == 1


async def test_cancelled_while_waiting_drops_the_connection(serve, pool) -> None:
    received = asyncio.Event()

    async def handler(reader, writer, n):
        await server.read_request(reader)
        received.set()
        await reader.read()  # never answers

    server = await serve(handler)
    task = asyncio.ensure_future(pool.post(server.url, b"{}", {}, connect_timeout=1))
    await received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.idle_connections == 0


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"X Evil": "1"}, "not a header name"),
        ({"X-Evil:": "1"}, "not a header name"),
        ({"": "1"}, "not a header name"),
        ({"Host": "other.example"}, "written by the client"),
        ({"content-length": "0"}, "written by the client"),
        ({"Transfer-Encoding": "chunked"}, "written by the client"),
        ({"X-Ok": "a\x00b"}, "NUL"),
        ({"X-Evil": "a\r\nX-Injected: 1"}, "line break"),  # never sent
    ],
)
async def test_a_header_the_client_owns_or_cannot_write_is_refused_before_connecting(
    serve, pool, headers: dict[str, str], match: str
) -> None:
    server = await serve.answering()
    with pytest.raises(ValueError, match=match):
        await pool.post(server.url, b"{}", headers, connect_timeout=1)
    assert server.connections == 0


async def test_refused_is_a_connect_failure(pool) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectFailed):
        await pool.post(f"http://127.0.0.1:{port}/x", b"{}", {}, connect_timeout=1)
    assert pool._dns == {}  # a failed address is looked up again next time


async def test_idle_connections_expire_on_the_pool_clock(serve, make_pool) -> None:
    async def handler(reader, writer, n):
        while True:
            await server.read_request(reader)
            writer.write(ok(b"{}"))

    clock = FakeClock(1000.0)
    server = await serve(handler)
    pool = make_pool(keepalive_timeout=30, clock=clock.monotonic)

    async def call() -> None:
        response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
        await response.read(10)
        response.release()

    await call()
    clock.advance(29)
    await call()
    assert server.connections == 1  # within the keep-alive timeout: reused
    clock.advance(31)
    await call()
    assert server.connections == 2  # idle too long: a new connection
    clock.advance(31)
    pool._reap()
    assert pool.idle_connections == 0  # the reaper closes what sat idle too long


@pytest.mark.parametrize(
    ("url", "host", "path"),
    [
        ("http://h.example/v1/x", b"h.example", b"/v1/x"),
        ("https://h.example:8443/v1?api-version=1", b"h.example:8443", b"/v1?api-version=1"),
        ("http://[::1]:9000", b"[::1]:9000", b"/"),
    ],
)
def test_targets_are_parsed_once_per_url(url: str, host: bytes, path: bytes) -> None:
    pool = Http1Pool()
    target = pool.target(url)
    assert (target.host_header, target.path) == (host, path)
    assert pool.target(url) is target


def test_a_non_http_url_is_refused() -> None:
    with pytest.raises(ConnectFailed, match="not an http"):
        Http1Pool().target("ftp://h.example/x")


async def test_https_with_verified_certificates_and_keep_alive(make_pool) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"\r\nHost: localhost:" in head
                await reader.readexactly(2)
                writer.write(ok(b'{"tls": true}'))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1/chat/completions"
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    pool = make_pool(tls=client_ctx)
    try:
        for _ in range(2):
            response = await pool.post(url, b"{}", {}, connect_timeout=5)
            assert (response.status, await response.read(100)) == (200, b'{"tls": true}')
            response.release()
        assert connections == 1
        untrusted = make_pool()  # the system store does not know the test CA
        with pytest.raises(ConnectFailed):
            await untrusted.post(url, b"{}", {}, connect_timeout=5)
    finally:
        server.close()


async def test_addresses_are_resolved_once_per_ttl(serve, monkeypatch, make_pool) -> None:
    server = await serve.answering(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    )
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counting(host, port, **kwargs):
        lookups.append(host)
        return await real(host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    clock = FakeClock(0.0)
    pool = make_pool(clock=clock.monotonic)
    for step in (0, 10, 400):  # Connection: close, so each call opens a new connection
        clock.advance(step)
        response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
        await response.read(10)
        response.release()
    assert server.connections == 3
    assert lookups == ["127.0.0.1", "127.0.0.1"]  # the cached addresses expired once


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with an RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_reused_connection_reset_after_the_request_is_not_sent_again(serve, pool) -> None:
    # The upstream reads the request on a reused keep-alive connection, then resets it at once,
    # with nothing answered. The request was written: the upstream may be working on it (and
    # bills it), so the loss goes to the attempt loop; a silent second POST on a fresh
    # connection would be an attempt nobody counts.
    async def handler(reader, writer, n):
        await server.read_request(reader)
        writer.write(ok(b'{"n": 1}'))
        await writer.drain()
        if n == 1:
            await server.read_request(reader)  # the second request arrives ...
            _reset(writer)  # ... and the upstream dies with it
            return
        await reader.read()

    server = await serve(handler)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    await response.read(10)
    response.release()
    assert pool.idle_connections == 1
    with pytest.raises(UpstreamConnectionError):
        await pool.post(server.url, b'{"n": 2}', {}, connect_timeout=1)
    assert [r.endswith(b'{"n": 2}') for r in server.requests] == [False, True]
    assert server.connections == 1  # no fresh connection carried a copy
    assert pool.stats() == {"idle_by_host": {}, "in_use": 0}


@pytest.mark.parametrize("close", ["fin", "rst"])
async def test_an_idle_connection_closed_by_the_upstream_is_dropped_before_writing(
    serve, pool, close: str
) -> None:
    # The upstream closes the idle connection; when the next request comes, the close is here
    # (read by the event loop or still in the socket): nothing is written on it, and the request
    # goes once over a new connection.
    parked, closed = asyncio.Event(), asyncio.Event()

    async def handler(reader, writer, n):
        await server.read_request(reader)
        writer.write(ok(b"{}"))
        await writer.drain()
        if n == 1:
            await parked.wait()
            if close == "rst":
                _reset(writer)
            else:
                writer.close()
            closed.set()
            return
        await reader.read()

    server = await serve(handler)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    await response.read(10)
    response.release()
    assert pool.idle_connections == 1
    parked.set()
    await closed.wait()
    response = await pool.post(server.url, b'{"n": 2}', {}, connect_timeout=1)
    assert (response.status, await response.read(10)) == (200, b"{}")
    response.release()
    assert [r.endswith(b'{"n": 2}') for r in server.requests] == [False, True]
    assert server.connections == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://user:sk-secret@127.0.0.1:99999/v1",  # port out of range
        "http://user:sk-secret@[::1/v1",  # an IPv6 literal never closed
        "http://user:sk-secret@127.0.0.1:0/v1",
        "http://user:sk-secret@127.0.0.1/v1/caf\u00e9",  # a path HTTP/1.1 cannot carry
        "http://user:sk-secret@127.0.0.1/v1/a b",
        "http://user:sk-secret@" + "a" * 64 + ".example/v1",  # a DNS label of 64 characters
        "http://user:sk-secret@a..example/v1",  # an empty label
        "ftp://user:sk-secret@h.example/v1",
    ],
)
async def test_a_url_no_request_can_go_to_is_a_connect_failure_that_quotes_nothing(
    pool, url: str
) -> None:
    with pytest.raises(ConnectFailed) as info:
        await pool.post(url, b"{}", {}, connect_timeout=1)
    assert "sk-secret" not in str(info.value)
    assert http1.url_problem(url) == str(info.value)
    assert pool.stats() == {"idle_by_host": {}, "in_use": 0}


async def test_a_second_unsolicited_response_cannot_replace_the_answer(serve, pool) -> None:
    stray = b"HTTP/1.1 503 Nope\r\nX-Stray: yes\r\nContent-Length: 2\r\n\r\n{}"
    server = await serve.answering(
        ok(b'{"answer": 1}') + stray, ok(b'{"answer": 2}'), until_eof=True
    )
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert (response.status, await response.read(100)) == (200, b'{"answer": 1}')
    assert "x-stray" not in response.headers
    response.release()
    assert pool.idle_connections == 0  # out of step: never reused
    again = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert (again.status, await again.read(100)) == (200, b'{"answer": 2}')
    assert server.connections == 2


async def test_a_stream_released_before_its_end_marker_is_reused_once_it_arrives(
    serve, pool
) -> None:
    go = asyncio.Event()

    async def handler(reader, writer, n):
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await go.wait()
            writer.write(b"0\r\n\r\n")  # the end of the body, after the client moved on
            await writer.drain()

    server = await serve(handler)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert await response.readany() == b"data: [DONE]\n\n"
    response.release()  # the relay stops at [DONE]
    assert pool.stats()["in_use"] == 1  # draining, not closed
    go.set()
    for _ in range(1000):
        if pool.idle_connections:
            break
        await asyncio.sleep(0)
    assert pool.idle_connections == 1
    again = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    again.close()
    assert server.connections == 1


async def test_a_stream_whose_end_marker_never_comes_is_closed(serve, monkeypatch, pool) -> None:
    monkeypatch.setattr(http1, "_DRAIN_SECONDS", 0.0)

    server = await serve.answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        until_eof=True,
    )
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert await response.readany() == b"hello"
    response.release()
    for _ in range(100):
        if not pool.stats()["in_use"]:
            break
        await asyncio.sleep(0)
    assert pool.stats() == {"idle_by_host": {}, "in_use": 0}


async def test_an_oversized_or_upgrade_response_is_an_error_not_a_crash(serve, pool) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"y" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ]

    server = await serve.answering(*answers, until_eof=True)
    for _ in answers:
        with pytest.raises(UpstreamConnectionError):
            response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
            await response.read(10)
    assert pool.stats() == {"idle_by_host": {}, "in_use": 0}


async def test_repeated_headers_are_joined_in_order(serve, pool) -> None:
    warnings = (b"Warning: a\r\n", b"Warning: b\r\n", b"Warning: c\r\n")
    server = await serve.answering(ok(b"{}", *warnings), until_eof=True)
    response = await pool.post(server.url, b"{}", {}, connect_timeout=1)
    assert response.headers["warning"] == "a, b, c"
    response.close()
