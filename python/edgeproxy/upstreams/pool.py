"""The proxy's upstream clients: the lean keep-alive pool every attempt goes through, and one
aiohttp session for the health prober.

Keep-alive connections are reused across requests (a TLS handshake per request would dominate
the proxy's overhead). Both set TCP_NODELAY on every connection they open, so small SSE chunks
are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import aiohttp

from edgeproxy.upstreams.http1 import Http1Pool


class UpstreamPool:
    def __init__(self, *, keepalive_timeout: float = 30.0) -> None:
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self.http = Http1Pool(keepalive_timeout=keepalive_timeout)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # the proxy's own load shedding bounds concurrency, not the pool
            keepalive_timeout=self._keepalive_timeout,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            # The client's headers are never forwarded, and neither is aiohttp's User-Agent.
            skip_auto_headers=("User-Agent",),
            trust_env=False,
            # Never store an upstream's Set-Cookie: it would be replayed on later requests, of
            # other tenants too (and the jar costs time on every request).
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    @property
    def started(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The prober's session (probes are rare; attempts use ``http``)."""
        if self._session is None:
            raise RuntimeError("UpstreamPool.start() was not awaited")
        return self._session

    async def close(self) -> None:
        await self.http.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
