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

from edgeproxy._core import AnthropicToOpenAIStream
from edgeproxy.failure import MISCONFIGURED, AttemptFailure, FailureClass, classify_status
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import ProbeRequest, Refusal, StreamTranslator
from edgeproxy.translate import (
    TranslationError,
    anthropic_to_openai_response,
    error_to_openai,
    openai_to_anthropic_request,
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

    def stream(self, *, include_usage: bool) -> StreamTranslator | None:
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
