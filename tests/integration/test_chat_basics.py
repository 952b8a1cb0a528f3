"""The OpenAI SDK, pointed at the proxy, gets chat completions exactly as from OpenAI."""

from __future__ import annotations

import openai
import pytest

from harness import Stack

MESSAGES = [{"role": "user", "content": "Tell me about failover."}]


def test_non_stream_answer_and_served_by_headers(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-edgeproxy-provider"] == "alpha"
    assert raw.headers["x-edgeproxy-region"] == "one"
    assert raw.headers["x-edgeproxy-model"] == "m"
    assert raw.headers["x-edgeproxy-attempts"] == "1"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-edgeproxy-policy-version"] == stack.policy.version
    # The upstream was asked for the provider's own model name, not the route's.
    assert completion.model == "upstream-m"


def test_stream_delivers_the_same_answer_chunk_by_chunk(stack: Stack) -> None:
    client = stack.client()
    whole = client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert len(chunks) > 3  # relayed as chunks, not one blob
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_response_headers_name_the_candidate(stack: Stack) -> None:
    with stack.client().chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-edgeproxy-provider"] == "alpha"
        assert response.headers["x-edgeproxy-attempts"] == "1"
        body = response.read().decode()
    assert body.rstrip().endswith("data: [DONE]")


def test_alias_routes_to_the_same_chain(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="default", messages=MESSAGES
    )
    assert raw.headers["x-edgeproxy-model"] == "m"


def test_models_lists_routes_and_aliases(stack: Stack) -> None:
    ids = [m.id for m in stack.client().models.list()]
    assert ids == ["m", "default"]


def test_health_and_readiness(stack: Stack) -> None:
    assert stack.http.get("/healthz").json()["status"] == "ok"
    ready = stack.http.get("/readyz").json()
    assert ready == {"status": "ready", "policy_version": stack.policy.version}


def test_client_request_id_is_kept(stack: Stack) -> None:
    response = stack.http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"x-request-id": "app-trace-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "app-trace-42"


def test_provider_key_is_sent_and_client_key_is_not(stack: Stack) -> None:
    # The sims require the provider keys from the policy: a 200 proves the proxy sent them, and
    # the client's own key (which the sims would reject) was not forwarded in their place.
    completion = stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert stack.stats("alpha_one")["outcomes"].get("unauthorized", 0) == 0


def test_upstream_auth_failure_is_a_502_without_leaking_the_key(make_stack) -> None:  # type: ignore[no-untyped-def]
    """Every upstream refuses the proxy's key: not the client's error (it was a passed-through
    401 before), so every candidate is tried and the proxy answers 502 naming what to fix."""
    from edgeproxy.sim import SimConfig
    from harness import THREE_WAY

    sims = [
        SimConfig(name=n, ttft=0, tokens_per_second=0, require_api_key="other")
        for n in ("alpha_one", "alpha_two", "beta")
    ]
    stack = make_stack(THREE_WAY, sims)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    text = info.value.response.text + str(dict(info.value.response.headers))
    assert "sk-alpha-secret" not in text and "sk-beta-secret" not in text
    assert info.value.response.headers["x-edgeproxy-attempts"] == "3"
    assert info.value.response.json()["error"]["code"] == "upstream_auth_rejected"
