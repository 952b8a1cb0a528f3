"""The Anthropic Messages wire's own rules: error classification (statuses and error types, in
answers and in streams) and its auth headers. What every wire must do is in the contract suite
(tests/integration/test_wire_contract.py)."""

from __future__ import annotations

from types import MappingProxyType

import orjson
import pytest

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.wires import anthropic_messages
from edgeproxy.wires.anthropic_messages import WIRE

KEY = "sk-ant-secret-0123456789"


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected"),
    [
        (529, "overloaded_error", "Overloaded", FailureClass.OVERLOADED),
        (529, None, None, FailureClass.OVERLOADED),
        (429, "rate_limit_error", "slow down", FailureClass.RATE_LIMITED),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
            FailureClass.CONTEXT_LENGTH,
        ),
        (400, "invalid_request_error", "messages: bad", FailureClass.CLIENT_ERROR),
        # The proxy's key and the policy's model are not the client's to fix: failed over.
        (401, "authentication_error", "invalid x-api-key", FailureClass.AUTH_REJECTED),
        (403, "permission_error", "no", FailureClass.AUTH_REJECTED),
        (404, "not_found_error", "model: claude-3-opus-20240229", FailureClass.MODEL_NOT_FOUND),
        (401, None, None, FailureClass.AUTH_REJECTED),
        (404, None, None, FailureClass.MODEL_NOT_FOUND),  # a wrong base URL answers HTML
        (413, "request_too_large", "big", FailureClass.CLIENT_ERROR),
        (422, None, None, FailureClass.CLIENT_ERROR),
        # The body's type decides over the status: a 400 saying the key is refused is one.
        (400, "authentication_error", "invalid x-api-key", FailureClass.AUTH_REJECTED),
        (402, "billing_error", "credit", FailureClass.QUOTA_EXHAUSTED),
        (500, "api_error", "oops", FailureClass.SERVER_ERROR),
        (504, "timeout_error", "slow", FailureClass.SERVER_ERROR),
        (503, None, None, FailureClass.SERVER_ERROR),
        (418, None, None, FailureClass.CLIENT_ERROR),
    ],
)
def test_classification(
    status: int, kind: str | None, message: str | None, expected: FailureClass
) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    failure = WIRE.failure(
        status, body if kind else b"<html>", {"retry-after": "4"}, "application/json"
    )
    assert failure.failure is expected
    assert failure.status == status and failure.code == kind
    assert failure.retry_after == 4.0
    assert failure.may_fail_over is (expected is not FailureClass.CLIENT_ERROR)


def test_stream_errors_are_never_client_errors() -> None:
    assert anthropic_messages.classify_stream_error("overloaded_error") is FailureClass.OVERLOADED
    assert anthropic_messages.classify_stream_error("rate_limit_error") is FailureClass.RATE_LIMITED
    assert anthropic_messages.classify_stream_error("api_error") is FailureClass.SERVER_ERROR
    assert (
        anthropic_messages.classify_stream_error("invalid_request_error")
        is FailureClass.SERVER_ERROR
    )
    assert anthropic_messages.classify_stream_error("brand_new_error") is FailureClass.SERVER_ERROR
    # After the 200 the key and the model were accepted: a server error, not a long ejection.
    for kind in ("authentication_error", "permission_error", "not_found_error"):
        assert anthropic_messages.classify_stream_error(kind) is FailureClass.SERVER_ERROR
    failure = anthropic_messages.stream_failure("overloaded_error", "Overloaded")
    assert failure.failure is FailureClass.OVERLOADED and failure.may_fail_over


def candidate(headers: dict[str, str]) -> Candidate:
    return Candidate(
        provider="anthropic",
        region="local",
        model="claude",
        upstream_model="claude-upstream",
        wire=WIRE,
        base_url="http://127.0.0.1:1/v1",
        chat_url=WIRE.endpoint_url("http://127.0.0.1:1/v1", {}),
        context_window=200000,
        tags=MappingProxyType({}),
        headers=MappingProxyType(headers),
    )


def test_a_bearer_key_is_sent_as_x_api_key() -> None:
    headers = WIRE.request_headers(
        candidate({"Authorization": f"Bearer {KEY}"}), stream=True, request_id="r1", extra={}
    )
    assert headers["x-api-key"] == KEY
    assert "Authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["Accept"] == "text/event-stream"


def test_a_pinned_version_and_beta_headers_are_kept() -> None:
    pinned = anthropic_messages.anthropic_headers(
        KEY, {"anthropic-beta": "x"}, version="2024-01-01"
    )
    headers = WIRE.request_headers(candidate(pinned), stream=False, request_id="r2", extra={})
    assert (headers["x-api-key"], headers["anthropic-version"]) == (KEY, "2024-01-01")
    assert headers["anthropic-beta"] == "x"
    assert headers["Accept"] == "application/json"


def test_a_non_message_answer_is_malformed() -> None:
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(orjson.dumps({"choices": []}))
    assert info.value.failure is FailureClass.MALFORMED


def test_an_overloaded_probe_is_down_and_a_completion_probe_404_is_not_healthy() -> None:
    assert WIRE.probe_verdict("models", 529) is False
    assert WIRE.probe_verdict("models", 404) is True  # reachable: no model list there
    assert WIRE.probe_verdict("completion", 404) is False
    assert WIRE.probe_verdict("completion", 429) is None
