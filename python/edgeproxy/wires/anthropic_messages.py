"""The Anthropic Messages wire (policy ``kind: anthropic``): requests, answers and streams are
translated from and to the proxy's OpenAI shape (docs/anthropic.md), errors classified from
Anthropic's statuses and error types (https://docs.anthropic.com/en/api/errors):

====================  ======  ====================================================
error.type            status  failure class
====================  ======  ====================================================
invalid_request_error 400     CLIENT_ERROR (CONTEXT_LENGTH for "prompt is too long")
authentication_error  401     AUTH_REJECTED (the proxy's key: fail over, eject)
permission_error      403     AUTH_REJECTED
not_found_error       404     MODEL_NOT_FOUND (the policy's model or base URL: fail
                              over, eject)
request_too_large     413     CLIENT_ERROR
billing_error         402     QUOTA_EXHAUSTED
rate_limit_error      429     RATE_LIMITED (Retry-After kept)
api_error             500     SERVER_ERROR
timeout_error         504     SERVER_ERROR
overloaded_error      529     OVERLOADED
====================  ======  ====================================================

The same types arrive as an in-stream ``error`` event after a 200 (``classify_stream_error``):
there the key and the model were accepted, so any 4xx type counts as a server error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy._core import AnthropicToOpenAIStream, SseError, SseParser, encode_sse
from edgeproxy.failure import MISCONFIGURED, AttemptFailure, FailureClass, classify_status
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import ProbeRequest, Refusal, StreamTranslator
from edgeproxy.translate import (
    TranslationError,
    anthropic_to_openai_response,
    error_to_openai,
    openai_to_anthropic_request,
    thinking,
)
from edgeproxy.wires import common

DEFAULT_VERSION: Final = "2023-06-01"

_BY_TYPE: Final = {
    "overloaded_error": FailureClass.OVERLOADED,
    "rate_limit_error": FailureClass.RATE_LIMITED,
    "billing_error": FailureClass.QUOTA_EXHAUSTED,
    "api_error": FailureClass.SERVER_ERROR,
    "timeout_error": FailureClass.SERVER_ERROR,
    "authentication_error": FailureClass.AUTH_REJECTED,
    "permission_error": FailureClass.AUTH_REJECTED,
    "not_found_error": FailureClass.MODEL_NOT_FOUND,
    "request_too_large": FailureClass.CLIENT_ERROR,
}


def anthropic_headers(
    api_key: str | None, extra: Mapping[str, str] | None = None, version: str = DEFAULT_VERSION
) -> dict[str, str]:
    """Static provider headers for this wire: ``x-api-key`` and ``anthropic-version``."""
    headers = {"anthropic-version": version, **(extra or {})}
    if api_key is not None:
        headers["x-api-key"] = api_key
    return headers


def auth_headers(static: Mapping[str, str]) -> dict[str, str]:
    """A provider's static headers as Anthropic wants them: the key as ``x-api-key`` (a policy
    that put it in ``Authorization: Bearer`` is converted) and a default ``anthropic-version``."""
    headers = {k: v for k, v in static.items() if k.lower() != "authorization"}
    lower = {k.lower() for k in headers}
    auth = next((v for k, v in static.items() if k.lower() == "authorization"), None)
    if "x-api-key" not in lower and auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            headers["x-api-key"] = token.strip()
        else:
            headers["Authorization"] = auth
    if "anthropic-version" not in lower:
        headers["anthropic-version"] = DEFAULT_VERSION
    return headers


def classify(status: int, kind: str | None, message: str | None = None) -> FailureClass:
    """The failure class of an Anthropic error status and ``error.type`` (and message)."""
    if status == 529 or kind == "overloaded_error":
        return FailureClass.OVERLOADED
    if kind == "invalid_request_error" and message and "prompt is too long" in message.lower():
        return FailureClass.CONTEXT_LENGTH
    if kind in _BY_TYPE:
        return _BY_TYPE[kind]
    failure = classify_status(status)
    return failure if failure is not None else FailureClass.SERVER_ERROR


def classify_stream_error(kind: str, message: str = "") -> FailureClass:
    """The failure class of an in-stream ``error`` event (after a 200): never CLIENT_ERROR, nor
    a misconfiguration (the request, the key and the model were accepted); unknown types count
    as server errors."""
    failure = classify(200, kind, message)
    if failure is FailureClass.CLIENT_ERROR or failure in MISCONFIGURED:
        return FailureClass.SERVER_ERROR
    return failure


def stream_failure(kind: str, message: str) -> AttemptFailure:
    """The AttemptFailure for an in-stream error the stream translator reported."""
    return AttemptFailure(
        classify_stream_error(kind, message),
        f"upstream sent an in-stream error: {kind}" + (f" ({message})" if message else ""),
        code=kind,
    )


def error_fields(body: bytes) -> tuple[str | None, str | None]:
    """``(error.type, error.message)`` of an Anthropic error body (None when it is not one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    kind, message = err.get("type"), err.get("message")
    return (
        kind[:128] if isinstance(kind, str) and kind else None,
        message if isinstance(message, str) else None,
    )


def check_message(parsed: object) -> dict[str, Any]:
    """A non-stream answer must be a ``message`` object with a ``content`` array."""
    if (
        not isinstance(parsed, dict)
        or parsed.get("type") != "message"
        or not isinstance(parsed.get("content"), list)
    ):
        raise AttemptFailure(
            FailureClass.MALFORMED, "upstream answer is not an Anthropic message object"
        )
    return parsed


class _Stream:
    """Anthropic's events in, OpenAI chunks out (the Rust translator, one call per chunk)."""

    __slots__ = ("_translator",)

    def __init__(self, include_usage: bool) -> None:
        self._translator = AnthropicToOpenAIStream(include_usage=include_usage)

    def _checked(self, out: bytes) -> bytes:
        error = self._translator.error
        if error is not None:
            raise stream_failure(*error)
        return out

    def feed(self, chunk: bytes) -> bytes:
        try:
            return self._checked(self._translator.feed(chunk))
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad Anthropic stream: {exc}") from None

    def finish(self) -> bytes:
        try:
            return self._checked(self._translator.finish()[0])
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad Anthropic stream: {exc}") from None

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self._translator.usage
        if usage is None:
            return None
        prompt, completion, cached, written = usage
        details = {"cached_tokens": cached}
        if written:
            details["cache_write_tokens"] = written
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": details,
        }


