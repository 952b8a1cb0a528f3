"""Client connections: how long one may sit idle, how long it may take to send a request head, and
how many may be open at once.

aiohttp keeps an idle connection for 3,630 s and has no header-read timeout, so a client that
opens sockets and sends nothing (or half a request line) holds file descriptors until the process
runs out of them and every other client is locked out without a word in the log. Here:

- ``keepalive_timeout`` (75 s, like common load balancers): an idle connection, before its first
  request or between two, is closed (aiohttp's own timer, given a sane value).
- ``header_timeout`` (10 s): a request head (request line and headers) must be complete within
  this time of the connection opening, or of the first byte of the next request on a kept-alive
  one; otherwise the connection is closed, with a 408 when part of a head had arrived. aiohttp
  has no such timer: ``_GuardedHandler`` adds one per connection (one timer handle, armed only
  while a head is awaited).
- ``max_connections`` (half the process's open-file limit): beyond it a new connection gets a 503
  and is closed at once, so the other half of the descriptors stays free for upstream
  connections, policy and key files, and the prober. Crossing 90 % of the cap and refusing are
  logged (rate-limited) and counted on ``/metrics`` (``edgeproxy_client_connections*``).

Request bodies have their own limits (``body.py``: size and ``limits.body_read_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web

from edgeproxy.server.context import new_request_id
from edgeproxy.server.openai_wire import error_body

log = logging.getLogger("edgeproxy.server")

DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_HEADER_TIMEOUT = 10.0
_WARN_EVERY = 10.0  # seconds between two "refusing connections" warnings
_NEAR = 0.9  # share of the cap that is logged as "near the limit"


def default_max_connections() -> int:
    """Half the soft open-file limit (``ulimit -n``), at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 65536
    return max(16, soft // 2)


@dataclass(frozen=True)
class ConnectionSettings:
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int | None = None  # None: default_max_connections()

    def __post_init__(self) -> None:
        if not self.keepalive_timeout > 0 or not self.header_timeout > 0:
            raise ValueError("keepalive_timeout and header_timeout must be greater than zero")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    @property
    def limit(self) -> int:
        return self.max_connections or default_max_connections()


class ConnectionGuard:
    """Counts client connections against the cap, and what was cut or refused."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.limit = settings.limit
        self.open = 0
        self.accepted_total = 0
        self.refused_total = 0
        self.header_timeouts_total = 0
        self._near = False
        self._refused_unlogged = 0
        self._warned_at = -_WARN_EVERY

    def opened(self) -> None:
        self.open += 1
        self.accepted_total += 1
        if not self._near and self.open >= _NEAR * self.limit:
            self._near = True
            log.warning(
                "client connections near the limit",
                extra={"open": self.open, "max_connections": self.limit, **_fd_limits()},
            )

    def closed(self) -> None:
        self.open -= 1
        if self._near and self.open < 0.75 * self.limit:
            self._near = False

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    def refused(self) -> None:
        self.refused_total += 1
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            log.warning(
                "client connections at the limit: refusing new ones with 503 "
                "(raise --max-connections and the open-file limit, or add capacity)",
                extra={
                    "open": self.open,
                    "max_connections": self.limit,
                    "refused": self._refused_unlogged,
                    **_fd_limits(),
                },
            )
            self._warned_at = now
            self._refused_unlogged = 0

    def header_timed_out(self) -> None:
        self.header_timeouts_total += 1

    def snapshot(self) -> dict[str, int | float]:
        return {
            "open": self.open,
            "max_connections": self.limit,
            "accepted_total": self.accepted_total,
            "refused_total": self.refused_total,
            "header_timeouts_total": self.header_timeouts_total,
            "keepalive_timeout": self.settings.keepalive_timeout,
            "header_timeout": self.settings.header_timeout,
        }

    def prometheus(self) -> bytes:
        """These counters in Prometheus' text format (appended to ``/metrics``)."""
        lines = [
            "# HELP edgeproxy_client_connections Client connections open now.",
            "# TYPE edgeproxy_client_connections gauge",
            f"edgeproxy_client_connections {self.open}",
            "# HELP edgeproxy_client_connections_limit The cap on open client connections.",
            "# TYPE edgeproxy_client_connections_limit gauge",
            f"edgeproxy_client_connections_limit {self.limit}",
            "# HELP edgeproxy_client_connections_refused_total Connections refused at the cap.",
            "# TYPE edgeproxy_client_connections_refused_total counter",
            f"edgeproxy_client_connections_refused_total {self.refused_total}",
            "# HELP edgeproxy_client_connections_header_timeouts_total Connections closed "
            "because no complete request head arrived in time.",
            "# TYPE edgeproxy_client_connections_header_timeouts_total counter",
            f"edgeproxy_client_connections_header_timeouts_total {self.header_timeouts_total}",
        ]
        return ("\n".join(lines) + "\n").encode()


CONNECTIONS = web.AppKey("edgeproxy_connections", ConnectionGuard)


def _fd_limits() -> dict[str, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"fd_soft_limit": soft, "fd_hard_limit": hard}


def _raw_error(status: int, reason: str, message: str, code: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 error answer for a connection that has no request object (yet): the
    OpenAI error shape (the client's wire is not known before its request is read)."""
    rid = new_request_id(None)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = orjson.dumps(error_body(message, type=kind, request_id=rid, code=code))
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nx-request-id: {rid}\r\n{extra}\r\n"
    )
    return head.encode() + body


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503 and close, without reading anything."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.refused()
        transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio subclass
        transport.write(
            _raw_error(
                503,
                "Service Unavailable",
                "The proxy has as many client connections open as it accepts; retry shortly.",
                "too_many_connections",
                "Retry-After: 1\r\n",
            )
        )
        transport.close()


class _GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, plus the header-read timer and the connection count.

    Bytes that arrive when every request head so far has its whole body are the start of a new
    head: they arm the timer, and the head's completion disarms it. That needs two attributes of
    aiohttp's handler: ``_request_count`` (grows when the parser completes a head) and
    ``_messages`` (the parsed heads with their body streams, newest last); the tests in
    tests/integration/test_edge_limits.py fail if a new aiohttp changes them."""

    def __init__(
        self, manager: web.Server, guard: ConnectionGuard, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False  # part of the awaited head has arrived
        self._last_body: Any = None  # the newest request's body stream (StreamReader)
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened()
        self._counted = True
        self._arm()  # a new connection owes a request head within the timeout

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._guard.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._head_timer is None and self._between_requests():
            self._arm()  # the first byte of the next request on a kept-alive connection
        if data and self._head_timer is not None:
            self._head_bytes = True
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._disarm()  # a whole head arrived: from here the body's own limits apply
            if self._messages:
                self._last_body = self._messages[-1][1]

    def _between_requests(self) -> bool:
        body = self._last_body
        return body is None or bool(body.is_eof())

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = False
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._guard.header_timed_out()
        if self._head_bytes:
            transport.write(
                _raw_error(
                    408,
                    "Request Timeout",
                    f"The request head did not arrive within {self._header_timeout:g} s.",
                    "request_timeout",
                )
            )
        self.force_close()


def handler_options(settings: ConnectionSettings) -> dict[str, Any]:
    """aiohttp's per-connection options. ``auto_decompress`` is off: request bodies are decoded
    by ``body.read_json_body`` under the policy's size limit."""
    return {
        "keepalive_timeout": settings.keepalive_timeout,
        "access_log": None,
        "auto_decompress": False,
    }


def protocol_factory(server: web.Server, guard: ConnectionGuard) -> Callable[[], asyncio.Protocol]:
    """What ``loop.create_server`` calls for each accepted connection."""
    loop = asyncio.get_running_loop()
    options = handler_options(guard.settings)
    header_timeout = guard.settings.header_timeout

    def make() -> asyncio.Protocol:
        if guard.full:
            return _Refused(guard)
        return _GuardedHandler(server, guard, header_timeout, loop=loop, **options)

    return make
