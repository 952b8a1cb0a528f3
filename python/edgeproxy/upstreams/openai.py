"""The OpenAI-compatible upstream: OpenAI, Azure OpenAI, Gemini's compatible endpoint, vLLM,
Ollama, LocalAI. Sends one attempt and turns transport errors into classified failures."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass, classify_status, parse_retry_after
from edgeproxy.snapshot import Candidate
from edgeproxy.upstreams.http1 import ConnectFailed, Http1Pool, UpstreamResponse, describe_error

# Error bodies are read for pass-through and messages; a hostile upstream cannot make us buffer more.
MAX_ERROR_BODY = 64 * 1024


def upstream_body(request_body: dict[str, Any], candidate: Candidate) -> bytes:
    """The client's body with ``model`` replaced by the name this provider knows."""
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
    """POST the body; return a 2xx response whose body is still unread, or raise AttemptFailure."""
    headers = {
        **candidate.headers,
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "X-Request-Id": request_id,
        **(extra_headers or {}),  # trace context (traceparent)
    }
    response = await post(pool, candidate.chat_url, body, headers, connect_timeout)
    if 200 <= response.status < 300:
        return response
    raise await _failure_from_response(response)


async def post(
    pool: Http1Pool,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    connect_timeout: float,
) -> UpstreamResponse:
    """POST over the pool; a transport failure before the response becomes an AttemptFailure
    (shared by every upstream wire)."""
    try:
        return await pool.post(url, body, headers, connect_timeout=connect_timeout)
    except TimeoutError:
        raise AttemptFailure(
            FailureClass.CONNECT_TIMEOUT, f"no connection within {connect_timeout:g}s"
        ) from None
    except ConnectFailed as exc:
        raise AttemptFailure(FailureClass.CONNECT_ERROR, str(exc)) from None
    except ConnectionError as exc:
        raise AttemptFailure(
            FailureClass.RESET, f"connection lost before the response: {describe_error(exc)}"
        ) from None


async def read_error_body(response: UpstreamResponse) -> bytes:
    """At most 64 KiB of an error response (for pass-through and messages), then drop it."""
    try:
        async with asyncio.timeout(5.0):
            # One network read may overshoot the limit: cut here, not at each caller.
            return (await response.read(MAX_ERROR_BODY))[:MAX_ERROR_BODY]
    except (TimeoutError, ConnectionError):
        return b""
    finally:
        response.close()


async def _failure_from_response(response: UpstreamResponse) -> AttemptFailure:
    body = await read_error_body(response)
    code = error_code(body)
    failure = classify_status(response.status, code)
    assert failure is not None
    return AttemptFailure(
        failure,
        f"HTTP {response.status} from upstream" + (f" ({code})" if code else ""),
        status=response.status,
        body=body,
        content_type=response.content_type or "application/json",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        code=code,
    )


def error_code(body: bytes) -> str | None:
    """The upstream's own error code (or type) from an OpenAI-style error body."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        if isinstance(code, str) and code:
            return code
    return None