class _ThinkingStream(_Stream):
    """A stream with extended thinking: each thinking event becomes an inner chunk carrying it
    (``translate.thinking.stream_chunk``), everything else goes through the Rust translator,
    in the upstream's order.

    The Rust translator drops thinking events, so this stream parses the upstream's events in
    Python (only requests that ask for thinking pay for it); the runs of other events between
    them go to Rust in one call. What an upstream cannot do here: send thinking before
    ``message_start`` or after the answer's text or tool use started (the inner shape keeps
    thinking first), a delta for a block that is not an open thinking block, a thinking
    field or signature that is not a string, or a signature over ``MAX_SIGNATURE_CHARS``:
    each is a malformed stream.
    """

    __slots__ = ("_answering", "_open", "_parser", "_signature", "_started")

    def __init__(self, include_usage: bool) -> None:
        super().__init__(include_usage)
        self._parser = SseParser()
        self._started = False  # message_start seen
        self._answering = False  # a block other than thinking started
        self._open: int | None = None  # the upstream index of the open thinking block
        self._signature = 0  # characters of its signature so far

    def feed(self, chunk: bytes) -> bytes:
        try:
            events = self._parser.feed(chunk)
        except SseError as exc:  # an event over the parser's size limit
            raise AttemptFailure(FailureClass.MALFORMED, f"bad Anthropic stream: {exc}") from None
        out: list[bytes] = []
        pending: list[bytes] = []  # other events, for Rust in one call
        for event in events:
            parsed = self._thinking_event(event.data)
            if parsed is None:
                pending.append(encode_sse(event.data, event=event.event))
                continue
            if pending:
                out.append(super().feed(b"".join(pending)))
                pending = []
            out.append(thinking.stream_chunk(parsed))
        if pending:
            out.append(super().feed(b"".join(pending)))
        return b"".join(out)

    def _thinking_event(self, data: str) -> dict[str, Any] | None:
        """``data`` parsed when it is a thinking event (checked), else None (for Rust)."""
        if (
            self._started
            and self._open is None
            and not any(word in data for word in ("thinking", "signature", "content_block_start"))
        ):
            return None  # the common case after the thinking: a text delta, not even parsed
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # Rust reports it
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "message_start":
            self._started = True
            return None
        if kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict) or block.get("type") not in thinking.THINKING_TYPES:
                self._answering = True
                return None
            if not self._started or self._answering:
                raise _bad("a thinking block before message_start or after the answer began")
            try:
                thinking.check_block(block, "content_block")
            except TranslationError as exc:
                raise _bad(str(exc)) from None
            self._open = event.get("index")
            self._signature = len(block.get("signature") or "")
            return event
        if kind == "content_block_delta":
            delta = event.get("delta")
            kind = delta.get("type") if isinstance(delta, dict) else None
            if kind not in ("thinking_delta", "signature_delta"):
                return None
            assert isinstance(delta, dict)
            if self._open is None or event.get("index") != self._open:
                raise _bad(f"a {kind} outside an open thinking block")
            if kind == "thinking_delta":
                if not isinstance(delta.get("thinking"), str):
                    raise _bad("a thinking_delta whose thinking is not a string")
            else:
                signature = delta.get("signature")
                try:
                    checked = thinking.check_signature(signature, "signature", self._signature)
                except TranslationError as exc:
                    raise _bad(str(exc)) from None
                self._signature += len(checked)
            return event
        if kind == "content_block_stop" and self._open is not None:
            if event.get("index") != self._open:
                raise _bad("a content_block_stop for another block inside a thinking block")
            self._open = None
            return event
        return None


