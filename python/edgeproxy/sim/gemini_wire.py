"""Gemini API wire objects: ``GenerateContentResponse`` bodies, stream events, error bodies.

Shapes follow https://ai.google.dev/api/generate-content and the errors of
https://ai.google.dev/gemini-api/docs/troubleshooting (``{"error": {"code", "message", "status",
"details"}}``). Stream events are separated by CRLF CRLF, as Gemini's are.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from .completion import Completion
from .errors import reason_phrase

# The ``finishReason`` of each simulated finish (the planner speaks OpenAI's finish reasons).
FINISH_REASONS: Final = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
SSE_MALFORMED: Final = b'data: {"candidates": [ broken\r\n\r\n'
SSE_KEEPALIVE: Final = b": keep-alive\r\n\r\n"
OVERLOADED_MESSAGE: Final = "The model is overloaded. Please try again later."
KEY_INVALID: Final = "API key not valid. Please pass a valid API key."

_STATUS: Final = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "The request timed out."),
    529: ("UNAVAILABLE", OVERLOADED_MESSAGE),
}


def error_body(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """``{"error": {"code", "message", "status", "details"}}`` for a status and a fault code
    (the OpenAI wire's codes: ``context_length_exceeded``, ``insufficient_quota``,
    ``invalid_api_key``, ``rate_limit_exceeded``; or a Gemini status name)."""
    default = (
        ("INTERNAL", f"Error {status}.") if status >= 500 else ("INVALID_ARGUMENT", "Bad request.")
    )
    kind, text = _STATUS.get(status, default)
    details: list[dict[str, Any]] = []
    if code == "context_length_exceeded":
        kind = "INVALID_ARGUMENT"
        text = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    elif code == "insufficient_quota":
        kind, text = "RESOURCE_EXHAUSTED", "You exceeded your current quota."
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
            }
        )
    elif code == "invalid_api_key":
        kind, text = "INVALID_ARGUMENT", KEY_INVALID
        details.append(
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        )
    elif code is not None and code.isupper():
        kind = code
    if retry_after is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
        )
    error: dict[str, Any] = {"code": status, "message": message or text, "status": kind}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
        )
    return web.Response(
        status=status,
        reason=reason_phrase(status),
        body=orjson.dumps(error_body(status, code=code, message=message, retry_after=retry_after)),
        content_type="application/json",
        headers=headers,
    )


def usage(completion: Completion, *, final: bool = True) -> dict[str, Any]:
    """``usageMetadata``: the prompt's tokens (cached ones included) and, at the end, the
    answer's (thinking tokens apart, as Gemini reports them)."""
    meta: dict[str, Any] = {"promptTokenCount": completion.prompt_tokens}
    total = completion.prompt_tokens
    if final:
        visible = completion.completion_tokens - completion.reasoning_tokens
        meta["candidatesTokenCount"] = visible
        total += completion.completion_tokens
        if completion.reasoning_tokens:
            meta["thoughtsTokenCount"] = completion.reasoning_tokens
    if completion.cached_tokens:
        meta["cachedContentTokenCount"] = completion.cached_tokens
    meta["totalTokenCount"] = total
    return meta


def answer_id(completion: Completion) -> str:
    return completion.completion_id.removeprefix("chatcmpl-")


def call_part(completion: Completion) -> dict[str, Any]:
    call = completion.tool_call
    assert call is not None
    return {
        "functionCall": {
            "id": "call_" + call.call_id,
            "name": call.name,
            "args": orjson.loads(call.arguments),
        }
    }


def response_object(
    completion: Completion,
    parts: list[dict[str, Any]],
    *,
    finish: bool,
) -> dict[str, Any]:
    """A ``GenerateContentResponse``: the whole answer, or one stream event (``finish``: the
    last, with the finishReason and the final usage)."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = FINISH_REASONS[completion.finish_reason]
    return {
        "candidates": [candidate],
        "usageMetadata": usage(completion, final=finish),
        "modelVersion": completion.model,
        "responseId": answer_id(completion),
    }


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"


def error_event(status: int, kind: str, message: str) -> bytes:
    return event({"error": {"code": status, "message": message, "status": kind}})


OVERLOADED_EVENT: Final = error_event(503, "UNAVAILABLE", OVERLOADED_MESSAGE)
