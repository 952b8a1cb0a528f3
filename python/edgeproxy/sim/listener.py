"""The provider's listening socket, closable and re-openable on the same port (refuse fault)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR lets us re-listen while old accepted connections are in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(256)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Owns the listening socket so that refusing connections is a synchronous operation.

    Binding and ``listen()`` happen synchronously (connects queue in the backlog from that
    moment); handing the socket to the event loop is a small task awaited on ``aclose``.
    """

    def __init__(self, factory: ProtocolFactory, host: str, port: int = 0) -> None:
        self._factory = factory
        self._host = host
        self._port = port
        self._sock: socket.socket | None = None
        self._servers: dict[socket.socket, asyncio.Server] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._retired: list[asyncio.Server] = []

    @property
    def port(self) -> int:
        return self._port

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        """Start listening on the current port (an ephemeral one the first time)."""
        if self._sock is not None:
            return
        sock = _bind(self._host, self._port)
        self._port = sock.getsockname()[1]
        self._sock = sock
        task = asyncio.get_running_loop().create_task(self._serve(sock))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(self._factory, sock=sock)
        except Exception:
            log.exception("sim listener could not serve on port %s", self._port)
            if self._sock is sock:
                self._sock = None
            sock.close()
            return
        if self._sock is sock:
            self._servers[sock] = server
        else:
            # close() ran while the server was being created; a connect may have slipped into
            # the backlog during that window and is reset here.
            server.close()
            self._retired.append(server)

    async def started(self) -> None:
        """Wait until the event loop is accepting on the socket opened last."""
        while self._pending:
            await asyncio.gather(*self._pending)

    def close(self) -> None:
        """Stop listening now: new connects get ECONNREFUSED, accepted ones are untouched."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        server = self._servers.pop(sock, None)
        if server is not None:
            server.close()
            self._retired.append(server)

    async def aclose(self) -> None:
        self.close()
        await self.started()
        retired, self._retired = self._retired, []
        for server in retired:
            with contextlib.suppress(Exception):
                await server.wait_closed()
