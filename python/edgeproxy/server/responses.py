"""The proxy's own answers: who-served-it headers, a client error passed through, and the one
error a client gets when no candidate could answer.

Everything here that carries an upstream's words (its error body, failure details quoting its
error code or message) is scrubbed by ``telemetry.redact`` first: an upstream that quotes the
provider key back ("Incorrect API key provided: Bearer sk-…") never hands it to the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from edgeproxy._core import encode_sse
from edgeproxy.events import CandidateSkipped, SkipReason
from edgeproxy.failure import MISCONFIGURED, TIMEOUTS, AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import AttemptRecord, Outcome
from edgeproxy.snapshot import Candidate, Route
from edgeproxy.telemetry.redact import redact, redact_body


def error_body(
    message: str,
    *,
    type: str,
    request_id: str,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type,
            "param": param,
            "code": code,
            "request_id": request_id,
        }
    }


def served_headers(candidate: Candidate, attempts: int, version: str) -> dict[str, str]:
    return {
        "x-edgeproxy-provider": candidate.provider,
        "x-edgeproxy-region": candidate.region,
        "x-edgeproxy-model": candidate.model,
        "x-edgeproxy-attempts": str(attempts),
        "x-edgeproxy-policy-version": version,
    }


def pass_through(
    failure: AttemptFailure, candidate: Candidate, attempts: int, version: str
) -> web.Response:
    assert failure.status is not None
    return web.Response(
        status=failure.status,
        body=redact_body(failure.body),
        headers={
            **served_headers(candidate, attempts, version),
            "Content-Type": redact(failure.content_type),
        },
    )


def all_failed(
    route: Route,
    outcome: Outcome[Any],
    rid: str,
    version: str,
    planned_out: Sequence[CandidateSkipped] = (),
) -> web.Response:
    """Every attempt failed. ``planned_out``: the candidates the plan left out (a window too
    small, even compacted; a wire that cannot carry the request), named in the message too."""
    attempts = outcome.attempts
    failures = [a.failure for a in attempts if a.failure is not None]
    headers = {
        "x-edgeproxy-attempts": str(len(attempts)),
        "x-edgeproxy-policy-version": version,
        # The proxy already retried across the chain; the SDK retrying too would multiply load.
        "x-should-retry": "false",
    }
    retry_after = outcome.retry_after
    limited = [s for s in outcome.skipped if s.reason is SkipReason.PROVIDER_LIMIT]
    over = [s for s in outcome.skipped if s.reason is SkipReason.OVER_PROVIDER_LIMIT]
    if not attempts and over and len(over) == len(outcome.skipped):
        # The request alone is more than every candidate's provider TPM: no wait lets it in, so
        # not a 429 a client would retry forever but a 400 saying what to lower.
        status, type_, code = 400, "invalid_request_error", "request_exceeds_limit"
        headers["x-edgeproxy-limit"] = "provider:tpm"
        retry_after = None
    elif not attempts and limited and len(limited) + len(over) == len(outcome.skipped):
        # Every candidate is at its provider's own rate limit (docs/keys.md).
        status, type_, code = 429, "rate_limit_error", "provider_limit"
    elif not attempts:
        # Nothing was tried: every breaker is open (fail fast), or no time was left.
        status, type_, code = 503, "server_error", "upstream_unavailable"
    elif all(f.failure is FailureClass.RATE_LIMITED for f in failures):
        status, type_, code = 429, "rate_limit_error", "rate_limit_exceeded"
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        retry_after = min(waits) if waits else retry_after
    elif all(f.failure in TIMEOUTS for f in failures):
        status, type_, code = 504, "upstream_error", "upstream_timeout"
    elif failures and failures[-1].failure in MISCONFIGURED:
        # The proxy's own configuration, not the request: the client cannot fix it by retrying.
        status, type_ = 502, "upstream_error"
        code = _MISCONFIGURED_CODE[failures[-1].failure]
    else:
        status, type_, code = 502, "upstream_error", "upstream_unavailable"
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    tried = "; ".join(f"{a.candidate.key}: {a.failure}" for a in attempts)
    skipped = "; ".join(
        f"{s.candidate.key}: skipped ({s.detail})" for s in (*planned_out, *outcome.skipped)
    )
    detail = "; ".join(part for part in (tried, skipped) if part)
    message = redact(
        _misconfigured(attempts)
        + f"No candidate for model {route.name!r} could answer ({len(attempts)} attempts; "
        f"{outcome.stopped_because}): {detail}."
    )
    body: dict[str, Any] = error_body(message, type=type_, code=code, request_id=rid)
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


_MISCONFIGURED_CODE = {
    FailureClass.AUTH_REJECTED: "upstream_auth_rejected",
    FailureClass.MODEL_NOT_FOUND: "upstream_model_not_found",
}


def _misconfigured(attempts: Sequence[AttemptRecord]) -> str:
    """What the proxy's operator must fix, when the last attempt failed on the proxy's own
    configuration: the candidate is named (provider/region/model), never its key, and nothing of
    the upstream's body is quoted (it describes the proxy's credentials)."""
    last = attempts[-1] if attempts else None
    failure = last.failure if last is not None else None
    if last is None or failure is None or failure.failure not in MISCONFIGURED:
        return ""
    status = f" (HTTP {failure.status})" if failure.status is not None else ""
    if failure.failure is FailureClass.AUTH_REJECTED:
        return (
            f"The upstream rejected the proxy's credentials for {last.candidate.key}{status}: "
            "the proxy's operator must fix the provider key. "
        )
    return (
        f"The upstream does not serve the model of {last.candidate.key}{status} (retired or "
        "renamed, or a wrong base URL): the proxy's operator must fix the policy. "
    )


def midstream_error(failure: AttemptFailure, events: int, rid: str) -> bytes:
    """The in-band error that ends a committed stream: the OpenAI SDK raises ``APIError`` on it."""
    body = error_body(
        redact(
            f"The upstream stream failed after {events} events ({failure}); "
            "the answer is incomplete."
        ),
        type="upstream_error",
        code="stream_interrupted",
        request_id=rid,
    )
    return encode_sse(orjson.dumps(body).decode())
