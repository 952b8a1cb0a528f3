"""One upstream attempt, in the candidate's wire: send, then wait for the whole answer (non-stream) or
the first token (stream), within the attempt's time limits clipped to the request deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.server.context import ProxyState
from edgeproxy.server.upstream_stream import (
    StreamOptions,
    UpstreamStream,
    open_stream,
    usage_is_valid,
)
from edgeproxy.snapshot import Candidate, Route
from edgeproxy.telemetry.redact import redact_name
from edgeproxy.upstreams.http1 import UpstreamResponse
from edgeproxy.upstreams.send import send

# A non-stream answer larger than this is refused rather than buffered without bound.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamCall:
    """What one attempt sends, and where."""

    state: ProxyState
    route: Route
    candidate: Candidate
    body: bytes
    deadline: Deadline
    rid: str
    trace_headers: Mapping[str, str]
    # The inner (OpenAI-shaped) body ``body`` was made from: a wire's stream translator may
    # depend on what was asked (Anthropic's extended thinking).
    request: Mapping[str, Any] | None = None

    async def send(self, stream: bool) -> UpstreamResponse:
        return await send(
            self.state.pool.http,
            self.candidate,
            self.body,
            stream=stream,
            connect_timeout=self.route.timeouts.connect,
            request_id=self.rid,
            extra_headers=self.trace_headers,
        )


class Within:
    """Bound a step by ``limit`` clipped to the deadline; a timeout becomes an AttemptFailure
    (classed ``deadline`` when the request's deadline, not the step's own limit, ran out).

    A class rather than an ``@asynccontextmanager``: it runs on every attempt, and the generator
    machinery costs more than the timeout itself.
    """

    __slots__ = ("allowed", "by_deadline", "on_timeout", "timeout", "what")

    def __init__(self, deadline: Deadline, limit: float, on_timeout: FailureClass, what: str):
        self.allowed, self.by_deadline = deadline.clip(limit)
        self.on_timeout = on_timeout
        self.what = what
        self.timeout = asyncio.timeout(self.allowed)

    async def __aenter__(self) -> float:
        await self.timeout.__aenter__()
        return self.allowed

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.timeout.__aexit__(kind, exc, tb)
        except TimeoutError:
            failure = FailureClass.DEADLINE if self.by_deadline else self.on_timeout
            raise AttemptFailure(failure, f"no {self.what} within {self.allowed:.3g}s") from None


async def attempt_once(call: UpstreamCall) -> tuple[bytes, dict[str, Any]]:
    """One non-stream attempt: the whole answer (bytes as received) and its parsed form."""
    limit = call.route.timeouts.response
    async with Within(call.deadline, limit, FailureClass.RESPONSE_TIMEOUT, "complete answer"):
        response = await call.send(stream=False)
        try:
            data = await response.read(MAX_RESPONSE_BYTES)
        except ConnectionError as exc:
            raise AttemptFailure(
                FailureClass.CUT, f"upstream connection lost mid-body: {type(exc).__name__}"
            ) from None
        finally:
            response.release()
    if len(data) > MAX_RESPONSE_BYTES:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is larger than 64 MiB")
    # The candidate's wire checks the answer and turns it into an OpenAI chat.completion.
    data, parsed = call.candidate.wire.answer(data)
    if isinstance(parsed.get("model"), str):
        parsed["model"] = redact_name(parsed["model"])  # for the span (the client gets ``data``)
    if parsed.get("usage") is not None and not usage_is_valid(parsed["usage"]):
        # Not a count the proxy can pass on or bill by: dropped, so the proxy counts its own.
        del parsed["usage"]
        data = orjson.dumps(parsed)
    return data, parsed


async def attempt_stream(
    call: UpstreamCall, options: StreamOptions | None = None
) -> tuple[UpstreamStream, bytes]:
    """One stream attempt, up to its first token: the open stream and the bytes to send first."""
    limit = call.route.timeouts.first_token
    async with Within(
        call.deadline, limit, FailureClass.FIRST_TOKEN_TIMEOUT, "first event"
    ) as allowed:
        response = await call.send(stream=True)
        if response.content_type != "text/event-stream":
            response.close()
            raise AttemptFailure(
                FailureClass.MALFORMED,
                f"upstream answered a stream request with {response.content_type!r}",
            )
        options = options or StreamOptions()
        translator = call.candidate.wire.stream(
            include_usage=options.count_usage is not None, request=call.request
        )
        if translator is not None:
            options = replace(options, translator=translator)
        return await open_stream(response, allowed, options)
