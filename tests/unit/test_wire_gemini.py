"""Gemini's wire: its error table (statuses, ``error.status``, ``RetryInfo``, per-day quotas,
in-stream errors), its key header, its URLs, and the translation of requests, answers and
streams from and to the inner OpenAI shape. What every wire must do is in the contract suite
(tests/integration/test_wire_contract.py)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.translate import TranslationError
from edgeproxy.translate.gemini import (
    GeminiStream,
    gemini_to_openai_response,
    openai_to_gemini_request,
)
from edgeproxy.wires import gemini
from edgeproxy.wires.gemini import WIRE

KEY = "AIzaSy" + "Fake0123456789abcdefghijklmnopq"[:33].ljust(33, "x")  # a Google key's shape


def body(status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": 0, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return orjson.dumps({"error": error})


RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
PER_DAY = {
    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
}
KEY_INVALID = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
KEY_EXPIRED = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_EXPIRED"}
OTHER_REASON = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FIELD_INVALID"}
PER_MINUTE = {
    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
    "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}],
}


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (400, body("INVALID_ARGUMENT", "bad"), FailureClass.CLIENT_ERROR),
        (
            400,
            body(
                "INVALID_ARGUMENT",
                "The input token count (1048577) exceeds the maximum number of tokens allowed "
                "(1048576).",
            ),
            FailureClass.CONTEXT_LENGTH,
        ),
        # Billing off, or a region the free tier does not serve: the proxy's account.
        (400, body("FAILED_PRECONDITION", "billing"), FailureClass.QUOTA_EXHAUSTED),
        (500, body("FAILED_PRECONDITION", "odd"), FailureClass.SERVER_ERROR),
        # The proxy's key and the policy's model are not the client's to fix: failed over.
        (401, body("UNAUTHENTICATED", "who"), FailureClass.AUTH_REJECTED),
        (403, body("PERMISSION_DENIED", "no"), FailureClass.AUTH_REJECTED),
        (404, body("NOT_FOUND", "model"), FailureClass.MODEL_NOT_FOUND),
        (
            400,
            body("INVALID_ARGUMENT", "API key not valid.", [KEY_INVALID]),
            FailureClass.AUTH_REJECTED,
        ),
        (400, body("INVALID_ARGUMENT", "expired", [KEY_EXPIRED]), FailureClass.AUTH_REJECTED),
        # Another ErrorInfo reason on a 400 is still the request's fault.
        (400, body("INVALID_ARGUMENT", "bad", [OTHER_REASON]), FailureClass.CLIENT_ERROR),
        (404, b"<html>no such path</html>", FailureClass.MODEL_NOT_FOUND),  # a wrong base URL
        (401, b"", FailureClass.AUTH_REJECTED),
        # The status decides over a body blaming the request: a 401 is the proxy's key.
        (401, body("INVALID_ARGUMENT", "API key not valid."), FailureClass.AUTH_REJECTED),
        (404, body("FAILED_PRECONDITION", "odd"), FailureClass.MODEL_NOT_FOUND),
        # A 5xx naming a key problem is still the upstream's failure, not an ejection for 1 h.
        (500, body("UNAUTHENTICATED", "odd", [KEY_INVALID]), FailureClass.SERVER_ERROR),
        (503, body("NOT_FOUND", "odd"), FailureClass.SERVER_ERROR),
        (429, body("RESOURCE_EXHAUSTED", "slow", [PER_MINUTE]), FailureClass.RATE_LIMITED),
        (429, body("RESOURCE_EXHAUSTED", "today", [PER_DAY]), FailureClass.QUOTA_EXHAUSTED),
        (500, body("INTERNAL", "oops"), FailureClass.SERVER_ERROR),
        (503, body("UNAVAILABLE", "down"), FailureClass.SERVER_ERROR),
        (503, body("UNAVAILABLE", "The model is overloaded."), FailureClass.OVERLOADED),
        (504, body("DEADLINE_EXCEEDED", "slow"), FailureClass.SERVER_ERROR),
        # A 5xx whose body blames the request is still the upstream's failure.
        (500, body("INVALID_ARGUMENT", "odd"), FailureClass.SERVER_ERROR),
        (502, b"<html>bad gateway</html>", FailureClass.SERVER_ERROR),
        (418, b"teapot", FailureClass.CLIENT_ERROR),
        (302, body("INVALID_ARGUMENT", "moved"), FailureClass.REDIRECT),
    ],
)
def test_classification(status: int, raw: bytes, expected: FailureClass) -> None:
    failure = WIRE.failure(status, raw, {}, "application/json")
    assert failure.failure is expected
    assert failure.may_fail_over is (expected is not FailureClass.CLIENT_ERROR)


def test_an_invalid_key_is_not_a_client_error_on_the_embeddings_endpoint_either() -> None:
    raw = body("INVALID_ARGUMENT", f"API key not valid: {KEY}", [KEY_INVALID])
    failure = WIRE.failure(400, raw, {}, "application/json")
    assert failure.failure is FailureClass.AUTH_REJECTED and failure.may_fail_over
    assert KEY not in str(failure)  # the detail names the status and the code, never the body


def test_retry_info_is_the_wait_when_there_is_no_retry_after() -> None:
    raw = body("RESOURCE_EXHAUSTED", "slow", [RETRY])
    assert WIRE.failure(429, raw, {}, "application/json").retry_after == 37.0
    assert WIRE.failure(429, raw, {"retry-after": "4"}, "application/json").retry_after == 4.0
    hostile = body("RESOURCE_EXHAUSTED", "slow", [{**RETRY, "retryDelay": "99999999s"}])
    assert WIRE.failure(429, hostile, {}, "application/json").retry_after is None
    fraction = body("RESOURCE_EXHAUSTED", "slow", [{**RETRY, "retryDelay": "6.570123456s"}])
    assert WIRE.failure(429, fraction, {}, "application/json").retry_after == pytest.approx(
        6.57, abs=1e-3
    )


def test_in_stream_errors_are_never_client_errors() -> None:
    stream = WIRE.stream(include_usage=False)
    assert stream is not None
    for status, expected in (
        ("INVALID_ARGUMENT", FailureClass.SERVER_ERROR),
        # After the 200 the key and the model were accepted: a server error, no long ejection.
        ("UNAUTHENTICATED", FailureClass.SERVER_ERROR),
        ("NOT_FOUND", FailureClass.SERVER_ERROR),
        ("RESOURCE_EXHAUSTED", FailureClass.RATE_LIMITED),
        ("UNAVAILABLE", FailureClass.SERVER_ERROR),
    ):
        stream = WIRE.stream(include_usage=False)
        assert stream is not None
        event = b"data: " + body(status, f"API key not valid: {KEY}") + b"\r\n\r\n"
        with pytest.raises(AttemptFailure) as info:
            stream.feed(event)
        assert info.value.failure is expected
        assert KEY not in str(info.value)  # an upstream quoting the key is scrubbed


def candidate(
    headers: dict[str, str], base_url: str = "https://g.example/v1beta", **query: str
) -> Candidate:
    return Candidate(
        provider="gem",
        region="r",
        model="flash",
        upstream_model="models/gemini-2.5-flash",
        wire=WIRE,
        base_url=base_url,
        chat_url=WIRE.endpoint_url(base_url, query),
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType(headers),
    )


def test_the_key_goes_in_x_goog_api_key_whatever_the_policy_wrote() -> None:
    for written in (
        {"Authorization": f"Bearer {KEY}"},
        {"api-key": KEY},
        {"x-goog-api-key": KEY},
    ):
        headers = WIRE.request_headers(candidate(written), stream=False, request_id="r", extra={})
        assert headers["x-goog-api-key"] == KEY
        assert "Authorization" not in headers and "api-key" not in headers


def test_urls_name_the_model_and_the_mode_never_the_key() -> None:
    target = candidate({"Authorization": f"Bearer {KEY}"}, **{"x": "1"})
    assert WIRE.url(target, stream=False) == (
        "https://g.example/v1beta/models/gemini-2.5-flash:generateContent?x=1"
    )
    assert WIRE.url(target, stream=True) == (
        "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&x=1"
    )
    embeddings = WIRE.embeddings
    assert embeddings is not None
    assert embeddings.url(target) == (
        "https://g.example/v1beta/models/gemini-2.5-flash:batchEmbedContents?x=1"
    )
    probe = WIRE.probe(target, "completion", None)
    assert KEY not in probe.url and probe.headers["x-goog-api-key"] == KEY
    assert WIRE.probe(target, "models", None).url == "https://g.example/v1beta/models?x=1"
    odd = candidate({}, base_url="https://g.example/v1beta/")
    odd = dataclasses.replace(odd, upstream_model="a/b c")
    assert WIRE.url(odd, stream=False).endswith("/models/a%2Fb%20c:generateContent")


def test_a_client_error_body_is_openais_shape_without_the_key() -> None:
    raw = body("INVALID_ARGUMENT", f"API key not valid: {KEY}")
    failure = WIRE.failure(400, raw, {}, "application/json")
    out, content_type = WIRE.client_error_body(failure, "req-1")
    error = orjson.loads(out)["error"]
    assert content_type == "application/json" and KEY not in out.decode()
    assert error["type"] == "invalid_request_error" and error["request_id"] == "req-1"
    assert error["code"] == "invalid_argument"


# -- requests ------------------------------------------------------------------------------------


CHAT: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/PNG;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "plain text"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "max_completion_tokens": 99,
    "temperature": 0.5,
    "stop": "END",
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    },
    "stream_options": {"include_usage": True},
    "user": "u-1",
}


def test_a_request_translates_whole() -> None:
    out = openai_to_gemini_request(CHAT)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    user, model, results = out["contents"]
    assert user == {
        "role": "user",
        "parts": [{"text": "Look"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}],
    }
    assert model["role"] == "model" and model["parts"][0] == {"text": "Let me check."}
    assert model["parts"][1] == {"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}
    # Both answers of the turn in one content; each names its function.
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "call_1", "name": "f", "response": {"ok": True}}},
            {
                "functionResponse": {
                    "id": "call_2",
                    "name": "g",
                    "response": {"result": "plain text"},
                }
            },
        ],
    }
    assert out["tools"] == [
        {"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert out["generationConfig"] == {
        "maxOutputTokens": 99,
        "temperature": 0.5,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert "model" not in out and "user" not in out


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"stop": ["a", "b", "c", "d", "e", "f"]}, "stop"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"tool_choice": "required", "tools": None}, "tool_choice"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "messages[1].role",
        ),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
    ],
)
def test_what_gemini_cannot_carry_is_refused_by_name(change: dict[str, Any], param: str) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(TranslationError) as info:
        openai_to_gemini_request({k: v for k, v in request.items() if v is not None})
    assert info.value.param == param
    refusal = WIRE.refusal({k: v for k, v in request.items() if v is not None})
    assert refusal is not None and refusal.param == param


# -- answers -------------------------------------------------------------------------------------


def test_an_answer_translates_with_usage_calls_and_without_thoughts() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "secret reasoning", "thought": True},
                        {"text": "Hello"},
                        {"functionCall": {"name": "f", "args": {"a": 1}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7,
            "cachedContentTokenCount": 4,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    out = gemini_to_openai_response(answer)
    message = out["choices"][0]["message"]
    assert message["content"] == "Hello" and out["choices"][0]["finish_reason"] == "tool_calls"
    call = message["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {
        "name": "f",
        "arguments": '{"a":1}',
    }
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 12,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    assert out["id"] == "chatcmpl-abc" and out["model"] == "gemini-2.5-flash"


def test_a_blocked_prompt_is_a_content_filter_stop_and_nothing_else_is_an_answer() -> None:
    blocked = gemini_to_openai_response({"promptFeedback": {"blockReason": "SAFETY"}})
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    assert blocked["choices"][0]["message"]["content"] is None
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(b'{"candidates": []}')
    assert info.value.failure is FailureClass.MALFORMED
    for hostile in (
        b"[1, 2]",
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": 3}}]}}]}',
        b"nope",
    ):
        with pytest.raises(AttemptFailure) as info:
            WIRE.answer(hostile)
        assert info.value.failure is FailureClass.MALFORMED


@pytest.mark.parametrize(
    "meta",
    [
        None,  # no usageMetadata at all
        {},
        {"candidatesTokenCount": 4},  # no prompt count
        {"promptTokenCount": "9", "candidatesTokenCount": 4},
        {"promptTokenCount": 9, "candidatesTokenCount": -3},
        {"promptTokenCount": 9, "thoughtsTokenCount": True},
        {"promptTokenCount": 9, "cachedContentTokenCount": 2**60},
        "lots",
    ],
)
def test_a_missing_or_hostile_usage_is_left_out_so_the_proxy_counts(meta: Any) -> None:
    """Zeros would bill the answer as free: no usage at all makes the proxy count its own."""
    data: dict[str, Any] = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "MAX_TOKENS"}]
    }
    if meta is not None:
        data["usageMetadata"] = meta
    out = gemini_to_openai_response(data)
    assert "usage" not in out
    assert out["choices"][0]["finish_reason"] == "length"
    stream = GeminiStream(include_usage=True)
    tail = stream.feed(b"data: " + orjson.dumps(data) + b"\r\n\r\n") + stream.finish()
    assert stream.usage is None and b'"usage"' not in tail and tail.endswith(b"[DONE]\n\n")


def test_a_blocked_prompts_usage_has_no_candidates_count() -> None:
    out = gemini_to_openai_response(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}
    )
    assert out["usage"]["prompt_tokens"] == 7 and out["usage"]["completion_tokens"] == 0
    assert out["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    "reason",
    ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "MISSING_THOUGHT_SIGNATURE", "OTHER"],
)
def test_a_finish_reason_that_is_a_model_failure_is_malformed(reason: str) -> None:
    """Not an empty ``stop``: the attempt fails and the next candidate is tried."""
    answer = {"candidates": [{"content": {"parts": []}, "finishReason": reason}]}
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(orjson.dumps(answer))
    assert info.value.failure is FailureClass.MALFORMED and reason in str(info.value)
    stream = WIRE.stream(include_usage=False)
    assert stream is not None
    with pytest.raises(AttemptFailure) as again:
        stream.feed(b"data: " + orjson.dumps(answer) + b"\r\n\r\n")
    assert again.value.failure is FailureClass.MALFORMED


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("MAX_TOKENS", "length")],
)
def test_a_stop_for_safety_or_recitation_is_content_filter(reason: str, finish: str) -> None:
    answer = {"candidates": [{"content": {"parts": [{"text": "par"}]}, "finishReason": reason}]}
    assert gemini_to_openai_response(answer)["choices"][0]["finish_reason"] == finish


def _tool_with(parameters: dict[str, Any]) -> dict[str, Any]:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
    }
    return openai_to_gemini_request(body)["tools"][0]["functionDeclarations"][0]


def test_a_schemas_refs_defs_and_additional_properties_go_as_written() -> None:
    # What pydantic writes for a model with a described nested model (and a strict tool's
    # additionalProperties: false): Gemini's JSON Schema fields take all of it but the
    # annotations next to a $ref.
    schema = {
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address", "description": "Where", "title": "Home"},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Address", "default": None}},
            "either": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            "$ref": {"type": "string", "description": "a property named $ref is data"},
        },
        "required": ["home"],
        "additionalProperties": False,
    }
    sent = _tool_with(schema)["parametersJsonSchema"]
    assert sent["properties"]["home"] == {"$ref": "#/$defs/Address"}
    assert sent["properties"]["tags"]["items"] == {"$ref": "#/$defs/Address"}
    assert sent["properties"]["either"] == schema["properties"]["either"]
    assert sent["properties"]["$ref"] == schema["properties"]["$ref"]
    assert sent["$defs"] == schema["$defs"] and sent["additionalProperties"] is False
    assert schema["properties"]["home"]["description"] == "Where"  # the request is not changed


def test_a_validating_keyword_next_to_a_ref_is_refused_by_name() -> None:
    schema = {"type": "object", "properties": {"n": {"$ref": "#/$defs/N", "minimum": 3}}}
    with pytest.raises(TranslationError) as info:
        _tool_with(schema)
    assert info.value.param == "tools[0].function.parameters.properties.n.minimum"
    refusal = WIRE.refusal(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"items": {"$ref": "#/a", "enum": [1]}}},
            },
        }
    )
    assert refusal is not None and refusal.param == "response_format.json_schema.schema.items.enum"


# -- streams -------------------------------------------------------------------------------------


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"


STREAM = (
    _event(
        {
            "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}],
            "responseId": "r1",
            "modelVersion": "g",
        }
    )
    + _event({"candidates": [{"content": {"parts": [{"text": "lo"}], "role": "model"}}]})
    + _event(
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": {"id": "c1", "name": "f", "args": {}}}]},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
        }
    )
)


def _chunks(out: bytes) -> list[Any]:
    return [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]


def test_a_stream_translates_to_openai_chunks() -> None:
    stream = GeminiStream(include_usage=True)
    out = stream.feed(STREAM) + stream.finish()
    chunks = _chunks(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "Hello"
    )
    call = next(c for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"])
    assert call["choices"][0]["delta"]["tool_calls"][0]["id"] == "c1"
    finish = [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finish == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] == 4 and out.endswith(b"data: [DONE]\n\n")
    assert all(c["id"] == "chatcmpl-r1" for c in chunks)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_any_split_of_the_stream_gives_the_same_chunks(cuts: list[int]) -> None:
    whole = GeminiStream(include_usage=False)
    expected = _chunks(whole.feed(STREAM) + whole.finish())
    split = GeminiStream(include_usage=False)
    out = b""
    bounds = sorted(set(cuts))
    for a, b in zip([0, *bounds], [*bounds, len(STREAM)], strict=True):
        out += split.feed(STREAM[a:b])
    out += split.finish()
    for chunk in expected:
        chunk.pop("created", None)
    got = _chunks(out)
    for chunk in got:
        chunk.pop("created", None)
    # Function-call ids that Gemini gave are kept; none here is generated.
    assert got == expected


def test_a_stream_without_a_finish_reason_stays_cut() -> None:
    stream = GeminiStream(include_usage=True)
    stream.feed(STREAM.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert stream.finish() == b""  # no [DONE]: the relay reports the cut


def test_a_hostile_stream_is_malformed() -> None:
    for bad in (
        b"data: not json\r\n\r\n",
        b"data: [1]\r\n\r\n",
        b'data: {"candidates": 7}\r\n\r\n',
    ):
        stream = WIRE.stream(include_usage=False)
        assert stream is not None
        with pytest.raises(AttemptFailure) as info:
            stream.feed(bad)
        assert info.value.failure is FailureClass.MALFORMED


def test_embeddings_refuse_tokens_and_unknown_fields() -> None:
    from edgeproxy.snapshot.wire import EmbeddingsOptions

    embeddings = gemini.WIRE.embeddings
    assert embeddings is not None
    assert embeddings.refusal(["text"], EmbeddingsOptions()) is None
    tokens = embeddings.refusal([[1, 2]], EmbeddingsOptions())
    assert tokens is not None and tokens.param == "input"
    extra = embeddings.refusal(["t"], EmbeddingsOptions(extra={"truncate": True}))
    assert extra is not None and extra.param == "truncate"
    with pytest.raises(AttemptFailure) as info:
        embeddings.answer(b'{"embeddings": [{"values": [1.0]}]}', 2)
    assert info.value.failure is FailureClass.MALFORMED
