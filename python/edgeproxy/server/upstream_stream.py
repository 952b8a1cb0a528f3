"""An upstream's SSE stream, read and checked one network read at a time.

Every read is handed to the Rust ``ChatStreamScanner`` in one call: it parses the read's events,
checks them (valid JSON objects, in-band errors, ``[DONE]``, ``finish_reason``) and returns the
bytes to write to the client in one write plus what they say about the answer. Nothing is
buffered beyond the current read. A stream in another wire is turned into OpenAI SSE first by
its wire's translator (``StreamOptions.translator``).

Before the first event reaches the client the stream may still fail over (``open_stream``): a
stream that dies after its role chunk, before any content, is a failed attempt like any other.

What a hostile or careless upstream cannot do here (docs/failover.md, "Hostile upstreams"):
hold a stream open with keep-alive comments or empty events (``content_reads`` lets the relay
measure ``timeouts.idle`` as the time without *content*); end a committed stream with one stray
malformed event (``skips_allowed``, set by the relay after the commit point); make the proxy keep
its answer (``AnswerText``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from edgeproxy._core import ChatStreamScanner, ChunkScan, SseParser, encode_sse
from edgeproxy.errors import SseError
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.answer_text import AnswerText
from edgeproxy.snapshot.wire import StreamTranslator
from edgeproxy.telemetry.redact import redact, redact_text_body
from edgeproxy.upstreams.http1 import UpstreamResponse

DONE = "[DONE]"
MAX_HELD_BYTES = 1024 * 1024
_DONE_EVENT = encode_sse(DONE)
# The first chunk usually holds only the role; the Rust scanner reports ``started`` only once a
# delta carries content, tool calls, a function call, a refusal or reasoning content (or a
# finish_reason or usage arrives), so a stream that dies right after its role chunk can still
# fail over before the client has seen a byte.
# Malformed events skipped after the commit point before the stream is ended as broken.
MAX_SKIPPED_EVENTS: Final = 3


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
    # Characters of the answer kept for the request's span (``capture_content``; 0: none).
    capture_chars: int = 0


class UpstreamStream:
    """An open upstream SSE response plus the Rust scanner that checks it chunk by chunk."""

    def __init__(self, response: UpstreamResponse, options: StreamOptions | None = None) -> None:
        self.response = response
        self.options = options or StreamOptions()
        self.progress = StreamProgress()
        self.progress.text.capture_chars = self.options.capture_chars
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
