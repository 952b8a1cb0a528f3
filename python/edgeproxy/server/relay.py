"""Relay an OpenAI-wire SSE stream from an upstream to the client, chunk by chunk.

Every network read is handed to the Rust ``ChatStreamScanner`` in one call: it parses the read's
events, checks them (valid JSON objects, in-band errors, ``[DONE]``, ``finish_reason``) and returns
the bytes to write to the client in one write plus what they say about the answer. Nothing is
buffered beyond the current read.

Before the first event reaches the client the stream may still fail over (``open_stream``); once
it has been written, the response is committed, and a failure ends it with an in-band error event
the OpenAI SDK raises on, never with a ``[DONE]`` that would make a cut answer look complete.

What a hostile or careless upstream cannot do here (docs/failover.md, "Hostile upstreams"):

- make the proxy keep its answer: the text is kept for a resume only while one is possible and
  short enough (``MAX_RESUME_CHARS``), and counted for usage in pieces, off the event loop, as
  it goes (``AnswerText``);
- hold a stream open with keep-alive comments or empty events: ``timeouts.idle`` is the time
  without *content*;
- end a committed stream with one stray malformed event: up to ``MAX_SKIPPED_EVENTS`` are
  skipped (and counted) after the commit point;
- hand the client the provider key: its in-band errors and the proxy's own error text are
  scrubbed (``telemetry.redact``).

Nor can a client that stops reading outlive the request's deadline: every write to it is bounded
by what is left of ``timeouts.total`` (``ClientWriteTimeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp
import orjson
from aiohttp import web

from edgeproxy import tokens
from edgeproxy._core import (
    ChatStreamScanner,
    ChunkScan,
    SseParser,
    encode_sse,
)
from edgeproxy.errors import SseError
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline, Permit
from edgeproxy.server.client_wire import OpenAIStream, StreamEncoder
from edgeproxy.server.responses import midstream_error
from edgeproxy.snapshot import Route
from edgeproxy.snapshot.wire import StreamTranslator
from edgeproxy.telemetry.redact import redact, redact_text_body
from edgeproxy.telemetry.request import AttemptTelemetry, RelayTelemetry
from edgeproxy.upstreams.http1 import UpstreamResponse

DONE = "[DONE]"
MAX_HELD_BYTES = 1024 * 1024
_DONE_EVENT = encode_sse(DONE)
# The first chunk usually holds only the role; the Rust scanner reports ``started`` only once a
# delta carries content, tool calls, a function call, a refusal or reasoning content (or a
# finish_reason or usage arrives), so a stream that dies right after its role chunk can still
# fail over before the client has seen a byte.


# A committed answer longer than this is not resumed: its text would go to the next candidate as a
# prefill, and 256 Ki characters (~64 Ki tokens) fill most models' context windows on their own.
MAX_RESUME_CHARS: Final = 256 * 1024
# The answer's text is counted for usage in pieces of about this size, in a worker thread (the
# size at which ``tokens.count_async`` leaves the event loop); only the last, shorter piece is
# counted inline.
COUNT_PIECE_CHARS: Final = tokens.OFF_LOOP_BYTES
# Malformed events skipped after the commit point before the stream is ended as broken.
MAX_SKIPPED_EVENTS: Final = 3


class AnswerText:
    """Choice 0's text, kept only as far as it is needed: whole for a resume, while one is
    possible and the text is short enough (``MAX_RESUME_CHARS``); the part not yet counted for
    usage, until it is counted (``take_piece`` hands out pieces of ``COUNT_PIECE_CHARS`` cut at a
    point where the tokenizers split anyway, so the sum of the pieces' counts is the count of
    the whole, exactly, for the OpenAI encodings).
    """

    __slots__ = ("_kept", "_kept_chars", "_uncounted", "_uncounted_chars", "chars", "counted")

    def __init__(self) -> None:
        self._kept: list[str] | None = []  # None: not kept (too long, or no resume possible)
        self._kept_chars = 0
        self._uncounted: list[str] = []
        self._uncounted_chars = 0
        self.chars = 0  # all the text seen
        self.counted = 0  # completion tokens of the pieces counted so far

    def append(self, text: str) -> None:
        self.chars += len(text)
        if self._kept is not None:
            self._kept_chars += len(text)
            if self._kept_chars > MAX_RESUME_CHARS:
                self._kept = None
            else:
                self._kept.append(text)
        self._uncounted.append(text)
        self._uncounted_chars += len(text)

    def __bool__(self) -> bool:
        return self.chars > 0

    @property
    def keeping(self) -> bool:
        return self._kept is not None

    def stop_keeping(self) -> None:
        """No resume can use the text: keep none of it."""
        self._kept = None

    @property
    def kept(self) -> str | None:
        """The whole text, or None when it is not kept."""
        return "".join(self._kept) if self._kept is not None else None

    def uncounted(self) -> str:
        return "".join(self._uncounted)

    def take_piece(self) -> str | None:
        """A piece to count, once ``COUNT_PIECE_CHARS`` are waiting (None before); the rest
        waits for the next piece or ``uncounted``."""
        if self._uncounted_chars < COUNT_PIECE_CHARS:
            return None
        text = "".join(self._uncounted)
        cut = split_point(text)
        self._uncounted = [text[cut:]] if cut < len(text) else []
        self._uncounted_chars = len(text) - cut
        return text[:cut]


def split_point(text: str, look_back: int = 4096) -> int:
    """Where ``text`` may be cut so that counting the two parts apart gives the count of the
    whole: the last space in its final ``look_back`` characters that follows a non-space and
    precedes a letter (the OpenAI encodings' pre-tokenizers always start a piece there, and
    nothing before it depends on what follows); else its end (text without such a space, e.g. a
    base64 blob: counted apart, such a piece may be off by a token or two)."""
    stop = max(0, len(text) - look_back)
    i = text.rfind(" ", stop)
    while i > 0:
        if i + 1 < len(text) and text[i + 1].isalpha() and not text[i - 1].isspace():
            return i
        i = text.rfind(" ", stop, i)
    return len(text)


@dataclass
class StreamProgress:
    events: int = 0  # content events relayed to the client
    started: bool = False  # an event carried something of the answer (not just the role)
    done: bool = False  # upstream sent [DONE]
    finished: bool = False  # a choice carried a finish_reason: the answer is complete
    usage: dict[str, Any] | None = None  # the upstream's usage chunk, when it sends one
    model: str | None = None  # the model the upstream says answered
    id: str | None = None  # the completion id the client has seen
    text: AnswerText = field(default_factory=AnswerText)  # choice 0's content (resume, usage)
    tool_calls: bool = False  # a tool call started: the answer cannot be resumed as text
    multiple_choices: bool = False  # n > 1: not resumable either

    @property
    def resumable(self) -> bool:
        """A committed answer another candidate could continue: plain text of one choice,
        short enough to be sent as a prefill."""
        return (
            bool(self.text)
            and self.text.keeping
            and not self.tool_calls
            and not self.multiple_choices
        )


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
        self.scanner = self._new_scanner()
        self.translator = self.options.translator
        self._tail = False  # the translator's last bytes were handed out: the next read is EOF
        # [DONE] arrived without usage and the proxy counts it: the usage chunk and [DONE]
        # follow this read's bytes (counting is awaited, so ``_check`` cannot add them).
        self._usage_due = False
        # Reads that brought part of the answer (the idle timeout runs from the last one: a
        # keep-alive comment or an empty event is not content).
        self.content_reads = 0
        # Malformed events this stream may still skip (the relay allows some after the commit
        # point; before it, a malformed event fails over), and those it skipped.
        self.skips_allowed = 0
        self.skipped = 0
        # The bytes of the event the scanner has not finished (as of the last read): what a
        # recovery from a malformed event re-parses before the read that brought it.
        self._carry: list[bytes] = []
        self._note = b""  # written before the next bytes (a skipped event's comment)

    def _new_scanner(self) -> ChatStreamScanner:
        continues, prior = self.options.continues, self.options.prior_usage
        return ChatStreamScanner(
            continuation=continues is not None,
            continuation_id=continues.id if continues is not None else None,
            prior_usage=(
                (prior.get("prompt_tokens", 0), prior.get("completion_tokens", 0))
                if prior
                else None
            ),
        )

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
            scan = self.scanner.feed(chunk)
        except SseError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad SSE from upstream: {exc}") from None
        if scan.malformed is not None and self.skips_allowed > 0:
            scan = self._skip_malformed(chunk)
        if self.scanner.pending:
            # Only the unfinished event (reads may end anywhere in one).
            cut = _event_boundary(chunk)
            if cut >= 0:
                self._carry = [chunk[cut:]]
            else:
                self._carry.append(chunk)
        elif self._carry:
            self._carry = []
        return scan

    def _skip_malformed(self, chunk: bytes) -> ChunkScan:
        """The scan of ``chunk`` without its malformed events, from a fresh scanner (the old one
        stays failed). Raises the malformed failure when more than allowed were skipped."""
        carried = b"".join(self._carry)
        parser = SseParser(max_event_bytes=self.scanner.max_event_bytes)
        parser.feed(carried)  # events that ended there were scanned already
        try:
            events = parser.feed(chunk)
        except SseError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad SSE from upstream: {exc}") from None
        kept = []
        for event in events:
            if event.data == DONE:
                kept.append(_DONE_EVENT)
                break  # what follows is not part of the answer (nor checked)
            if ChatStreamScanner().feed(encode_sse(event.data)).malformed is None:
                kept.append(encode_sse(event.data))
            else:
                self.skipped += 1
                self.skips_allowed -= 1
        if self.skips_allowed < 0:
            raise AttemptFailure(
                FailureClass.MALFORMED,
                f"upstream sent {self.skipped} events that are not JSON objects",
            )
        self.scanner = self._new_scanner()
        # The unfinished event at the end of the chunk, if any, for the new scanner to finish.
        tail = b""
        if parser.pending:
            buffer = carried + chunk
            tail = buffer[max(_event_boundary(buffer), 0) :]
        scan = self.scanner.feed(b"".join(kept) + tail)
        if scan.malformed is not None:  # cannot happen: each event was checked alone
            raise AttemptFailure(FailureClass.MALFORMED, scan.malformed)
        # An SSE comment: invisible to SDKs, visible to anyone reading the wire.
        self._note += b": edgeproxy skipped a malformed event from the upstream\n\n"
        return scan

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
        if scan.started:
            self.content_reads += 1
        if scan.text:
            progress.text.append(scan.text)
        if scan.usage is not None:
            usage = orjson.loads(scan.usage)
            # A usage with a string (or anything else) where a count belongs is not the
            # upstream's word on what it billed: the proxy counts instead.
            if usage_is_valid(usage):
                progress.usage = usage
        if progress.model is None and scan.model is not None:
            progress.model = redact(scan.model)  # it goes on the attempt's span
        if progress.id is None:
            progress.id = scan.id
        out = scan.out
        if self._note:
            out, self._note = self._note + out, b""
        if not scan.done:
            return out
        progress.done = True  # nothing after [DONE] is part of the answer
        if progress.usage is None and self.options.count_usage is not None:
            self._usage_due = True
            return out
        return out + _DONE_EVENT

    async def _with_usage(self, out: bytes) -> bytes:
        """``out``, followed by the counted usage chunk and [DONE] when they are due."""
        if not self._usage_due:
            return out
        self._usage_due = False
        return out + await self._counted_usage() + _DONE_EVENT

    async def _counted_usage(self) -> bytes:
        """A usage chunk from the proxy's own count, shaped like OpenAI's (empty ``choices``)."""
        assert self.options.count_usage is not None
        text = self.progress.text
        counted = dict(await self.options.count_usage(text.uncounted()))
        counted["completion_tokens"] = counted.get("completion_tokens", 0) + text.counted
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


_COUNTS: Final = ("prompt_tokens", "completion_tokens", "total_tokens")


def usage_is_valid(usage: object) -> bool:
    """An upstream ``usage`` the proxy can take at its word: an object whose token counts (and
    ``*_details`` counts) are non-negative integers where present."""
    if not isinstance(usage, dict):
        return False
    for name, value in usage.items():
        if name in _COUNTS and not _is_count(value):
            return False
        if (
            name.endswith("_details")
            and value is not None
            and not (isinstance(value, dict) and all(_is_count(v) for v in value.values()))
        ):
            return False
    return True


def _is_count(value: object) -> bool:
    return value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
    )


class UpstreamErrorEvent(AttemptFailure):
    """The upstream reported an error inside the stream (already in OpenAI's format), scrubbed
    of credentials (an upstream may quote the key it was sent)."""

    def __init__(self, data: str) -> None:
        data = redact_text_body(data)
        super().__init__(
            FailureClass.SERVER_ERROR,
            f"upstream sent an in-band error: {redact(_error_code(data))}",
        )
        self.data = data


def _error_code(data: str) -> str:
    try:
        err = orjson.loads(data).get("error", {})
        code = err.get("code") or err.get("type") or "error"
        return str(code)
    except (orjson.JSONDecodeError, AttributeError):
        return "error"


def _event_boundary(data: bytes) -> int:
    """Where the last event of ``data`` ends: the index after its last blank line (two line
    ends in a row, whatever mix of CR, LF and CRLF), or -1 when it has none."""
    end = data.rfind(b"\n\n")
    if end >= 0:
        end += 2
    for blank in (b"\n\r", b"\r\r"):  # only after the last LF LF (usually: a few bytes)
        i = data.rfind(blank, max(end - 1, 0))
        if i >= 0:
            j = i + 3 if data[i + 2 : i + 3] == b"\n" else i + 2  # the second end a CRLF
            end = max(end, j)
    return end


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
) -> web.StreamResponse:
    """Relay a committed stream to the client.

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
    clock = deadline.clock
    clean = False
    with leg.attempt.relay() as relay:
        try:
            await out.write(leg.first)
            relay.chunk(len(leg.first))
            content_reads, quiet_since = upstream.content_reads, clock.monotonic()
            while not upstream.progress.done:
                try:
                    data = await _read(upstream, route, deadline, quiet_since)
                except AttemptFailure as failure:
                    leg.permit.failure(failure.failure)
                    relay.fail(failure)
                    return failure
                if upstream.content_reads != content_reads:
                    content_reads, quiet_since = upstream.content_reads, clock.monotonic()
                await _count_pieces(text, leg.count_usage)
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
        except ClientWriteTimeout:
            _client_timed_out(relay, leg.attempt)
            raise
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            relay.client_gone()
            raise
        finally:
            relay.skipped_events = upstream.skipped
            if upstream.progress.usage is not None:
                leg.attempt.record_usage(upstream.progress.usage)
            elif leg.count_usage is not None:
                # What is left uncounted is under COUNT_PIECE_CHARS: cheap to count inline.
                counted = dict(leg.count_usage(text.uncounted()))
                counted["completion_tokens"] = counted.get("completion_tokens", 0) + text.counted
                leg.attempt.record_usage(counted, estimated=True)
            if clean:
                leg.permit.success()
                upstream.release()
            else:
                leg.permit.release()  # settles nothing if already failed; a client leaving is neutral
                upstream.close()
            leg.attempt.end()


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


async def _count_pieces(text: AnswerText, counter: UsageCounterNow | None) -> None:
    """Count the answer's text in pieces as it grows, in a worker thread, so that neither the
    text nor its final count grows with the answer (an endless stream included)."""
    piece = text.take_piece()
    while piece is not None:
        if counter is not None:
            try:
                counted = await asyncio.to_thread(counter, piece)
            except asyncio.CancelledError:
                text.counted += -(-len(piece) // 4)  # the client left mid-count: estimate it
                raise
            text.counted += counted.get("completion_tokens", 0)
        piece = text.take_piece()


def _client_timed_out(relay: RelayTelemetry, attempt: AttemptTelemetry) -> None:
    """Telemetry of a client that did not read before the deadline: the request's outcome and
    error type ``client_timeout``; the attempt itself did nothing wrong."""
    outcome, detail = attempt.outcome, attempt.detail
    relay.fail(CLIENT_TIMEOUT, "the client did not read the stream before the deadline")
    attempt.outcome, attempt.detail = outcome, detail


CLIENT_TIMEOUT: Final = "client_timeout"
