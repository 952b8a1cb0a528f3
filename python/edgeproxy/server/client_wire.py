"""The client's wire at the edge of an exchange.

Inside, every exchange is OpenAI-shaped (requests, answers, SSE chunks): the attempt loop, the
relay, the cache and the telemetry see one format. An app speaking Anthropic's Messages API gets
its request translated in at the ingress and everything it is sent translated out here — the
answer, the stream (one Rust call per chunk), and every error, in its own error format.
"""

from __future__ import annotations

from typing import Protocol

import orjson
from aiohttp import web

from edgeproxy._core import OpenAIToAnthropicStream, TranslationError
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.anthropic_wire import midstream_error as anthropic_midstream_error
from edgeproxy.server.anthropic_wire import stream_error_event
from edgeproxy.server.responses import midstream_error as openai_midstream_error
from edgeproxy.translate import error_to_anthropic, openai_to_anthropic_response


class StreamEncoder(Protocol):
    """Turns the OpenAI SSE the relay produces into the client's stream."""

    def encode(self, sse: bytes) -> bytes: ...

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        """The in-band error that ends a committed stream (``upstream``: the upstream's own
        OpenAI error event data, when it sent one)."""
        ...

    def close(self) -> bytes:
        """Bytes that end a complete stream."""
        ...


class OpenAIStream:
    """The identity: the client speaks the relay's own format."""

    def encode(self, sse: bytes) -> bytes:
        return sse

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        if upstream is not None:
            from edgeproxy._core import encode_sse

            return encode_sse(upstream)
        return openai_midstream_error(failure, events, rid)

    def close(self) -> bytes:
        return b""


class AnthropicStream:
    """OpenAI chunks out as Anthropic events (message_start … message_stop)."""

    def __init__(self, model: str | None) -> None:
        self._translator = OpenAIToAnthropicStream(model=model)

    def encode(self, sse: bytes) -> bytes:
        return self._translator.feed(sse)

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        if upstream is not None:
            try:
                err = orjson.loads(upstream).get("error", {})
                message = str(err.get("message") or "the upstream reported an error")
            except (orjson.JSONDecodeError, AttributeError):
                message = "the upstream reported an error"
            return stream_error_event("api_error", message, rid)
        return anthropic_midstream_error(failure, events, rid)

    def close(self) -> bytes:
        tail, complete = self._translator.finish()
        if complete:
            return tail
        failure = AttemptFailure(FailureClass.CUT, "the stream ended before message_stop")
        return tail + anthropic_midstream_error(failure, 0, "")


class ClientWire(Protocol):
    name: str

    def stream(self) -> StreamEncoder: ...

    def answer(self, response: web.Response, rid: str) -> web.Response:
        """A finished (non-stream) response in the client's format."""
        ...


class OpenAIClient:
    name = "openai"

    def stream(self) -> StreamEncoder:
        return OpenAIStream()

    def answer(self, response: web.Response, rid: str) -> web.Response:
        return response


class AnthropicClient:
    name = "anthropic"

    def __init__(self, model: str) -> None:
        self.model = model  # the name the client asked for, echoed in its answers

    def stream(self) -> StreamEncoder:
        return AnthropicStream(self.model)

    def answer(self, response: web.Response, rid: str) -> web.Response:
        body = response.body
        if not isinstance(body, bytes):
            return response
        if response.status == 200:
            try:
                converted = orjson.dumps(
                    openai_to_anthropic_response(orjson.loads(body), model=self.model)
                )
            except (orjson.JSONDecodeError, TranslationError) as exc:
                converted = error_to_anthropic(
                    502, orjson.dumps({"error": {"message": f"untranslatable answer: {exc}"}}), rid
                )
                return _rebuilt(response, 502, converted)
            return _rebuilt(response, 200, converted)
        return _rebuilt(response, response.status, error_to_anthropic(response.status, body, rid))


def _rebuilt(response: web.Response, status: int, body: bytes) -> web.Response:
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
