"""Writing a completion to the wire, non-stream or SSE, with response-level faults applied.

Connection-level faults that happen before any byte (status, reset, hang) are the provider's
job; everything here happens once the simulated model has started answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from . import netio, wire
from .completion import Completion
from .faults import Fault

# Waits until the provider stops (never returns earlier); used to keep a connection stalled.
Park = Callable[[], Awaitable[None]]


class Pacer:
    """Sleeps to an absolute schedule so that per-chunk overhead does not slow the stream."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._start = asyncio.get_running_loop().time()

    async def wait_for(self, index: int) -> None:
        if self._interval <= 0:
            return
        delay = self._start + index * self._interval - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)


async def send_json(
    request: web.Request,
    completion: Completion,
    *,
    delay: float,
    fault: Fault | None,
    park: Park,
    reports_usage: bool = True,
) -> web.StreamResponse:
    """Non-stream answer: the whole body after ``delay`` (first token + generation time)."""
    if delay > 0:
        await asyncio.sleep(delay)
    answer = wire.completion_object(
        completion_id=completion.completion_id,
        created=completion.created,
        model=completion.model,
        content=completion.content,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        tool_calls=_tool_calls(completion),
        reasoning_tokens=completion.reasoning_tokens,
        cached_tokens=completion.cached_tokens,
    )
    if not reports_usage:
        del answer["usage"]
    return await send_body(request, orjson.dumps(answer), fault=fault, park=park)


def _tool_calls(completion: Completion) -> list[dict[str, object]] | None:
    call = completion.tool_call
    if call is None:
        return None
    return [wire.tool_call_object(call.call_id, call.name, call.arguments)]


def _deltas(completion: Completion) -> list[dict[str, object]]:
    """The content deltas of a stream: text pieces, or a tool call and its argument pieces."""
    call = completion.tool_call
    if call is None:
        return [{"content": piece} for piece in completion.pieces]
    first = {**wire.tool_call_object(call.call_id, call.name, ""), "index": 0}
    deltas: list[dict[str, object]] = [{"tool_calls": [first]}]
    for piece in call.pieces:
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return deltas


async def send_body(
    request: web.Request, body: bytes, *, fault: Fault | None, park: Park
) -> web.StreamResponse:
    """A non-stream JSON body with the body-level faults (malformed, cut, stall) applied."""
    mode = fault.mode if fault is not None else "none"
    if mode == "malformed":
        return web.Response(body=wire.MALFORMED_BODY, content_type="application/json")
    if mode not in ("cut", "stall"):
        return web.Response(body=body, content_type="application/json")

    # A Content-Length promise followed by only half the body.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if mode == "stall":
        await park()
        netio.abort_transport(request.transport)
    else:
        netio.drop_connection(request)
    return response


async def keep_alive(
    request: web.Request, response: web.StreamResponse, park: Park, beat: bytes
) -> None:
    """Fault mode ``keepalive_only``: ``beat`` (a comment, a ping) every
    ``KEEPALIVE_INTERVAL`` and nothing else, until the client leaves or the provider stops."""
    while True:
        await response.write(beat)
        try:
            await asyncio.wait_for(park(), wire.KEEPALIVE_INTERVAL)
        except TimeoutError:
            continue
        netio.abort_transport(request.transport)
        return


async def send_stream(
    request: web.Request,
    completion: Completion,
    *,
    ttft: float,
    interval: float,
    include_usage: bool,
    fault: Fault | None,
    park: Park,
) -> tuple[web.StreamResponse, bool]:
    """SSE answer; returns the response and whether the stream reached its finish chunk."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if ttft > 0:
        await asyncio.sleep(ttft)

    def chunk(delta: dict[str, object], finish_reason: str | None = None) -> bytes:
        return wire.sse(
            wire.chunk_object(
                completion_id=completion.completion_id,
                created=completion.created,
                model=completion.model,
                delta=delta,
                finish_reason=finish_reason,
                include_usage=include_usage,
            )
        )

    await response.write(chunk({"role": "assistant", "content": ""}))
    pieces = _deltas(completion)
    # A fault "after N tokens" on a shorter answer fires before the finish chunk.
    fault_at = min(fault.after_tokens, len(pieces)) if fault is not None else -1
    mode = fault.mode if fault is not None else "none"
    pacer = Pacer(interval)
    for index in range(len(pieces) + 1):
        if index == fault_at:
            if mode == "cut":
                netio.drop_connection(request)
                return response, False
            if mode == "stall":
                await park()
                netio.abort_transport(request.transport)
                return response, False
            if mode == "malformed":
                await response.write(wire.SSE_MALFORMED)
            if mode == "overloaded":
                await response.write(wire.SSE_OVERLOADED)
                netio.drop_connection(request)
                return response, False
            if mode == "echo_key":
                error = {
                    "error": {
                        "message": wire.echo_key_message(request.headers),
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                }
                await response.write(wire.sse(error))
                netio.drop_connection(request)
                return response, False
            if mode == "keepalive_only":
                await keep_alive(request, response, park, wire.SSE_KEEPALIVE)
                return response, False
        if index == len(pieces):
            break
        await pacer.wait_for(index)
        await response.write(chunk(pieces[index]))

    await response.write(chunk({}, completion.finish_reason))
    if include_usage:
        await response.write(
            wire.sse(
                wire.usage_chunk(
                    completion_id=completion.completion_id,
                    created=completion.created,
                    model=completion.model,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    reasoning_tokens=completion.reasoning_tokens,
                    cached_tokens=completion.cached_tokens,
                )
            )
        )
    if mode != "no_done":
        await response.write(wire.SSE_DONE)
    await response.write_eof()
    return response, True
