"""Client connections: how long one may sit idle, how long it may take to send a request head, and
how many may be open at once.

aiohttp keeps an idle connection for 3,630 s and has no header-read timeout, so a client that
opens sockets and sends nothing (or half a request line) holds file descriptors until the process
runs out of them and every other client is locked out without a word in the log. Here:

- ``keepalive_timeout`` (75 s, like common load balancers): a connection idle between two
  requests is closed (aiohttp's own timer, given a sane value).
- ``header_timeout`` (10 s): a request head (request line and headers) must be complete within
  this time of the connection opening, or of the first byte of the next request on a kept-alive
  one; otherwise the connection is closed, with a 408 when part of a head had arrived. aiohttp
  has no such timer: ``_GuardedHandler`` adds one per connection (one timer handle, armed only
  while a head is awaited). A partial head that arrives in the same packet as a complete one
  (pipelining) is left to the keep-alive timer.
- ``max_connections`` (half the process's open-file limit, so the other half stays free for
  upstream connections, policy and key files, and the prober). At the cap, a new connection
  first makes room by closing the connection that has been *waiting on its client* the longest:
  idle between requests, or still sending its head or body (those get a 408), never one whose
  request is being served (nginx likewise reuses idle keep-alive connections when it runs out).
  Only when every connection is busy serving is the new one answered 503 and closed. So neither
  idle sockets nor trickled heads and bodies can lock other clients out, even before their
  timeouts cut them. Crossing 90 % of the cap and acting at it are logged (rate-limited) and
  counted on ``/metrics`` (``edgeproxy_client_connections*``).

Request bodies have their own limits (``body.py``: size and ``limits.body_read_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web

from edgeproxy.server.context import SERVER_HEADER, new_request_id
from edgeproxy.server.responses import error_body

# From a quote (a repr of the bytes aiohttp's parser refused) to the end of its message.
_QUOTED = re.compile(r"[:\s]*(?<![A-Za-z0-9])b?['\"].*$", re.DOTALL)

log = logging.getLogger("edgeproxy.server")

DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_HEADER_TIMEOUT = 10.0
_WARN_EVERY = 10.0  # seconds between two "at the limit" warnings
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
    """Counts client connections against the cap, knows which ones are waiting on their client
    (oldest first: the ones to close to make room), and what was cut, closed or refused."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.limit = settings.limit
        self.open = 0
        self.accepted_total = 0
        self.refused_total = 0
        self.evicted_total = 0
        self.header_timeouts_total = 0
        self._waiting: dict[_GuardedHandler, None] = {}  # insertion order: longest waiting first
        self._near = False
        self._unlogged = {"evicted": 0, "refused": 0}
        self._warned_at = -_WARN_EVERY

    def opened(self) -> None:
        self.open += 1
        self.accepted_total += 1
        if not self._near and self.open >= _NEAR * self.limit:
            self._near = True
            log.warning(
                "client connections near the limit",
                extra={"open": self.open, "max_connections": self.limit, **fd_limits()},
            )

    def closed(self, handler: _GuardedHandler) -> None:
        self._waiting.pop(handler, None)
        self.open -= 1
        if self._near and self.open < 0.75 * self.limit:
            self._near = False

    def waiting(self, handler: _GuardedHandler, waiting: bool) -> None:
        """``handler`` now waits on its client (idle, or sending a head or body), or not."""
        if not waiting:
            self._waiting.pop(handler, None)
        elif handler not in self._waiting:
            self._waiting[handler] = None  # keeps its age while it goes on waiting

    def admit(self) -> bool:
        """Whether a new connection may be accepted, closing a waiting one to make room."""
        if self.open < self.limit:
            return True
        if self._waiting:
            victim = next(iter(self._waiting))
            del self._waiting[victim]
            self.evicted_total += 1
            self._at_limit("evicted")
            victim.evict()
            return True  # its descriptor is released as the loop closes it
        self.refused_total += 1
        self._at_limit("refused")
        return False

    def _at_limit(self, what: str) -> None:
        self._unlogged[what] += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            log.warning(
                "client connections at the limit: closing the longest-waiting idle or slow "
                "connection for each new one, refusing with 503 when every one is busy "
                "(raise --max-connections and the open-file limit, or add capacity)",
                extra={
                    "open": self.open,
                    "max_connections": self.limit,
                    **self._unlogged,
                    **fd_limits(),
                },
            )
            self._warned_at = now
            self._unlogged = {"evicted": 0, "refused": 0}

    def header_timed_out(self) -> None:
        self.header_timeouts_total += 1

    def snapshot(self) -> dict[str, int | float]:
        return {
            "open": self.open,
            "max_connections": self.limit,
            "accepted_total": self.accepted_total,
            "refused_total": self.refused_total,
            "evicted_total": self.evicted_total,
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
            "# HELP edgeproxy_client_connections_refused_total Connections refused at the cap "
            "(every open one busy serving).",
            "# TYPE edgeproxy_client_connections_refused_total counter",
            f"edgeproxy_client_connections_refused_total {self.refused_total}",
            "# HELP edgeproxy_client_connections_evicted_total Idle or slow connections closed "
            "at the cap to make room for a new one.",
            "# TYPE edgeproxy_client_connections_evicted_total counter",
            f"edgeproxy_client_connections_evicted_total {self.evicted_total}",
            "# HELP edgeproxy_client_connections_header_timeouts_total Connections closed "
            "because no complete request head arrived in time.",
            "# TYPE edgeproxy_client_connections_header_timeouts_total counter",
            f"edgeproxy_client_connections_header_timeouts_total {self.header_timeouts_total}",
        ]
        return ("\n".join(lines) + "\n").encode()


