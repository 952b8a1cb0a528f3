"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import http
from typing import Final

import orjson
from aiohttp import web

# status -> (error.type, error.message, default error.code), modelled on what OpenAI (and, for
# 529, Anthropic) actually return, so client SDKs map them to the same exception classes.
_BY_STATUS: Final[dict[int, tuple[str, str, str | None]]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("permission_error", "You are not allowed to perform this request.", None),
    404: ("invalid_request_error", "The model does not exist or you do not have access.", None),
    408: ("timeout", "Request timed out.", None),
    409: ("invalid_request_error", "Conflict with the current state of the resource.", None),
    413: ("invalid_request_error", "Request too large.", None),
    422: ("invalid_request_error", "Unprocessable request.", None),
    429: (
        "requests",
        "Rate limit reached for requests. Please try again later.",
        "rate_limit_exceeded",
    ),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
    ),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The server is overloaded or not ready yet.", None),
    504: ("timeout", "Gateway timeout.", None),
    529: ("overloaded_error", "Overloaded", None),
}

# error.code -> (error.type, error.message, error.param) when the code says more than the status.
_BY_CODE: Final[dict[str, tuple[str, str, str | None]]] = {
    "insufficient_quota": (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        None,
    ),
    "rate_limit_exceeded": (
        "requests",
        "Rate limit reached for requests. Please try again later.",
        None,
    ),
    "context_length_exceeded": (
        "invalid_request_error",
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in more tokens. Please reduce the length of the messages.",
        "messages",
    ),
    "invalid_api_key": ("invalid_request_error", "Incorrect API key provided.", None),
    "model_not_found": (
        "invalid_request_error",
        "The model does not exist or you do not have access to it.",
        "model",
    ),
}

_NON_STANDARD_REASONS: Final = {529: "Site Overloaded"}


def error_payload(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    param: str | None = None,
) -> dict[str, object]:
    default_type, default_message, default_code = _BY_STATUS.get(
        status,
        ("server_error", f"Upstream error {status}.", None)
        if status >= 500
        else ("invalid_request_error", f"Request failed with status {status}.", None),
    )
    err_type, err_message, err_param = default_type, default_message, None
    code = code if code is not None else default_code
    if code in _BY_CODE:
        err_type, err_message, err_param = _BY_CODE[code]
    return {
        "error": {
            "message": message if message is not None else err_message,
            "type": err_type,
            "param": param if param is not None else err_param,
            "code": code,
        }
    }


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _NON_STANDARD_REASONS.get(status, "Error")


def error_response(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        # Retry-After is integer seconds by RFC; keep fractions since SDKs parse floats too.
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
        )
    return web.Response(
        status=status,
        reason=reason_phrase(status),
        body=orjson.dumps(error_payload(status, code=code, message=message, param=param)),
        content_type="application/json",
        headers=headers,
    )