def _bad(why: str) -> AttemptFailure:
    return AttemptFailure(FailureClass.MALFORMED, f"bad Anthropic stream: {why}")


class AnthropicMessagesWire:
    name: Final = "anthropic"
    embeddings: Final = None  # Anthropic has no embeddings API (it points to Voyage AI)

    def endpoint_url(self, base_url: str, query: Mapping[str, str]) -> str:
        return base_url.rstrip("/") + "/messages"

    def url(self, candidate: Candidate, *, stream: bool) -> str:
        return candidate.chat_url

    def refusal(self, body: Mapping[str, Any]) -> Refusal | None:
        try:
            openai_to_anthropic_request(dict(body), default_max_tokens=1)
        except TranslationError as exc:
            return Refusal(f"the Anthropic wire cannot take it ({exc})", exc.param)
        return None

    def request_body(self, body: Mapping[str, Any], candidate: Candidate) -> bytes:
        translated = openai_to_anthropic_request(
            dict(body),
            default_max_tokens=candidate.max_output_tokens,
            model=candidate.upstream_model,
        )
        return orjson.dumps(translated)

    def request_headers(
        self, candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str]
    ) -> dict[str, str]:
        return common.request_headers(
            auth_headers(candidate.headers), stream=stream, request_id=request_id, extra=extra
        )

    def failure(
        self, status: int, body: bytes, headers: Mapping[str, str], content_type: str
    ) -> AttemptFailure:
        kind, message = error_fields(body)
        failure = classify(status, kind, message)
        return common.status_failure(failure, status, body, headers, content_type, kind)

    def client_error_body(self, failure: AttemptFailure, request_id: str) -> tuple[bytes, str]:
        assert failure.status is not None
        return error_to_openai(failure.status, failure.body, request_id), "application/json"

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        parsed = common.json_answer(data)
        try:
            completion = anthropic_to_openai_response(check_message(parsed))
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"untranslatable answer: {exc}") from None
        return orjson.dumps(completion), completion

    def stream(
        self, *, include_usage: bool, request: Mapping[str, Any] | None = None
    ) -> StreamTranslator | None:
        if request is not None and thinking.carried_param(request) is not None:
            return _ThinkingStream(include_usage)
        return _Stream(include_usage)

    def probe(self, candidate: Candidate, mode: ProbeMode, url: str | None) -> ProbeRequest:
        if mode == "completion":
            body = {
                "model": candidate.upstream_model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}],
            }
            headers = {**auth_headers(candidate.headers), "Content-Type": "application/json"}
            return ProbeRequest("POST", candidate.chat_url, headers, orjson.dumps(body))
        # Anthropic lists models at GET /v1/models too (free, needs the key).
        target = url if mode == "url" and url else candidate.base_url.rstrip("/") + "/models"
        headers = common.probe_headers(auth_headers(candidate.headers), candidate.base_url, target)
        return ProbeRequest("GET", target, headers)

    def probe_verdict(self, mode: ProbeMode, status: int) -> bool | None:
        if status == 529:
            return False  # overloaded: down for now, like a 503
        return common.probe_verdict(mode, status)


WIRE: Final = AnthropicMessagesWire()
