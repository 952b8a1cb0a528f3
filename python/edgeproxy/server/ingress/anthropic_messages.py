"""Anthropic's Messages wire at the ingress (``POST /v1/messages``, and
``POST /v1/messages/count_tokens`` answered locally).

A request is validated as Anthropic's (its rules, its ``field.path: problem`` wording) and
translated to the proxy's inner OpenAI shape; a feature that shape cannot carry (server tools,
documents, ...) is refused with a 400 naming it (docs/anthropic.md). Extended thinking is
carried in the inner shape's ``x_anthropic`` extension (``translate.thinking``) for the
Anthropic upstreams of the chain; the others are skipped. The answer,
the stream (one Rust call per chunk) and every error go back in Anthropic's wire. Errors are
shaped exactly like Anthropic's (``{"type": "error", "error": {"type", "message"},
"request_id"}``, https://docs.anthropic.com/en/api/errors) so the official SDK raises its usual
exception classes; the ``request-id`` header carries the id too (the SDK's ``exc.request_id``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from edgeproxy._core import OpenAIToAnthropicStream, SseParser, encode_sse
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.ingress.base import ClientError, IngressRequest, LocalAnswer, StreamEncoder
from edgeproxy.server.json_nesting import check_nesting
from edgeproxy.tokens import ESTIMATE, TokenizerError, count_chat_async
from edgeproxy.translate import (
    TranslationError,
    anthropic_to_openai_request,
    error_to_anthropic,
    openai_to_anthropic_response,
    thinking,
)
from edgeproxy.translate.responses import anthropic_error_type

VALID_ROLES: Final = frozenset({"user", "assistant"})
# Header on count_tokens answers: Anthropic's tokenizer is not public, so the count is estimated.
TOKEN_COUNT_HEADER: Final = "x-edgeproxy-token-count"


def anthropic_error_body(type: str, message: str, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def anthropic_error_response(
    status: int,
    type: str,
    message: str,
    request_id: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An Anthropic-style error answer (``request-id`` header included when known)."""
    out = dict(headers or {})
    if request_id is not None:
        out.setdefault("request-id", request_id)
    return web.Response(
        status=status,
        body=orjson.dumps(anthropic_error_body(type, message, request_id)),
        content_type="application/json",
        headers=out,
    )


# Anthropic's error types: one a raiser named is kept, any other type gives way to the status's.
ERROR_TYPES: Final = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "billing_error",
        "timeout_error",
    }
)


def error_response(err: ClientError, request_id: str | None) -> web.Response:
    """``err`` as Anthropic's error JSON. The proxy's own overload (503 ``overloaded``) is
    Anthropic's 529 ``overloaded_error``, which its SDK knows and retries."""
    status = 529 if err.code == "overloaded" else err.status
    kind = err.type if err.type in ERROR_TYPES else anthropic_error_type(status)
    return anthropic_error_response(status, kind, err.message, request_id, err.headers)


def stream_error_event(type: str, message: str, request_id: str | None = None) -> bytes:
    """The ``event: error`` that ends a committed Anthropic stream (the SDK raises on it)."""
    return encode_sse(
        orjson.dumps(anthropic_error_body(type, message, request_id)).decode(), event="error"
    )


def midstream_error(failure: AttemptFailure, events: int, request_id: str) -> bytes:
    """The in-band error ending a committed stream after an upstream failure, in Anthropic's wire:
    ``overloaded_error`` when the upstream was overloaded, else ``api_error``."""
    kind = "overloaded_error" if failure.failure is FailureClass.OVERLOADED else "api_error"
    return stream_error_event(
        kind,
        f"The upstream stream failed after {events} events ({failure}); the answer is incomplete.",
        request_id,
    )


# -- validation -------------------------------------------------------------------------------


def _bad(message: str) -> ClientError:
    return ClientError(400, message, type="invalid_request_error")


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    check_nesting(body, ClientError)
    return body