CONNECTIONS = web.AppKey("edgeproxy_connections", ConnectionGuard)


def fd_limits() -> dict[str, int]:
    """The process's open-file limits (``ulimit -n``: soft, and hard)."""
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
    """A connection over the cap while every open one is serving: a 503 and close, without
    reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
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
    """aiohttp's connection handler, plus the header-read timer and the connection's state for
    the cap (waiting on its client, or serving).

    Bytes that arrive when every request head so far has its whole body are the start of a new
    head: they arm the timer, and the head's completion disarms it. A connection is serving from
    the moment its request's body is complete until its response is done (``log_access``, which
    aiohttp calls once per response). That needs two attributes of aiohttp's handler:
    ``_request_count`` (grows when the parser completes a head) and ``_messages`` (the parsed
    heads with their body streams, newest last); the tests in
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
        self._unanswered = 0  # requests whose head arrived and whose response is not done
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened()
        self._counted = True
        self._arm()  # a new connection owes a request head within the timeout
        self._guard.waiting(self, True)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._guard.closed(self)
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
            self._unanswered += self._request_count - heads
            if self._messages:
                self._last_body = self._messages[-1][1]
        self._track()

    def log_access(self, request: Any, response: Any, time: float | None) -> None:
        super().log_access(request, response, time)  # a response is done
        self._unanswered = max(0, self._unanswered - 1)
        self._track()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its HTTP parser refused (a bad request line, header or
        chunk framing): the client's fault, so one debug line instead of a logged traceback (a
        client could flood the log with them) and an OpenAI-shaped 4xx with a request id instead
        of plain text. Server errors keep aiohttp's handling."""
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = (getattr(exc, "message", None) or message or "malformed request").splitlines()[0]
        # aiohttp quotes the offending bytes ("... when reading: b'Bearer sk-…'"): a header
        # that was too long or malformed may be a credential, so what it quotes never leaves.
        reason = _QUOTED.sub("", reason)[:200]
        self.logger.debug("bad HTTP request from %s: %s", request.remote, reason)
        rid = new_request_id(None)
        body = error_body(
            f"The request is not valid HTTP/1.1 ({reason.strip().rstrip(':')}).",
            type="invalid_request_error",
            request_id=rid,
            code="bad_http_request",
        )
        response = web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"x-request-id": rid, "Server": SERVER_HEADER},
        )
        response.force_close()
        return response

    def _between_requests(self) -> bool:
        body = self._last_body
        return body is None or bool(body.is_eof())

    def _track(self) -> None:
        if self._counted:
            serving = self._unanswered > 0 and self._between_requests()
            self._guard.waiting(self, not serving)

    def evict(self) -> None:
        """Closed to make room at the cap: a 408 if it was sending a head or a body."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (self._head_bytes and self._head_timer is not None) or not self._between_requests():
            transport.write(
                _raw_error(
                    408,
                    "Request Timeout",
                    "The request did not arrive in time: the proxy needed the connection for "
                    "another client.",
                    "request_timeout",
                )
            )
        self.force_close()

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
        if not guard.admit():
            return _Refused()
        return _GuardedHandler(server, guard, header_timeout, loop=loop, **options)

    return make
