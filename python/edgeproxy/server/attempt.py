"""One upstream attempt on the OpenAI wire: send, then wait for the whole answer (non-stream) or
the first token (stream), within the attempt's time limits clipped to the request deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from edgeproxy.policy.snapshot import Candidate, Route
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.resilience.failure import AttemptFailure, FailureClass
from edgeproxy.server.context import ProxyState
from edgeproxy.server.relay import StreamOptions, UpstreamStream, open_stream
from edgeproxy.upstreams import openai as openai_upstream

# A non-stream answer larger than this is refused rather than buffered without bound.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


async def attempt_once(
    state: ProxyState,
    route: Route,
    candidate: Candidate,
    body: bytes,
    deadline: Deadline,
    rid: str,
    trace_headers: Mapping[str, str],
) -> tuple[bytes, dict[str, Any]]:
    """One non-stream attempt: the whole answer (bytes as received) and its parsed form."""
    limit, by_deadline = deadline.clip(route.timeouts.response)
    try:
        async with asyncio.timeout(limit):
            response = await openai_upstream.send(
                state.pool.session,
                candidate,
                body,
                stream=False,
                connect_timeout=route.timeouts.connect,
                request_id=rid,
                extra_headers=trace_headers,
            )
            try:
                data = await response.content.read(MAX_RESPONSE_BYTES + 1)
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise AttemptFailure(
                    FailureClass.CUT, f"upstream connection lost mid-body: {type(exc).__name__}"
                ) from None
            finally:
                response.release()
    except TimeoutError:
        failure = FailureClass.DEADLINE if by_deadline else FailureClass.RESPONSE_TIMEOUT
        raise AttemptFailure(failure, f"no complete answer within {limit:.3g}s") from None
    if len(data) > MAX_RESPONSE_BYTES:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is larger than 64 MiB")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer has no 'choices' array")
    return data, parsed


async def attempt_stream(
    state: ProxyState,
    route: Route,
    candidate: Candidate,
    body: bytes,
    deadline: Deadline,
    rid: str,
    trace_headers: Mapping[str, str],
    options: StreamOptions | None = None,
) -> tuple[UpstreamStream, bytes]:
    """One stream attempt, up to its first token: the open stream and the bytes to send first."""
    limit, by_deadline = deadline.clip(route.timeouts.first_token)
    try:
        async with asyncio.timeout(limit):
            response = await openai_upstream.send(
                state.pool.session,
                candidate,
                body,
                stream=True,
                connect_timeout=route.timeouts.connect,
                request_id=rid,
                extra_headers=trace_headers,
            )
            if response.content_type != "text/event-stream":
                response.close()
                raise AttemptFailure(
                    FailureClass.MALFORMED,
                    f"upstream answered a stream request with {response.content_type!r}",
                )
            return await open_stream(response, limit, options)
    except TimeoutError:
        failure = FailureClass.DEADLINE if by_deadline else FailureClass.FIRST_TOKEN_TIMEOUT
        raise AttemptFailure(failure, f"no first event within {limit:.3g}s") from None
