"""Relay an OpenAI-wire SSE stream from an upstream to the client, chunk by chunk.

Every network read is handed to the Rust ``ChatStreamScanner`` in one call: it parses the read's
events, checks them (valid JSON objects, in-band errors, ``[DONE]``, ``finish_reason``) and returns
the bytes to write to the client in one write plus what they say about the answer. Nothing is
buffered beyond the current read.

Before the first event reaches the client the stream may still fail over (``open_stream``); once
it has been written, the response is committed, and a failure ends it with an in-band error event
the OpenAI SDK raises on, never with a ``[DONE]`` that would make a cut answer look complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from edgeproxy._core import ChatStreamScanner, ChunkScan, encode_sse
from edgeproxy.errors import SseError
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline, Permit
from edgeproxy.server.client_wire import OpenAIStream, StreamEncoder
from edgeproxy.server.responses import midstream_error
from edgeproxy.snapshot import Route
from edgeproxy.snapshot.wire import StreamTranslator
from edgeproxy.telemetry.request import AttemptTelemetry
from edgeproxy.upstreams.http1 import UpstreamResponse

DONE = "[DONE]"
MAX_HELD_BYTES = 1024 * 1024
_DONE_EVENT = encode_sse(DONE)
# The first chunk usually holds only the role; the Rust scanner reports ``started`` only once a
# delta carries content, tool calls, a function call, a refusal or reasoning content (or a
# finish_reason or usage arrives), so a stream that dies right after its role chunk can still
# fail over before the client has seen a byte.


@dataclass
class StreamProgress:
    events: int = 0  # content events relayed to the client
    started: bool = False  # an event carried something of the answer (not just the role)
    done: bool = False  # upstream sent [DONE]
    finished: bool = False  # a choice carried a finish_reason: the answer is complete
    usage: dict[str, Any] | None = None  # the upstream's usage chunk, when it sends one
    model: str | None = None  # the model the upstream says answered
    id: str | None = None  # the completion id the client has seen
    text: list[str] = field(default_factory=list)  # choice 0's content so far (for resume)
    tool_calls: bool = False  # a tool call started: the answer cannot be resumed as text
    multiple_choices: bool = False  # n > 1: not resumable either

    @property
    def resumable(self) -> bool:
        """A committed answer another candidate could continue: plain text of one choice."""
        return bool(self.text) and not self.tool_calls and not self.multiple_choices


# The proxy's own usage for an answer's text: awaited, since a large prompt is counted off
# the event loop.
UsageCounter = Callable[[str], Awaitable[dict[str, int]]]
# The same without waiting, for the relay's ``finally`` (telemetry): an await there is cancelled
# when the client leaves right after [DONE], as SDK clients do.
UsageCounterNow = Callable[[str], dict[str, int]]


@dataclass(frozen=True)
class StreamOptions:
    """How a relayed stream is adjusted on its way to the client (all off by default).

    ``continues``: this stream resumes another one the client is already reading; its chunks
    carry that stream's id, and its role-only opening chunk is dropped. ``prior_usage``: tokens
    the earlier leg(s) consumed, added to this stream's usage chunk so the client sees the whole
    cost. ``count_usage``: when the client asked for usage (``stream_options.include_usage``) and
    the upstream sends none, the proxy's own count (from the answer's text) is sent instead.
    """

    continues: StreamProgress | None = None
    prior_usage: Mapping[str, int] | None = None
    count_usage: UsageCounter | None = None
    # An upstream whose wire streams another format: its bytes become OpenAI SSE first (made
    # per attempt by the candidate's wire: a translator holds the state of one stream).
    translator: StreamTranslator | None = None


# The response headers of every stream the proxy writes (relayed, replayed or followed).
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class SseResponse(web.StreamResponse):
    """A stream response whose headers leave with its first bytes, not in a write of their own.

    The relay always writes the first event right after ``prepare()`` (the commit point), so
    sending the headers alone would cost a system call per stream (aiohttp's ``Response`` does
    the same for whole bodies; the attribute is aiohttp's switch for it).
    """

    _send_headers_immediately = False


class UpstreamStream:
    """An open upstream SSE response plus the Rust scanner that checks it chunk by chunk."""

    def __init__(self, response: UpstreamResponse, options: StreamOptions | None = None) -> None:
        self.response = response
        self.progress = StreamProgress()
        self.options = options or StreamOptions()
        continues, prior = self.options.continues, self.options.prior_usage
        self.scanner = ChatStreamScanner(
            continuation=continues is not None,
            continuation_id=continues.id if continues is not None else None,
            prior_usage=(
                (prior.get("prompt_tokens", 0), prior.get("completion_tokens", 0))
                if prior
                else None
            ),
        )
        self.translator = self.options.translator
        self._tail = False  # the translator's last bytes were handed out: the next read is EOF
        # [DONE] arrived without usage and the proxy counts it: the usage chunk and [DONE]
        # follow this read's bytes (counting is awaited, so ``_check`` cannot add them).
        self._usage_due = False

    async def read(self, within: float, timeout_class: FailureClass) -> bytes | None:
        """Bytes for the client from the next network read; None at end of stream.

        Raises AttemptFailure when the upstream stalls, drops the connection, or sends something
        that is not a valid event of this wire.
        """
        if self._tail:
            return None
        try:
            async with asyncio.timeout(within):
                chunk = await self.response.readany()
        except TimeoutError:
            raise AttemptFailure(
                timeout_class, f"no data from upstream for {within:.3g}s"
            ) from None
        except ConnectionError as exc:
            raise AttemptFailure(
                FailureClass.CUT, f"upstream connection lost: {type(exc).__name__}"
            ) from None
        if self.translator is not None:
            # Another wire's stream, as OpenAI SSE (an in-stream error event raises the
            # AttemptFailure it stands for).
            ended = not chunk
            chunk = self.translator.finish() if ended else self.translator.feed(chunk)
            if ended:
                self._tail = True
                usage = self.translator.usage
                if self.progress.usage is None and usage is not None:
                    # The client asked for no usage chunk; telemetry still gets the real one.
                    self.progress.usage = usage
                return await self._with_usage(self._check(self._scan(chunk))) if chunk else None
            if not chunk:
                return b""
        elif not chunk:
            return None
        return await self._with_usage(self._check(self._scan(chunk)))

    def _scan(self, chunk: bytes) -> ChunkScan:
        try:
            return self.scanner.feed(chunk)
        except SseError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad SSE from upstream: {exc}") from None

    def _check(self, scan: ChunkScan) -> bytes:
        """Fold one chunk's scan into the progress; the bytes to write, or the failure raised.

        A chunk that fails is dropped whole, good events before the failure included: their
        bytes are never written, so they must not count as sent either (a resume continues
        exactly the text the client has).
        """
        if scan.malformed is not None:
            raise AttemptFailure(FailureClass.MALFORMED, scan.malformed)
        if scan.error_event is not None:
            raise UpstreamErrorEvent(scan.error_event)
        progress = self.progress
        progress.events += scan.events
        progress.started = progress.started or scan.started
        progress.finished = progress.finished or scan.finished
        progress.tool_calls = progress.tool_calls or scan.tool_calls
        progress.multiple_choices = progress.multiple_choices or scan.multiple_choices
        if scan.text:
            progress.text.append(scan.text)
        if scan.usage is not None:
            progress.usage = orjson.loads(scan.usage)
        if progress.model is None:
            progress.model = scan.model
        if progress.id is None:
            progress.id = scan.id
        if not scan.done:
            return scan.out
        progress.done = True  # nothing after [DONE] is part of the answer
        if progress.usage is None and self.options.count_usage is not None:
            self._usage_due = True
            return scan.out
        return scan.out + _DONE_EVENT

    async def _with_usage(self, out: bytes) -> bytes:
        """``out``, followed by the counted usage chunk and [DONE] when they are due."""
        if not self._usage_due:
            return out
        self._usage_due = False
        return out + await self._counted_usage() + _DONE_EVENT

    async def _counted_usage(self) -> bytes:
        """A usage chunk from the proxy's own count, shaped like OpenAI's (empty ``choices``)."""
        assert self.options.count_usage is not None
        counted = await self.options.count_usage("".join(self.progress.text))
        self.progress.usage = counted  # this leg's own, for telemetry
        usage = add_usage(counted, self.options.prior_usage or {})
        original = self.options.continues or self.progress
        chunk: dict[str, Any] = {
            "id": original.id,
            "object": "chat.completion.chunk",
            "model": original.model,
            "choices": [],
            "usage": usage,
        }
        return encode_sse(orjson.dumps(chunk).decode())

    def close(self) -> None:
        """Drop the connection (it may be mid-body, so it must not go back to the pool)."""
        self.response.close()

    def release(self) -> None:
        self.response.release()


def add_usage(usage: Mapping[str, Any], prior: Mapping[str, int]) -> dict[str, Any]:
    """``usage`` plus the prompt and completion tokens of earlier legs."""
    out = dict(usage)
    for name in ("prompt_tokens", "completion_tokens"):
        value = out.get(name)
        out[name] = (value if isinstance(value, int) else 0) + prior.get(name, 0)
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


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
    response: UpstreamResponse, within: float, options: StreamOptions | None = None
) -> tuple[UpstreamStream, bytes]:
    """Read until the answer's first token; return the stream and the bytes to send first.

    Anything that goes wrong here happens before the commit point, so the caller may fail over.
    The caller bounds the whole wait (headers and first event) with its first-token timeout.
    """
    stream = UpstreamStream(response, options)
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


@dataclass
class Leg:
    """One upstream feeding the client's stream: the first, or a resumption after a failure."""

    stream: UpstreamStream
    first: bytes
    permit: Permit
    attempt: AttemptTelemetry
    candidate: str  # provider/region/model, for the resume note
    # The proxy's own count, for telemetry when the upstream reports no usage (e.g. a cut).
    count_usage: UsageCounterNow | None = None


# Given everything relayed so far, start another candidate that continues the text; None when
# no candidate can (or may) do it.
Resume = Callable[[str, StreamProgress, str], Awaitable[Leg | None]]


class StreamTap(Protocol):
    """Sees every byte the client is sent (the cache records and shares the stream with it)."""

    def write(self, data: bytes) -> None: ...

    def end(self, complete: bool, error: bytes) -> None: ...


class _Writer:
    """The client's response in the client's wire (``encoder``), with every write also handed,
    in the relay's own OpenAI form, to the tap."""

    def __init__(
        self, response: web.StreamResponse, tap: StreamTap | None, encoder: StreamEncoder
    ) -> None:
        self.response = response
        self.tap = tap
        self.encoder = encoder

    async def write(self, data: bytes) -> None:
        await self.response.write(self.encoder.encode(data))
        if self.tap is not None:
            self.tap.write(data)


async def relay_to_client(
    request: web.Request,
    leg: Leg,
    headers: dict[str, str],
    route: Route,
    deadline: Deadline,
    rid: str,
    resume: Resume | None = None,
    tap: StreamTap | None = None,
    encoder: StreamEncoder | None = None,
) -> web.StreamResponse:
    """Relay a committed stream to the client.

    Each leg's breaker permit is settled here: success only when the answer is complete. A
    failure after the commit either resumes on another candidate (``on_midstream_failure:
    resume``, plain text only) or ends the stream with an in-band error — never with ``[DONE]``.
    """
    response = SseResponse(
        status=200,
        headers={**headers, **SSE_HEADERS},
    )
    original = leg.stream.progress  # the id and first chunks the client saw
    encoder = encoder or OpenAIStream()
    out = _Writer(response, tap, encoder)
    sent_text: list[str] = []
    events = 0
    complete, error = False, b""
    try:
        await response.prepare(request)  # the commit point: from here on, no silent failover
        while True:
            failure = await _pump(out, leg, route, deadline)
            sent_text.extend(leg.stream.progress.text)
            events += leg.stream.progress.events
            if failure is None:
                complete = True
                break
            if resume is not None and leg.stream.progress.resumable and not _tool_calls(original):
                resumed = await resume("".join(sent_text), original, leg.candidate)
                if resumed is not None:
                    # An SSE comment: invisible to SDKs, visible to anyone reading the wire.
                    note = f": edgeproxy resumed on {resumed.candidate} after {failure.failure}\n\n"
                    await out.write(note.encode())
                    leg = resumed
                    continue
            upstream = failure.data if isinstance(failure, UpstreamErrorEvent) else None
            # The error, in the client's wire, ends the stream: never a [DONE] after a cut.
            await response.write(encoder.error(failure, events, rid, upstream))
            error = (
                encode_sse(upstream)
                if upstream is not None
                else midstream_error(failure, events, rid)
            )
            break
        # The closing bytes and the end of the chunked body in one write.
        await response.write_eof(encoder.close() if complete else b"")
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        # The client went away; _pump already dropped the upstream. Anyone sharing this stream
        # (a coalesced follower) is told it broke.
        complete = False
        error = midstream_error(
            AttemptFailure(FailureClass.CUT, "the shared stream's first client went away"),
            events,
            rid,
        )
    finally:
        if tap is not None:
            tap.end(complete, error)
    return response


def _tool_calls(progress: StreamProgress) -> bool:
    return progress.tool_calls or progress.multiple_choices


async def _pump(out: _Writer, leg: Leg, route: Route, deadline: Deadline) -> AttemptFailure | None:
    """Copy one leg to the client until it ends. Returns its failure, or None when complete.

    Raises ConnectionError when the client goes away (the leg is dropped, neutrally)."""
    upstream = leg.stream
    clean = False
    with leg.attempt.relay() as relay:
        try:
            await out.write(leg.first)
            relay.chunk(len(leg.first))
            while not upstream.progress.done:
                idle, by_deadline = deadline.clip(route.timeouts.idle)
                timeout_class = FailureClass.DEADLINE if by_deadline else FailureClass.IDLE_TIMEOUT
                try:
                    data = await upstream.read(max(idle, 0.0), timeout_class)
                except AttemptFailure as failure:
                    leg.permit.failure(failure.failure)
                    relay.fail(failure)
                    return failure
                if data is None:
                    if not upstream.progress.finished:
                        cut = AttemptFailure(
                            FailureClass.CUT, "upstream closed the stream before it was complete"
                        )
                        leg.permit.failure(cut.failure)
                        relay.fail(cut)
                        return cut
                    # Every choice finished but [DONE] never came: the answer is whole, so the
                    # client gets the terminator it expects.
                    await out.write(encode_sse(DONE))
                    break
                if data:
                    await out.write(data)
                    relay.chunk(len(data))
            clean = True
            relay.complete()
            return None
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            relay.client_gone()
            raise
        finally:
            if upstream.progress.usage is not None:
                leg.attempt.record_usage(upstream.progress.usage)
            elif leg.count_usage is not None:
                counted = leg.count_usage("".join(upstream.progress.text))
                leg.attempt.record_usage(counted, estimated=True)
            if clean:
                leg.permit.success()
                upstream.release()
            else:
                leg.permit.release()  # settles nothing if already failed; a client leaving is neutral
                upstream.close()
            leg.attempt.end()
