"""Send one attempt to a candidate over the pooled HTTP/1.1 client, in the candidate's wire.

Transport failures before a response become classified ``AttemptFailure``s here; a non-2xx
answer is read (at most 64 KiB) and classified by the candidate's wire. What differs between
providers (URL, body, headers, error shapes) is the wire's (``Candidate.wire``), never this
module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.upstreams.http1 import ConnectFailed, Http1Pool, UpstreamResponse, describe_error

# Error bodies are read for pass-through and messages; a hostile upstream cannot make us buffer more.
MAX_ERROR_BODY = 64 * 1024
# An error body that trickles is not waited for longer than this.
ERROR_BODY_SECONDS = 5.0


async def send(
    pool: Http1Pool,
    candidate: Candidate,
    body: bytes,
    *,
    stream: bool,
    connect_timeout: float,
    request_id: str,
    extra_headers: Mapping[str, str],
    to: str | None = None,
) -> UpstreamResponse:
    """POST ``body`` to the wire's URL for this attempt (``to``: another of its endpoints, e.g.
    its embeddings'); a 2xx response whose body is still unread, or raise AttemptFailure."""
    wire = candidate.wire
    headers = wire.request_headers(
        candidate, stream=stream, request_id=request_id, extra=extra_headers
    )
    url = wire.url(candidate, stream=stream) if to is None else to
    response = await post(pool, url, body, headers, connect_timeout)
    if 200 <= response.status < 300:
        return response
    error = await read_error_body(response)
    raise wire.failure(
        response.status, error, response.headers, response.content_type or "application/json"
    )


async def post(
    pool: Http1Pool, url: str, body: bytes, headers: Mapping[str, str], connect_timeout: float
) -> UpstreamResponse:
    """POST over the pool; a transport failure before the response becomes an AttemptFailure."""
    try:
        return await pool.post(url, body, headers, connect_timeout=connect_timeout)
    except TimeoutError:
        raise AttemptFailure(
            FailureClass.CONNECT_TIMEOUT, f"no connection within {connect_timeout:g}s"
        ) from None
    except ConnectFailed as exc:
        raise AttemptFailure(FailureClass.CONNECT_ERROR, str(exc)) from None
    except ConnectionError as exc:
        raise AttemptFailure(
            FailureClass.RESET, f"connection lost before the response: {describe_error(exc)}"
        ) from None


async def read_error_body(response: UpstreamResponse) -> bytes:
    """At most 64 KiB of an error response (for pass-through and messages), then drop it."""
    try:
        async with asyncio.timeout(ERROR_BODY_SECONDS):
            # One network read may overshoot the limit: cut here, not at each caller.
            return (await response.read(MAX_ERROR_BODY))[:MAX_ERROR_BODY]
    except (TimeoutError, ConnectionError):
        return b""
    finally:
        response.close()
