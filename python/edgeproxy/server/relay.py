"""Relay an OpenAI-wire SSE stream from an upstream to the client, chunk by chunk.

Every network read is handed to the Rust SSE parser in one call; the events it yields are checked
(valid JSON, in-band errors, ``[DONE]``, ``finish_reason``) and written to the client in one write.
Nothing is buffered beyond the current read.

Before the first event reaches the client the stream may still fail over (``open_stream``); once
it has been written, the response is committed, and a failure ends it with an in-band error event
the OpenAI SDK raises on, never with a ``[DONE]`` that would make a cut answer look complete.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson

from edgeproxy._core import SseEvent, SseParser, encode_sse
from edgeproxy.errors import SseError
from edgeproxy.resilience.failure import AttemptFailure, FailureClass

DONE = "[DONE]"
# Delta fields that carry part of the answer. The first chunk usually holds only the role; it is
# held back with the rest until one of these arrives, so a stream that dies right after its
# role chunk can still fail over before the client has seen a byte.
MAX_HELD_BYTES = 1024 * 1024
_SUBSTANCE = ("content", "tool_calls", "function_call", "refusal", "reasoning_content")


@dataclass
class StreamProgress:
    events: int = 0  # content events relayed to the client
    started: bool = False  # an event carried something of the answer (not just the role)
    done: bool = False  # upstream sent [DONE]
    finished: bool = False  # a choice carried a finish_reason: the answer is complete


class UpstreamStream:
    """An open upstream SSE response plus the parser state for it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = SseParser()
        self.progress = StreamProgress()

    async def read(self, within: float, timeout_class: FailureClass) -> bytes | None:
        """Bytes for the client from the next network read; None at end of stream.

        Raises AttemptFailure when the upstream stalls, drops the connection, or sends something
        that is not a valid event of this wire.
        """
        try:
            async with asyncio.timeout(within):
                chunk = await self.response.content.readany()
        except TimeoutError:
            raise AttemptFailure(
                timeout_class, f"no data from upstream for {within:.3g}s"
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise AttemptFailure(
                FailureClass.CUT, f"upstream connection lost: {type(exc).__name__}"
            ) from None
        if not chunk:
            return None
        try:
            events = self.parser.feed(chunk)
        except SseError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad SSE from upstream: {exc}") from None
        return b"".join(self._check(event) for event in events)

    def _check(self, event: SseEvent) -> bytes:
        progress = self.progress
        if progress.done:
            return b""  # nothing after [DONE] is part of the answer
        if event.data == DONE:
            progress.done = progress.started = True
            return encode_sse(DONE)
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise AttemptFailure(
                FailureClass.MALFORMED, "upstream sent an event that is not JSON"
            ) from None
        if not isinstance(chunk, dict):
            raise AttemptFailure(
                FailureClass.MALFORMED, "upstream sent an event that is not an object"
            )
        if "error" in chunk:
            raise UpstreamErrorEvent(event.data)
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                if choice.get("finish_reason"):
                    progress.finished = progress.started = True
                delta = choice.get("delta")
                if isinstance(delta, dict) and any(delta.get(k) for k in _SUBSTANCE):
                    progress.started = True
        if chunk.get("usage"):
            progress.started = True
        progress.events += 1
        return encode_sse(event.data)

    def close(self) -> None:
        """Drop the connection (it may be mid-body, so it must not go back to the pool)."""
        self.response.close()

    def release(self) -> None:
        self.response.release()


class UpstreamErrorEvent(AttemptFailure):
    """The upstream reported an error inside the stream (already in OpenAI's format)."""

    def __init__(self, data: str) -> None:
        super().__init__(
            FailureClass.SERVER_ERROR, f"upstream sent an in-band error: {_error_code(data)}"
        )
        self.data = data


def _error_code(data: str) -> str:
    try:
        err = orjson.loads(data).get("error", {})
        code = err.get("code") or err.get("type") or "error"
        return str(code)
    except (orjson.JSONDecodeError, AttributeError):
        return "error"


async def open_stream(
    response: aiohttp.ClientResponse, within: float
) -> tuple[UpstreamStream, bytes]:
    """Read until the answer's first token; return the stream and the bytes to send first.

    Anything that goes wrong here happens before the commit point, so the caller may fail over.
    The caller bounds the whole wait (headers and first event) with its first-token timeout.
    """
    stream = UpstreamStream(response)
    held: list[bytes] = []
    held_bytes = 0
    try:
        while True:
            out = await stream.read(within, FailureClass.FIRST_TOKEN_TIMEOUT)
            if out is None:
                raise AttemptFailure(
                    FailureClass.CUT, "upstream closed the stream before the first token"
                )
            held.append(out)
            held_bytes += len(out)
            if held_bytes > MAX_HELD_BYTES:
                raise AttemptFailure(
                    FailureClass.MALFORMED, "upstream sent over 1 MiB of events before any token"
                )
            if stream.progress.started:
                return stream, b"".join(held)
    except BaseException:
        stream.close()
        raise
