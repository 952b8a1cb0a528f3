"""Relay a committed stream to the client, leg by leg, in the client's wire.

Once the first event has been written, the response is committed: a failure of the upstream
ends it with an in-band error event the client's SDK raises on, never with a ``[DONE]`` that
would make a cut answer look complete, or (``on_midstream_failure: resume``) continues it on
another candidate from the text the client already has.

A client that stops reading cannot outlive the request's deadline: every write to it is bounded
by what is left of ``timeouts.total`` (``ClientWriteTimeout``). Upstream words reaching the
client (an in-band error, a failure detail) are scrubbed of credentials (``telemetry.redact``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from aiohttp import web

from edgeproxy._core import encode_sse
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline, Permit
from edgeproxy.server.answer_text import MAX_RESUME_CHARS, AnswerText
from edgeproxy.server.ingress.base import StreamEncoder
from edgeproxy.server.ingress.openai_chat import OpenAIStream
from edgeproxy.server.ledger import LegReport
from edgeproxy.server.responses import midstream_error
from edgeproxy.server.upstream_stream import (
    DONE,
    MAX_SKIPPED_EVENTS,
    StreamProgress,
    UpstreamErrorEvent,
    UpstreamStream,
)
from edgeproxy.snapshot import Route
from edgeproxy.telemetry.redact import redact

# The response headers of every stream the proxy writes (relayed, replayed or followed).
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class SseResponse(web.StreamResponse):
    """A stream response whose headers leave with its first bytes, not in a write of their own.

    The relay always writes the first event right after ``prepare()`` (the commit point), so
    sending the headers alone would cost a system call per stream (aiohttp's ``Response`` does
    the same for whole bodies; the attribute is aiohttp's switch for it).
    """

    _send_headers_immediately = False


@dataclass
class Leg:
    """One upstream feeding the client's stream: the first, or a resumption after a failure."""

    stream: UpstreamStream
    first: bytes
    permit: Permit  # its breaker's: settled when the leg ends (success only when complete)
    report: LegReport  # what the leg tells the ledger (and telemetry)
    # The proxy's own count of the answer, for when the upstream reports no usage (a cut, or
    # an upstream that never sends it): the completion tokens of a text, and the prompt's.
    count_text: Callable[[str], int] | None = None
    prompt_tokens: Callable[[], int] | None = None

    @property
    def candidate(self) -> str:
        return self.report.candidate.key


class Capture(Protocol):
    """Where a committed answer's text goes when the policy captures content."""

    def __call__(self, *, output_messages: list[dict[str, str]]) -> None: ...


# Given everything relayed so far, start another candidate that continues the text; None when
# no candidate can (or may) do it.
Resume = Callable[[str, StreamProgress, str], Awaitable[Leg | None]]


class StreamTap(Protocol):
    """Sees every byte the client is sent (the cache records and shares the stream with it)."""

    def write(self, data: bytes) -> None: ...

    def end(self, complete: bool, error: bytes, cacheable: bool = True) -> None:
        """The stream ended; ``cacheable`` False: complete, but not to be stored (events of it
        were skipped)."""
        ...


class ClientWriteTimeout(Exception):
    """The client did not take the stream's bytes before the request's deadline."""


class _Writer:
    """The client's response in the client's wire (``encoder``), with every write also handed,
    in the relay's own OpenAI form, to the tap.

    Every write is bounded by what is left of the request's deadline: a client that stops
    reading cannot hold its slot (and the upstream) past ``timeouts.total``. One timer per
    stream, not one per write (a timeout per write costs more than the rest of the write when
    the client keeps up): when it fires during a write, that write is cancelled and becomes
    ``ClientWriteTimeout``; a write after it must not block at all.
    """

    def __init__(
        self,
        response: web.StreamResponse,
        tap: StreamTap | None,
        encoder: StreamEncoder,
        deadline: Deadline,
    ) -> None:
        self.response = response
        self.tap = tap
        self.encoder = encoder
        self._task = asyncio.current_task()
        self._writing = False
        self._expired = False  # the deadline has passed
        self._cancelled = False  # ... during a write, which the timer cancelled
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(deadline.remaining(), 0.0), self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._writing and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    def close(self) -> None:
        self._timer.cancel()

    async def write(self, data: bytes) -> None:
        await self.raw(self.encoder.encode(data))
        if self.tap is not None:
            self.tap.write(data)

    async def raw(self, data: bytes, eof: bool = False) -> None:
        """Bytes already in the client's wire (an error event, the end of the stream)."""
        send = self.response.write_eof(data) if eof else self.response.write(data)
        if self._expired:
            try:
                async with asyncio.timeout(0):  # only if the client takes it at once
                    await send
            except TimeoutError:
                raise ClientWriteTimeout() from None
            return
        self._writing = True
        try:
            await send
        except asyncio.CancelledError:
            if self._cancelled and self._task is not None and self._task.uncancel() == 0:
                raise ClientWriteTimeout() from None
            raise
        finally:
            self._writing = False


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
    capture: Capture | None = None,
) -> web.StreamResponse:
    """Relay a committed stream to the client (``capture``: hands the answer's text, as far as
    the legs kept it, to the request's span when the policy captures content).

    Each leg's breaker permit is settled here: success only when the answer is complete. A
    failure after the commit either resumes on another candidate (``on_midstream_failure:
    resume``, plain text only) or ends the stream with an in-band error — never with ``[DONE]``.
    A client that does not read before the deadline is dropped (its upstream too).
    """
    response = SseResponse(
        status=200,
        headers={**headers, **SSE_HEADERS},
    )
    original = leg.stream.progress  # the id and first chunks the client saw
    encoder = encoder or OpenAIStream()
    out = _Writer(response, tap, encoder, deadline)
    # The text the client has, for a resume: None once none is possible.
    sent_text: list[str] | None = [] if resume is not None else None
    captured: list[str] = []
    events = 0
    skipped = 0
    complete, error = False, b""
    try:
        await response.prepare(request)  # the commit point: from here on, no silent failover
        while True:
            if sent_text is None:
                leg.stream.progress.text.stop_keeping()
            failure = await _pump(out, leg, route, deadline)
            progress = leg.stream.progress
            captured.extend(progress.text.captured)
            events += progress.events
            skipped += leg.stream.skipped
            kept = progress.text.kept
            if sent_text is not None:
                sent_text = [*sent_text, kept] if kept is not None else None
            if failure is None:
                complete = True
                break
            if (
                resume is not None
                and sent_text is not None
                and progress.resumable
                and not _tool_calls(original)
                and sum(map(len, sent_text)) <= MAX_RESUME_CHARS
            ):
                resumed = await resume("".join(sent_text), original, leg.candidate)
                if resumed is not None:
                    # An SSE comment: invisible to SDKs, visible to anyone reading the wire.
                    note = f": edgeproxy resumed on {resumed.candidate} after {failure.failure}\n\n"
                    await out.write(note.encode())
                    leg = resumed
                    continue
            # Upstream words (an in-band error's data, a failure detail quoting the upstream)
            # reach the client scrubbed of credentials.
            upstream = failure.data if isinstance(failure, UpstreamErrorEvent) else None
            failure = AttemptFailure(failure.failure, redact(failure.detail))
            error = (
                encode_sse(upstream)
                if upstream is not None
                else midstream_error(failure, events, rid)
            )
            # The error, in the client's wire, ends the stream: never a [DONE] after a cut.
            await out.raw(encoder.error(failure, events, rid, upstream))
            break
        # The closing bytes and the end of the chunked body in one write.
        await out.raw(encoder.close() if complete else b"", eof=True)
    except ClientWriteTimeout:
        # _pump already dropped the upstream (neutrally); drop the client too, so its slot and
        # socket are free now rather than whenever it reads again.
        complete = False
        error = _client_gone_error(events, rid)
        if request.transport is not None:
            request.transport.abort()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        # The client went away; _pump already dropped the upstream. Anyone sharing this stream
        # (a coalesced follower) is told it broke.
        complete = False
        error = _client_gone_error(events, rid)
    finally:
        out.close()
        if tap is not None:
            tap.end(complete, error, cacheable=skipped == 0)
        if capture is not None:
            capture(output_messages=[{"role": "assistant", "content": "".join(captured)}])
    return response


