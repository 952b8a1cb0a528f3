"""A lean HTTP/1.1 keep-alive client for upstream calls: one asyncio Protocol per connection,
responses parsed by httptools (llhttp).

Why not aiohttp's client: the proxy is CPU-bound in Python, and aiohttp's client machinery
(request/response objects, traces, cookie and redirect handling, per-request timers and tasks)
was the largest block of a request's profile. An upstream call needs much less: POST a body on
a pooled connection, read the status and a few headers, then either the whole body or its chunks
as they arrive. Everything else (timeouts, retries, failover) belongs to the resilience engine.

What it does: connections pooled per (scheme, host, port), reused newest first, closed after
``keepalive_timeout`` idle or when the upstream says ``Connection: close``; TCP_NODELAY so small
SSE chunks are not held back; TLS through the ``ssl`` module with the system's trust store; flow
control (a slow client pauses reading from the upstream). Never: redirects, cookies, proxies from
the environment, the client's headers.

Every request an upstream sees is an attempt the resilience engine knows of (Go's rule for a
POST): a request is only ever sent again when nothing of it was written. An idle connection is
checked just before it is reused: one the upstream closed while it sat idle (its FIN or RST
already here: the socket reads as ready) is dropped and the next one taken, before a byte is
written. Once the request is written, any loss (a reset, a close crossing the request on the
wire) is an ``UpstreamConnectionError`` for the attempt loop to count and fail over, never a
hidden second POST that the provider bills and the breaker, budget, log and metrics miss.
A URL this client cannot use (port out of range, a bad IPv6 literal, a host or path it cannot
encode) is a ``ConnectFailed``, like a host that cannot be reached.
"""

from __future__ import annotations

import asyncio
import functools
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

from edgeproxy.errors import EdgeProxyError

# A stream's reader may lag its upstream; past this many buffered bytes reading pauses.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# Bounds the idle sockets kept per upstream (each is an open file descriptor).
_MAX_IDLE_PER_ORIGIN = 128
# How long a host's resolved addresses are reused for new connections (dropped at once when a
# connection to them fails, so a moved upstream is found again on the next attempt).
_DNS_TTL = 60.0
# A response head larger than this is refused (a hostile upstream cannot make us buffer more).
_MAX_HEAD_BYTES = 64 * 1024
# After [DONE] a stream's end-of-body marker may still be in flight: wait this long (and at
# most this many bytes) for it before giving up on reusing the connection.
_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 64 * 1024

AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]


class UpstreamConnectionError(EdgeProxyError, ConnectionError):
    """The connection failed or was lost before or while reading a response."""


class ConnectFailed(UpstreamConnectionError):
    """No connection could be made (refused, unreachable, DNS, TLS handshake)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, parsed once per URL."""

    key: tuple[str, str, int]  # scheme, host, port: the pool a connection belongs to
    host_header: bytes
    path: bytes
    tls: bool


