"""The Anthropic Messages upstream (kind ``anthropic``): builds one attempt and classifies its
failures the way ``upstreams.openai`` does, from Anthropic's statuses and error types.

Anthropic's errors (https://docs.anthropic.com/en/api/errors) are
``{"type": "error", "error": {"type": ..., "message": ...}}``:

====================  ======  ====================================================
error.type            status  failure class
====================  ======  ====================================================
invalid_request_error 400     CLIENT_ERROR (CONTEXT_LENGTH for "prompt is too long")
authentication_error  401     CLIENT_ERROR
permission_error      403     CLIENT_ERROR
not_found_error       404     CLIENT_ERROR
request_too_large     413     CLIENT_ERROR
billing_error         402     QUOTA_EXHAUSTED
rate_limit_error      429     RATE_LIMITED (Retry-After kept)
api_error             500     SERVER_ERROR
timeout_error         504     SERVER_ERROR
overloaded_error      529     OVERLOADED
====================  ======  ====================================================

The same types arrive as an in-stream ``error`` event after a 200; ``classify_stream_error``
maps those (the Rust stream translator reports them as ``(type, message)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass, classify_status, parse_retry_after
from edgeproxy.snapshot import Candidate
from edgeproxy.upstreams import openai as openai_upstream
from edgeproxy.upstreams.http1 import Http1Pool, UpstreamResponse

DEFAULT_VERSION: Final = "2023-06-01"

_BY_TYPE: Final = {
    "overloaded_error": FailureClass.OVERLOADED,
    "rate_limit_error": FailureClass.RATE_LIMITED,
    "billing_error": FailureClass.QUOTA_EXHAUSTED,
    "api_error": FailureClass.SERVER_ERROR,
    "timeout_error": FailureClass.SERVER_ERROR,
    "authentication_error": FailureClass.CLIENT_ERROR,
    "permission_error": FailureClass.CLIENT_ERROR,
    "not_found_error": FailureClass.CLIENT_ERROR,
    "request_too_large": FailureClass.CLIENT_ERROR,
}


def messages_url(base_url: str) -> str:
    """``POST`` target for a provider base URL such as ``https://api.anthropic.com/v1``."""
    return base_url.rstrip("/") + "/messages"


def anthropic_headers(
    api_key: str | None,
    extra: Mapping[str, str] | None = None,
    version: str = DEFAULT_VERSION,
) -> dict[str, str]:
    """Static provider headers for kind ``anthropic``: ``x-api-key`` and ``anthropic-version``."""
    headers = {"anthropic-version": version, **(extra or {})}
    if api_key is not None:
        headers["x-api-key"] = api_key
    return headers


def request_headers(
    candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of one attempt: the candidate's static ones, with the key as ``x-api-key``
    (a policy that put it in ``Authorization: Bearer`` is converted) and a default
    ``anthropic-version``."""
    headers = {k: v for k, v in candidate.headers.items() if k.lower() != "authorization"}
    lower = {k.lower() for k in headers}
    auth = next((v for k, v in candidate.headers.items() if k.lower() == "authorization"), None)
    if "x-api-key" not in lower and auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            headers["x-api-key"] = token.strip()
        else:
            headers["Authorization"] = auth
    if "anthropic-version" not in lower:
        headers["anthropic-version"] = DEFAULT_VERSION
    headers.update(
        {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "X-Request-Id": request_id,
            **(extra or {}),
        }
    )
    return headers


def upstream_body(request_body: Mapping[str, Any], candidate: Candidate) -> bytes:
    """The (already Anthropic-shaped) body with ``model`` set to the provider's name."""
    if request_body.get("model") == candidate.upstream_model:
        return orjson.dumps(request_body)
    return orjson.dumps({**request_body, "model": candidate.upstream_model})


async def send(
    pool: Http1Pool,
    candidate: Candidate,
    body: bytes,
    *,
    stream: bool,
    connect_timeout: float,
    request_id: str,
    extra_headers: Mapping[str, str] | None = None,
) -> UpstreamResponse:
    """POST to ``{base_url}/messages``; a 2xx response with its body unread, or AttemptFailure."""
    headers = request_headers(candidate, stream=stream, request_id=request_id, extra=extra_headers)
    # chat_url is the Messages URL for an Anthropic candidate (built once by the compiler).
    response = await openai_upstream.post(pool, candidate.chat_url, body, headers, connect_timeout)
    if 200 <= response.status < 300:
        return response
    raise await failure_from_response(response)


async def failure_from_response(response: UpstreamResponse) -> AttemptFailure:
    """Read (at most 64 KiB of) an error response and classify it."""
    body = await openai_upstream.read_error_body(response)
    return failure_from_status(
        response.status,
        body,
        retry_after=response.headers.get("retry-after"),
        content_type=response.content_type or "application/json",
    )


def failure_from_status(
    status: int,
    body: bytes,
    *,
    retry_after: str | None = None,
    content_type: str = "application/json",
) -> AttemptFailure:
    """The classified failure of a non-2xx Anthropic answer."""
    kind, message = error_fields(body)
    failure = classify(status, kind, message)
    return AttemptFailure(
        failure,
        f"HTTP {status} from upstream" + (f" ({kind})" if kind else ""),
        status=status,
        body=body,
        content_type=content_type,
        retry_after=parse_retry_after(retry_after),
        code=kind,
    )


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
    """The failure class of an in-stream ``error`` event (after a 200): never CLIENT_ERROR,
    since the request was accepted; unknown types count as server errors."""
    failure = classify(200, kind, message)
    if failure is FailureClass.CLIENT_ERROR:
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
        kind if isinstance(kind, str) and kind else None,
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