def _client_gone_error(events: int, rid: str) -> bytes:
    return midstream_error(
        AttemptFailure(FailureClass.CUT, "the shared stream's first client went away"),
        events,
        rid,
    )


def _tool_calls(progress: StreamProgress) -> bool:
    return progress.tool_calls or progress.multiple_choices


async def _pump(out: _Writer, leg: Leg, route: Route, deadline: Deadline) -> AttemptFailure | None:
    """Copy one leg to the client until it ends. Returns its failure, or None when complete.

    Raises ConnectionError when the client goes away and ClientWriteTimeout when it does not
    read before the deadline (either way the leg is dropped, neutrally)."""
    upstream = leg.stream
    upstream.skips_allowed = MAX_SKIPPED_EVENTS  # committed: a stray bad event is skipped
    text = upstream.progress.text
    report = leg.report
    clock = deadline.clock
    clean = False
    report.committed()
    try:
        await out.write(leg.first)
        report.chunk(len(leg.first))
        content_reads, quiet_since = upstream.content_reads, clock.monotonic()
        while not upstream.progress.done:
            try:
                data = await _read(upstream, route, deadline, quiet_since)
            except AttemptFailure as failure:
                leg.permit.failure(failure.failure)
                report.failed(failure)
                return failure
            if upstream.content_reads != content_reads:
                content_reads, quiet_since = upstream.content_reads, clock.monotonic()
            await _count_pieces(text, leg.count_text)
            if data is None:
                if not upstream.progress.finished:
                    cut = AttemptFailure(
                        FailureClass.CUT, "upstream closed the stream before it was complete"
                    )
                    leg.permit.failure(cut.failure)
                    report.failed(cut)
                    return cut
                # Every choice finished but [DONE] never came: the answer is whole, so the
                # client gets the terminator it expects.
                await out.write(encode_sse(DONE))
                break
            if data:
                await out.write(data)
                report.chunk(len(data))
        clean = True
        return None
    except ClientWriteTimeout:
        report.client_left(CLIENT_TIMEOUT, "the client did not read the stream before the deadline")
        raise
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        report.client_left("client_gone")
        raise
    finally:
        report.skipped = upstream.skipped
        if clean:
            leg.permit.success()
            upstream.release()
        else:
            leg.permit.release()  # settles nothing if already failed; a client leaving is neutral
            upstream.close()
        model = upstream.progress.model
        if upstream.progress.usage is not None:
            report.end(upstream.progress.usage, response_model=model)
        elif leg.count_text is not None and leg.prompt_tokens is not None:
            # What is left uncounted is under COUNT_PIECE_CHARS: cheap to count inline.
            completion = text.counted + leg.count_text(text.uncounted())
            counted = {"prompt_tokens": leg.prompt_tokens(), "completion_tokens": completion}
            report.end(counted, estimated=True, response_model=model)
        else:
            report.end(None, response_model=model)