class UpstreamResponse:
    """Status, headers and the body of one upstream response, read as it arrives.

    ``release()`` hands a fully read response's connection back to the pool; ``close()`` drops
    the connection (a body read only in part must never be reused).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_conn",
        "_done",
        "_error",
        "_waiter",
        "content_type",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}  # names in lower case
        self.content_type = ""
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._done = False  # released or closed

    # -- fed by the connection --------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._complete:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    # -- read by the proxy ------------------------------------------------------------------

    async def readany(self) -> bytes:
        """The next bytes of the body as they arrived; ``b""`` at its end. Raises
        UpstreamConnectionError when the connection is lost before the body is complete."""
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._chunks.popleft()
        if len(self._chunks) > 0:  # several network reads queued: hand them out together
            data = b"".join((data, *self._chunks))
            self._chunks.clear()
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume()
        return data

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first ``limit`` bytes and more when it is longer (so the
        caller can tell it was over the limit); the connection is dropped in that case."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await self.readany()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if size > limit:
            self.close()
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: a complete one returns its connection to the pool."""
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._error is not None:
            conn.close()
        elif self._complete:
            self._chunks.clear()  # the message is over: unread bytes do not hold the connection
            conn.reusable_after(self)
        else:
            conn.drain(self)  # e.g. a stream released at [DONE]: its body's end may follow

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Connection(asyncio.Protocol):
    """One upstream connection; at most one response in flight."""

    def __init__(self, pool: Http1Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.head: asyncio.Future[None] | None = None
        self.closed = False
        self.received = False  # any byte of the current response arrived
        self.fd = -1  # the socket's descriptor, to look at an idle connection before reuse
        self.idle_since = 0.0
        self.paused = False
        self.keep_alive = False
        self.draining = False  # released after [DONE]: waiting for the end of the body
        self._drained = 0
        self._length_known = False  # Content-Length or chunked: EOF does not end the body
        self._head_bytes = 0
        self._repeated: dict[str, list[str]] = {}

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.response is None and not self.draining:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._lost(UpstreamConnectionError(f"invalid HTTP from upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        head_done = self.head is not None and self.head.done()
        eof_ends_body = exc is None and head_done and not self._length_known
        if response is not None and not response._complete and eof_ends_body:
            response._finish()  # a body delimited by the end of the connection
            return
        reason = exc or UpstreamConnectionError("upstream closed the connection")
        if not isinstance(reason, UpstreamConnectionError):
            reason = UpstreamConnectionError(f"connection lost: {reason}")
        self._lost(reason)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self.response
        if response is None or response._complete:
            # A second response to one request (or one to none): refuse it rather than let it
            # overwrite the answer (httptools turns this into HttpParserCallbackError).
            raise UpstreamConnectionError("upstream sent an unsolicited response")
        self._head_bytes = 0
        self._repeated.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is None:
            return
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise UpstreamConnectionError("upstream response head is larger than 64 KiB")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in response.headers:  # repeated: all values, comma-joined once at the end
            self._repeated.setdefault(key, [response.headers[key]]).append(text)
        response.headers[key] = text
        if key == "content-length" or (key == "transfer-encoding" and "chunked" in text.lower()):
            self._length_known = True

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        for key, values in self._repeated.items():
            response.headers[key] = ", ".join(values)
        response.status = self.parser.get_status_code()
        content_type = response.headers.get("content-type", "")
        response.content_type = content_type.split(";", 1)[0].strip().lower()
        if 100 <= response.status < 200:  # an interim response: wait for the real one
            response.headers.clear()
            self._length_known = False
            return
        head = self.head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.draining:
            self._drained += len(body)
            if self._drained > _DRAIN_BYTES:
                raise UpstreamConnectionError("too much after the end of the stream")
            return
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response.status < 200:
            return
        # Asked here: llhttp forgets the answer once the message is over.
        self.keep_alive = self.parser.should_keep_alive()
        if self.draining:
            self.draining = False
            self.reusable_after(response)
            return
        response._finish()

    # -- used by the pool and the response --------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        head = self.head
        if head is not None and not head.done():
            head.set_exception(exc)
        if self.response is not None:
            self.response._fail(exc)

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    async def request(self, head: bytes, body: bytes) -> UpstreamResponse:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        response = UpstreamResponse(self)
        self.response = response
        self.head = loop.create_future()
        self.received = False
        self.keep_alive = False
        self._length_known = False
        self.transport.writelines((head, body))
        try:
            await self.head
        except BaseException:
            self.close()  # cancelled or failed mid-request: the connection state is unknown
            raise
        return response

    def closed_while_idle(self) -> bool:
        """Whether this idle connection is unusable, looked at before anything is written: closed
        (or closing) already, or its socket readable. An idle connection has nothing to read but
        the upstream's FIN or RST (any byte would be unsolicited), which the event loop may not
        have taken in yet; one zero-timeout poll tells."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return True
        if self.fd < 0:
            return False
        # poll, not select: select() cannot take a descriptor above 1023, and a busy proxy has
        # more sockets than that.
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLPRI)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def reusable_after(self, response: UpstreamResponse) -> None:
        if self.response is not response or self.closed or not self.keep_alive:
            self.close()
            return
        self.response = None
        self.head = None
        self.resume()
        self.pool.park(self)

    def drain(self, response: UpstreamResponse) -> None:
        """A stream read to its end ([DONE]) but not to the end of its body: the terminating
        chunk is usually in flight. Wait briefly for it, then reuse the connection; close it if
        it does not come (or more than a few KiB would have to be read)."""
        if self.response is not response or self.closed:
            self.close()
            return
        self.draining = True
        self._drained = 0
        self.resume()

        def give_up() -> None:
            if self.draining and self.response is response:
                self.close()

        asyncio.get_running_loop().call_later(_DRAIN_SECONDS, give_up)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class Http1Pool:
    """Keep-alive connections to every upstream, and ``post()`` over them."""

    def __init__(
        self,
        *,
        keepalive_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the context for https upstreams (default: the system's trust store, made
        on first use)."""
        self.keepalive_timeout = keepalive_timeout
        self._clock = clock
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._tls = tls
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False
        self._open: set[_Connection] = set()  # every connection not yet closed
        self._dns: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}

    def target(self, url: str) -> Target:
        """Where ``url``'s requests go; ConnectFailed when no request can go there."""
        target = self._targets.get(url)
        if target is None:
            target = _parse_target(url)
            if len(self._targets) > 4096:  # URLs come from policies; bound it anyway
                self._targets.clear()
            self._targets[url] = target
        return target

    @property
    def idle_connections(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    def stats(self) -> dict[str, Any]:
        """Open connections: idle (by ``host:port``) and in use (a response in flight)."""
        idle_by_host = {
            f"{key[1]}:{key[2]}": len(conns) for key, conns in self._idle.items() if conns
        }
        idle = sum(idle_by_host.values())
        return {"idle_by_host": idle_by_host, "in_use": len(self._open) - idle}

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        method: str = "POST",
    ) -> UpstreamResponse:
        """POST ``body`` (or send it with ``method``: the health prober GETs); the response once
        its status and headers are in.

        Raises ConnectFailed (no connection), TimeoutError (none within ``connect_timeout``) or
        UpstreamConnectionError (lost before the response head).
        """
        target = self.target(url)
        head = _request_head(target, headers, len(body), method)
        conn = self._idle_connection(target.key)
        if conn is None:
            conn = await self._connect(target, connect_timeout)
        # Sent once: a loss from here on is the caller's to see (see the module docstring).
        return await conn.request(head, body)

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        oldest_ok = self._clock() - self.keepalive_timeout
        while conns:
            conn = conns.pop()  # newest first: the one least likely to have been closed
            if conn.idle_since >= oldest_ok and not conn.closed_while_idle():
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target, connect_timeout: float) -> _Connection:
        _, host, port = target.key
        loop = asyncio.get_running_loop()
        conn = _Connection(self, target.key)
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                addresses = await self._resolve(host, port)
                # Happy eyeballs (RFC 8305): a host whose IPv6 route is broken still connects
                # over IPv4 after 250 ms instead of after the whole connect timeout.
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=0.25, interleave=1
                )
                await loop.create_connection(
                    lambda: conn,
                    sock=sock,
                    ssl=self._tls_context() if target.tls else None,
                    server_hostname=host if target.tls else None,
                )
        except (OSError, ValueError) as exc:  # TimeoutError and ssl.SSLError are OSErrors too
            # ValueError: UnicodeError from the resolver's IDNA encoding, among others.
            conn.close()
            self._dns.pop((host, port), None)
            if sock is not None and conn.transport is None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise
            raise ConnectFailed(describe_error(exc)) from None
        if not conn.closed:
            self._open.add(conn)
        return conn

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        """The host's addresses, kept for ``_DNS_TTL`` seconds (new connections come in bursts:
        one lookup serves them all)."""
        now = self._clock()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"no address for {host}")
        if len(self._dns) > 1024:
            self._dns.clear()
        self._dns[(host, port)] = (now + _DNS_TTL, infos)
        return infos

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def park(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conns = self._idle.setdefault(conn.key, [])
        if len(conns) >= _MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = self._clock()
        conns.append(conn)
        if self._reaper is None:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.keepalive_timeout, self._reap)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed: out of the idle list and the open set."""
        self._open.discard(conn)
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def _reap(self) -> None:
        """Close connections idle for longer than the keep-alive timeout (each holds an fd)."""
        self._reaper = None
        oldest_ok = self._clock() - self.keepalive_timeout
        for conns in list(self._idle.values()):
            for conn in [c for c in conns if c.idle_since < oldest_ok]:
                conn.close()
        if self.idle_connections:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.keepalive_timeout, self._reap)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conns in list(self._idle.values()):
            for conn in list(conns):
                conn.close()
        self._idle.clear()


# What a Host header may carry once IDNA-encoded: names, IPv4, [IPv6] (with a zone), a port.
_HOST = re.compile(rb"[A-Za-z0-9._~%:\[\]-]+")


def url_problem(url: str) -> str | None:
    """Why this client cannot send a request to ``url`` (in words that never quote the URL: it
    may carry credentials), or None. Policy loading may ask the same."""
    try:
        _parse_target(url)
    except ConnectFailed as exc:
        return str(exc)
    return None


def _parse_target(url: str) -> Target:
    """Raises ConnectFailed for a URL no request can be sent to."""
    try:
        parts = urlsplit(url)
        port_given = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise ConnectFailed("the URL's host or port is not valid") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise ConnectFailed("not an http(s) URL with a host")
    if port_given == 0:
        raise ConnectFailed("the URL's port is 0")
    tls = scheme == "https"
    port = port_given or (443 if tls else 80)
    default_port = port == (443 if tls else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if default_port else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    try:
        # IDNA refuses an empty or over-long (> 63 characters) label, as DNS would.
        host_bytes = host_header.encode("idna")
    except UnicodeError:
        raise ConnectFailed("the URL's host name cannot be encoded (IDNA)") from None
    if _HOST.fullmatch(host_bytes) is None:
        raise ConnectFailed("the URL's host name has characters a Host header cannot carry")
    if not path.isascii() or any(c in path for c in " \r\n\t\0"):
        raise ConnectFailed("the URL's path is not ASCII without spaces or line breaks")
    return Target((scheme, host, port), host_bytes, path.encode("ascii"), tls)


# Headers this client writes itself, or that belong to the connection rather than the
# request: a second copy from a caller would go out as a duplicate, which an upstream and
# the proxies in front of it may read differently (request smuggling).
CLIENT_OWNED_HEADERS = frozenset(
    {
        "accept-encoding",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# RFC 9110 token characters: what a header name is made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_problem(name: str, value: str) -> str | None:
    """Why this client will not send ``name: value`` (naming the header, never quoting
    its value: it may be a key), or None. Policy loading asks the same of static headers."""
    problem = _name_problem(name)
    if problem is not None:
        return problem
    if "\r" in value or "\n" in value or "\0" in value:
        # A line break would let a header value write headers of its own.
        return f"header {name} contains a line break or NUL"
    if not value.isascii() and any(ord(c) > 255 for c in value):
        return f"header {name} is not latin-1 text"
    return None


@functools.lru_cache(maxsize=1024)
def _name_problem(name: str) -> str | None:
    """The name half of ``header_problem``, remembered: every request sends the same few names
    (the provider's static headers and the proxy's own)."""
    if _HEADER_NAME.fullmatch(name) is None:
        return f"{name.strip()!r} is not a header name (letters, digits, -_.!#$%&'*+^`|~)"
    if name.lower() in CLIENT_OWNED_HEADERS:
        return f"{name} is set by the proxy (written by the client itself)"
    return None


def _request_head(
    target: Target, headers: Mapping[str, str], length: int, method: str = "POST"
) -> bytes:
    # identity: without the header an upstream may compress as it likes (RFC 9110), and the
    # relay forwards bytes as they come.
    lines = [
        method.encode("ascii") + b" ",
        target.path,
        b" HTTP/1.1\r\nHost: ",
        target.host_header,
        b"\r\nAccept-Encoding: identity\r\n",
    ]
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)


def describe_error(exc: BaseException) -> str:
    """An OS error's own words ("connection refused"), else the exception's text or type."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
