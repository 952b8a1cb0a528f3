"""The proxy's one upstream client: the lean keep-alive pool every attempt and every health probe
goes through.

Keep-alive connections are reused across requests (a TLS handshake per request would dominate
the proxy's overhead), with TCP_NODELAY on every connection so small SSE chunks are not held
back by Nagle's algorithm. It never follows redirects, stores cookies, reads proxies from the
environment or forwards a client's headers (``upstreams/http1.py``).
"""

from __future__ import annotations

from edgeproxy.upstreams.http1 import Http1Pool


class UpstreamPool:
    def __init__(self, *, keepalive_timeout: float = 30.0) -> None:
        self.http = Http1Pool(keepalive_timeout=keepalive_timeout)

    async def start(self) -> None:
        """Nothing to open ahead of time: connections are made on first use."""

    async def close(self) -> None:
        await self.http.close()