def _check_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _bad("model: Field required")
    if not isinstance(model, str) or not model:
        raise _bad("model: Input should be a non-empty string")


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages: Field required")
    if not isinstance(messages, list):
        raise _bad("messages: Input should be a valid list")
    if not messages:
        raise _bad("messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _bad(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role is None:
            raise _bad(f"{where}.role: Field required")
        if role not in VALID_ROLES:
            raise _bad(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _bad(f"{where}.content: Field required")
        _check_content(message["content"], f"{where}.content")


def _check_content(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{where}: Input should be a valid string or a list of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise _bad(f"{where}.{j}: Input should be a valid dictionary")
        kind = block.get("type")
        if not isinstance(kind, str) or not kind:
            raise _bad(f"{where}.{j}.type: Field required")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _bad(f"{where}.{j}.text: Input should be a valid string")


def _check_system(body: dict[str, Any]) -> None:
    system = body.get("system")
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or a list of text blocks")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"system.{j}: Input should be a text block")
        if not isinstance(block.get("text"), str):
            raise _bad(f"system.{j}.text: Input should be a valid string")


def parse_messages_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a Messages body just enough to route it safely.

    Checks ``model``, ``max_tokens`` (required, integer >= 1), ``messages`` (roles ``user`` /
    ``assistant``, content a string or content blocks), ``system`` (string or text blocks) and
    ``stream`` (boolean); the upstream validates the rest. Raises ``ClientError`` (400).
    """
    body = _decode(raw)
    _check_model(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens: Input should be an integer greater than or equal to 1")
    _check_messages(body)
    _check_system(body)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream: Input should be a valid boolean")
    return body


def parse_count_tokens_request(raw: bytes) -> dict[str, Any]:
    """Check a ``count_tokens`` body: a Messages body without ``max_tokens``."""
    body = _decode(raw)
    _check_model(body)
    _check_messages(body)
    _check_system(body)
    return body


async def count_tokens_response(raw: bytes, request_id: str | None) -> web.Response:
    """The whole ``POST /v1/messages/count_tokens`` answer, computed locally.

    ``{"input_tokens": N}`` from ``edgeproxy.tokens.count_chat_async`` with the ``estimate`` encoding
    (system, messages, tools); the ``x-edgeproxy-token-count: estimate`` header says it is one.
    """
    try:
        parse_count_tokens_request(raw)
        count = await count_chat_async(raw, ESTIMATE)
    except ClientError as err:
        return error_response(err, request_id)
    except TokenizerError as exc:
        return anthropic_error_response(400, "invalid_request_error", str(exc), request_id)
    headers = {TOKEN_COUNT_HEADER: "estimate"}
    if request_id is not None:
        headers["request-id"] = request_id
    return web.Response(
        body=orjson.dumps({"input_tokens": count.tokens}),
        content_type="application/json",
        headers=headers,
    )


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
        return midstream_error(failure, events, rid)

    def close(self) -> bytes:
        tail, complete = self._translator.finish()
        if complete:
            return self._closing(tail)
        failure = AttemptFailure(FailureClass.CUT, "the stream ended before message_stop")
        return self._closing(tail) + midstream_error(failure, 0, "")

    def _closing(self, tail: bytes) -> bytes:
        return tail


# The content block events the Rust translator writes, up to their index (its own format: the
# text of a block is JSON-escaped after it, so it cannot fake one).
_BLOCK_INDEX: Final = re.compile(
    rb'^(data: \{"type":"content_block_(?:start|delta|stop)","index":)(\d+)', re.M
)


class ThinkingAnthropicStream(AnthropicStream):
    """The stream of a request with extended thinking: the inner chunks that carry thinking
    events (``translate.thinking.stream_chunk``) become the client's thinking blocks, numbered
    from 0 in their order; the Rust translator makes the rest, its block indexes moved past the
    thinking blocks. An upstream's thinking comes before its text and tool use (the Anthropic
    wire refuses any other order), so the numbering is final once the Rust translator opens a
    block. Only thinking requests pay for parsing the relay's events here.
    """

    def __init__(self, model: str | None) -> None:
        super().__init__(model)
        self._parser = SseParser()
        self._blocks = 0  # thinking blocks started: where the Rust translator's blocks begin

    def encode(self, sse: bytes) -> bytes:
        if b'"x_anthropic"' not in sse:
            return self._shifted(self._translator.feed(sse))
        out: list[bytes] = []
        pending: list[bytes] = []
        for event in self._parser.feed(sse):
            carried = _carried(event.data)
            if carried is None:
                pending.append(encode_sse(event.data))
                continue
            if pending:
                out.append(self._shifted(self._translator.feed(b"".join(pending))))
                pending = []
            out.append(self._thinking(carried))
        if pending:
            out.append(self._shifted(self._translator.feed(b"".join(pending))))
        return b"".join(out)

    def _thinking(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "content_block_start":
            self._blocks += 1
        if not isinstance(kind, str) or self._blocks == 0:
            return b""
        rest = {k: v for k, v in event.items() if k not in ("type", "index")}
        numbered = {"type": kind, "index": self._blocks - 1, **rest}
        return encode_sse(orjson.dumps(numbered).decode(), event=kind)

    def _shifted(self, out: bytes) -> bytes:
        if not self._blocks or not out:
            return out
        shift = self._blocks
        return _BLOCK_INDEX.sub(lambda m: m[1] + str(int(m[2]) + shift).encode(), out)

    def _closing(self, tail: bytes) -> bytes:
        return self._shifted(tail)


def _carried(data: str) -> dict[str, Any] | None:
    if '"x_anthropic"' not in data:
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return thinking.carried_event(chunk) if isinstance(chunk, dict) else None


class AnthropicMessagesIngress:
    name: Final = "anthropic"
    path: Final = "/v1/messages"
    # The Anthropic SDK reads ``request-id`` (its ``exc.request_id``, ``_request_id``).
    request_id_headers: Final = ("x-request-id", "request-id")

    def parse(self, raw: bytes) -> IngressRequest:
        body = parse_messages_request(raw)
        try:
            inner = anthropic_to_openai_request(body, carry_thinking=True)
        except TranslationError as exc:
            raise ClientError(400, str(exc), type="invalid_request_error") from None
        return IngressRequest(inner, orjson.dumps(inner), body["model"])

    def not_served(self, model: str, served: Sequence[str]) -> ClientError:
        return ClientError(
            404,
            f"model: {model!r} is not served by this proxy (served: {', '.join(served)}).",
            type="not_found_error",
        )

    def error_response(self, err: ClientError, request_id: str) -> web.Response:
        return error_response(err, request_id)

    def answer(self, response: web.Response, request: IngressRequest, rid: str) -> web.Response:
        body = response.body
        if not isinstance(body, bytes):
            return response
        if response.status == 200:
            try:
                converted = orjson.dumps(
                    openai_to_anthropic_response(orjson.loads(body), model=request.model)
                )
            except (orjson.JSONDecodeError, TranslationError) as exc:
                converted = error_to_anthropic(
                    502, orjson.dumps({"error": {"message": f"untranslatable answer: {exc}"}}), rid
                )
                return _rebuilt(response, 502, converted)
            return _rebuilt(response, 200, converted)
        return _rebuilt(response, response.status, error_to_anthropic(response.status, body, rid))

    def stream(self, request: IngressRequest) -> StreamEncoder:
        if thinking.carried_param(request.body) is not None:
            return ThinkingAnthropicStream(request.model)
        return AnthropicStream(request.model)

    def local_endpoints(self) -> Sequence[tuple[str, LocalAnswer]]:
        return (("/v1/messages/count_tokens", count_tokens_response),)


def _rebuilt(response: web.Response, status: int, body: bytes) -> web.Response:
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


INGRESS: Final = AnthropicMessagesIngress()
