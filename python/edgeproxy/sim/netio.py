"""Connection-level misbehaviour: dropping or resetting the TCP connection under a handler."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from aiohttp import web

# struct linger {int l_onoff; int l_linger;}: on, 0 seconds -> close() sends RST, not FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


def reset_connection(request: web.BaseRequest) -> None:
    """Abort with a TCP RST, as a crashing load balancer or a killed process would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # OSError: already closed by the peer, nothing left to reset.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


def drop_connection(request: web.BaseRequest) -> None:
    """Close after flushing what was written: the peer sees a body that ends too early."""
    transport = request.transport
    if transport is not None:
        transport.close()


def abort_transport(transport: asyncio.Transport | None) -> None:
    if transport is not None and not transport.is_closing():
        transport.abort()


def placeholder_response() -> web.Response:
    """What a handler returns after killing its connection.

    aiohttp insists on a response object; writing it fails on the closed transport and aiohttp
    treats that as a client disconnect, so nothing reaches the wire and nothing is logged.
    """
    return web.Response(status=204)
