"""One eval call to one candidate, through the proxy's own upstream client (docs/evals.md).

The request goes out as the proxy sends it (``upstreams/send.py`` with the candidate's wire:
its URL, body, auth headers and error classification), always as a stream so the time to the
first token is measured; the candidate's stream is read through its wire's translator (an
Anthropic stream becomes OpenAI chunks) and parsed by the Rust SSE parser. The result holds the
answer's text (a tool call: its arguments' JSON), its usage and cost, TTFT and latency, or the
classified failure. Nothing here retries: the runner decides.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from edgeproxy._core import SseError, SseParser
from edgeproxy.clock import Clock
from edgeproxy.cost import Usage, cost_usd
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.tokens import TokenizerError, count, count_chat
from edgeproxy.upstreams.http1 import Http1Pool
from edgeproxy.upstreams.send import send

# The most answer text kept from one call (graders read at most 64 KiB of it anyway).
MAX_ANSWER_CHARS: Final = 256 * 1024
NOT_RETRIED: Final = frozenset(
    {
        FailureClass.CLIENT_ERROR,
        FailureClass.CONTEXT_LENGTH,
        FailureClass.QUOTA_EXHAUSTED,
        FailureClass.AUTH_REJECTED,
        FailureClass.MODEL_NOT_FOUND,
        FailureClass.REDIRECT,
    }
)


@dataclass(frozen=True, slots=True)
class CallResult:
    text: str
    usage: Usage
    cost_usd: float
    latency_s: float
    ttft_s: float | None = None
    finish_reason: str | None = None
    failure: AttemptFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def retryable(self) -> bool:
        return self.failure is not None and self.failure.failure not in NOT_RETRIED


@dataclass
class _Answer:
    """What the stream said so far."""

    text: list[str] = field(default_factory=list)
    size: int = 0
    tools: dict[int, list[str]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    first_token_at: float | None = None
    done: bool = False

    def event(self, data: str, now: float) -> None:
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise AttemptFailure(FailureClass.MALFORMED, "an event is not JSON") from None
        if not isinstance(chunk, dict):
            raise AttemptFailure(FailureClass.MALFORMED, "an event is not a JSON object")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            kind = str(error.get("type") or error.get("code") or "error")[:64]
            failure = FailureClass.OVERLOADED if "overloaded" in kind else FailureClass.SERVER_ERROR
            raise AttemptFailure(failure, f"in-stream error: {kind}", code=kind)
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._mark(now)
            self._append(self.text, content)
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            assert isinstance(function, dict)
            arguments = function.get("arguments")
            index = call.get("index", 0)
            pieces = self.tools.setdefault(index if isinstance(index, int) else 0, [])
            self._mark(now)
            if isinstance(arguments, str):
                self._append(pieces, arguments)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]

    def _mark(self, now: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = now

    def _append(self, into: list[str], piece: str) -> None:
        if self.size + len(piece) <= MAX_ANSWER_CHARS:
            into.append(piece)
            self.size += len(piece)

    @property
    def answer(self) -> str:
        """The text, or the first tool call's arguments when the model called a tool."""
        text = "".join(self.text)
        if not text and self.tools:
            return "".join(self.tools[min(self.tools)])
        return text


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


def estimated_usage(candidate: Candidate, body: dict[str, Any], output: str) -> Usage:
    """Usage the upstream did not report: the prompt counted like the proxy counts it, the
    output text counted with the candidate's tokenizer (labelled an estimate)."""
    try:
        prompt = count_chat(body, candidate.tokenizer).tokens
        completion = count(output, candidate.tokenizer) if output else 0
    except TokenizerError:
        prompt, completion = 0, len(output) // 4
    return Usage(input_tokens=prompt, output_tokens=completion, estimated=True)


async def call(
    pool: Http1Pool,
    candidate: Candidate,
    body: dict[str, Any],
    *,
    clock: Clock,
    limit: float,
    connect_timeout: float = 10.0,
) -> CallResult:
    """Send ``body`` (an OpenAI Chat Completions body without ``model``) to ``candidate``;
    ``limit``: seconds for the whole call."""
    sent = stream_body(body)
    wire_body = candidate.wire.request_body(sent, candidate)
    answer = _Answer()
    start = clock.monotonic()
    failure: AttemptFailure | None = None
    try:
        async with asyncio.timeout(limit):
            response = await send(
                pool,
                candidate,
                wire_body,
                stream=True,
                connect_timeout=connect_timeout,
                request_id="eval-" + uuid.uuid4().hex[:16],
                extra_headers={},
            )
            try:
                await _read(response, candidate, answer, clock)
            except BaseException:
                response.close()  # a body read in part never goes back to the pool
                raise
            response.release()
    except AttemptFailure as exc:
        failure = exc
    except TimeoutError:
        failure = AttemptFailure(FailureClass.RESPONSE_TIMEOUT, f"no whole answer in {limit:g}s")
    except (ConnectionError, SseError) as exc:
        kind = FailureClass.MALFORMED if isinstance(exc, SseError) else FailureClass.RESET
        failure = AttemptFailure(kind, f"the stream broke: {type(exc).__name__}")
    latency = clock.monotonic() - start
    if failure is None and answer.finish_reason is None:
        failure = AttemptFailure(FailureClass.CUT, "the stream ended before the answer finished")
    text = answer.answer
    if answer.usage is not None:
        usage = Usage.parse(answer.usage)
    elif text or failure is None:
        usage = estimated_usage(candidate, sent, text)  # billed: the upstream answered
    else:
        usage = Usage()  # refused before answering: nothing billed
    ttft = answer.first_token_at - start if answer.first_token_at is not None else None
    return CallResult(
        text=text,
        usage=usage,
        cost_usd=cost_usd(candidate.price, usage),
        latency_s=latency,
        ttft_s=ttft,
        finish_reason=answer.finish_reason,
        failure=failure,
    )


async def _read(response: Any, candidate: Candidate, answer: _Answer, clock: Clock) -> None:
    translator = candidate.wire.stream(include_usage=True)
    parser = SseParser()
    while not answer.done:
        chunk = await response.readany()
        if not chunk:
            break
        data = translator.feed(chunk) if translator is not None else chunk
        for event in parser.feed(data):
            answer.event(event.data, clock.monotonic())
            if answer.done:
                break
    if translator is not None and not answer.done:
        for event in parser.feed(translator.finish()):
            answer.event(event.data, clock.monotonic())