async def _read(
    upstream: UpstreamStream, route: Route, deadline: Deadline, quiet_since: float
) -> bytes | None:
    """The next read, within ``timeouts.idle`` of the last *content* (a keep-alive comment or
    an event that carries nothing does not reset it) and within the deadline."""
    idle = route.timeouts.idle
    quiet = deadline.clock.monotonic() - quiet_since
    allowed, by_deadline = deadline.clip(idle - quiet)
    if allowed <= 0:
        if by_deadline:
            raise AttemptFailure(FailureClass.DEADLINE, "the request's deadline passed mid-stream")
        raise AttemptFailure(
            FailureClass.IDLE_TIMEOUT,
            f"no content from upstream for {idle:.3g}s (keep-alives and empty events only)",
        )
    timeout_class = FailureClass.DEADLINE if by_deadline else FailureClass.IDLE_TIMEOUT
    return await upstream.read(allowed, timeout_class)


async def _count_pieces(text: AnswerText, count: Callable[[str], int] | None) -> None:
    """Count the answer's text in pieces as it grows, in a worker thread, so that neither the
    text nor its final count grows with the answer (an endless stream included)."""
    piece = text.take_piece()
    while piece is not None:
        if count is not None:
            try:
                text.counted += await asyncio.to_thread(count, piece)
            except asyncio.CancelledError:
                text.counted += -(-len(piece) // 4)  # the client left mid-count: estimate it
                raise
        piece = text.take_piece()


CLIENT_TIMEOUT: Final = "client_timeout"
