"""The attempt function an exchange hands to the attempt loop: one candidate, one try.

It shapes the body for the candidate's wire and model, carries the trace context of the
attempt's span, and returns a typed value: ``Answer`` (a whole non-stream answer, its usage
already recorded in the ledger) or ``StreamStart`` (a stream up to its first token: the relay
takes it from there). Failures are raised as ``AttemptFailure`` for the loop to classify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from edgeproxy.context.breakpoints import with_breakpoints
from edgeproxy.events import ContextCompacted
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.server.attempt import UpstreamCall, attempt_once, attempt_stream
from edgeproxy.server.compaction import ContextFit
from edgeproxy.server.context import ProxyState
from edgeproxy.server.ledger import Ledger
from edgeproxy.server.prompt import PromptTokens
from edgeproxy.server.upstream_stream import StreamOptions, UpstreamStream
from edgeproxy.server.usage import UsageCounter, with_usage
from edgeproxy.snapshot import Candidate, Route


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole non-stream answer, OpenAI-shaped, with its usage in it."""

    body: bytes
    model: str | None  # the model the upstream says answered
    compacted: str | None = None  # "<tokens before>-><tokens after>" when compaction ran


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A stream attempt up to its first token: the open stream, the bytes to send first."""

    stream: UpstreamStream
    first: bytes
    number: int
    counter: UsageCounter  # the proxy's own count, for when the upstream reports no usage
    compacted: str | None = None  # "<tokens before>-><tokens after>" when compaction ran


Tried = Answer | StreamStart


def describe(value: Tried) -> tuple[int | None, str | None]:
    """What an answer says about itself for its ``AttemptEnded`` (non-stream answers)."""
    return 200, value.model if isinstance(value, Answer) else None


def discard(value: Tried) -> None:
    """A stream that won too late (its hedge partner answered in the same instant)."""
    if isinstance(value, StreamStart):
        value.stream.close()


class Attempter:
    """Tries one candidate for one exchange: ``await attempter(candidate, number)``."""

    def __init__(
        self,
        *,
        state: ProxyState,
        route: Route,
        deadline: Deadline,
        request_id: str,
        ledger: Ledger,
        prompt: PromptTokens,
        body: Mapping[str, Any],
        stream: bool,
        options: StreamOptions | None = None,
    ) -> None:
        """``options``: how streams are adjusted on their way (a resumed stream continues
        another; ``capture_chars`` keeps the answer's head for the request's span)."""
        self._state = state
        self._route = route
        self._deadline = deadline
        self._rid = request_id
        self._ledger = ledger
        self._prompt = prompt
        self._body = body
        self._stream = stream
        self.options = options or StreamOptions()
        # Set by the exchange when its plan marks candidates for compaction (docs/context.md).
        self.fit: ContextFit | None = None
        self._marked: dict[int, Mapping[str, Any]] = {}  # bodies with cache breakpoints, by id
        stream_options = body.get("stream_options")
        # The client asked for a usage chunk: a stream without one gets the proxy's count.
        self._wants_usage = (
            isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        )

    @property
    def body(self) -> Mapping[str, Any]:
        """The request as it goes upstream (OpenAI-shaped: before any candidate's compaction
        and before each wire shapes it)."""
        return self._body

    def with_body(self, body: Mapping[str, Any], options: StreamOptions) -> Attempter:
        """The same exchange with another body and stream options (a resumed stream)."""
        other = Attempter.__new__(Attempter)
        other.__dict__.update(self.__dict__)
        other._body = body
        other.options = options
        other._marked = {}
        if self.fit is not None:  # the same candidates compact the new body
            other.fit = self.fit.for_body(body, len(orjson.dumps(body)))
        return other

    def _with_breakpoints(self, body: Mapping[str, Any], tokens: int) -> Mapping[str, Any]:
        """``body`` with the route's automatic cache breakpoints, made once per body."""
        marked = self._marked.get(id(body))
        if marked is None:
            settings = self._route.prompt_cache
            marked = self._marked[id(body)] = with_breakpoints(
                body, tokens, settings.min_prefix_tokens
            )
        return marked

    async def __call__(self, candidate: Candidate, number: int) -> Tried:
        body, prompt, compacted = self._body, self._prompt, None
        estimate = len(prompt.raw) // 4
        if self.fit is not None and self.fit.needs(candidate):
            fitted = await self.fit.fitted(candidate)
            before = await self._prompt.count(candidate.tokenizer)
            body, estimate = fitted.body, fitted.tokens
            prompt = PromptTokens.counted(orjson.dumps(body), candidate.tokenizer, fitted.tokens)
            compacted = f"{before}->{fitted.tokens}"
            self._ledger.on_event(
                ContextCompacted(
                    number, candidate, before, fitted.tokens, tuple(fitted.layout.strategies)
                )
            )
        if self._route.prompt_cache.breakpoints == "auto":
            body = self._with_breakpoints(body, estimate)
        call = UpstreamCall(
            self._state,
            self._route,
            candidate,
            candidate.wire.request_body(body, candidate),
            self._deadline,
            self._rid,
            self._ledger.trace_headers(number),
            request=body,
        )
        counter = UsageCounter(prompt, candidate.tokenizer)
        if self._stream:
            # A large prompt's count starts now, off the loop: the stream's end finds it done.
            prompt.start(candidate.tokenizer)
            options = self.options
            if self._wants_usage:
                options = replace(options, count_usage=counter.count)
            opened, first = await attempt_stream(call, options)
            return StreamStart(opened, first, number, counter, compacted)
        answer, parsed = await attempt_once(call)
        # Inside the attempt: the count may wait for a worker thread (a large prompt).
        answer, usage, estimated = await with_usage(answer, parsed, counter)
        self._ledger.usage(number, usage, estimated=estimated)
        model = parsed.get("model")
        return Answer(answer, model if isinstance(model, str) else None, compacted)
