"""The request-path cache layer: plans, Cache-Control, tenants, storing complete answers only,
stream replay and the conversions between stream and non-stream answers."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from edgeproxy._core import SseParser, encode_sse
from edgeproxy.cache import (
    BYPASS,
    HEADER,
    HIT,
    MISS,
    PromptCache,
    chunks_to_completion,
    completion_to_chunks,
    parse_cache_control,
    tenant_scope,
)
from edgeproxy.clock import FakeClock
from edgeproxy.snapshot import CacheSettings

ON = CacheSettings(enabled=True, ttl=60.0)
KEY_A = {"Authorization": "Bearer sk-tenant-a"}
KEY_B = {"Authorization": "Bearer sk-tenant-b"}


def request(**extra: Any) -> tuple[bytes, dict[str, Any]]:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0,
        **extra,
    }
    return orjson.dumps(body), body


def completion(content: str = "Hello there, how can I help you today?", **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
            **extra,
        }
    )


def stream_events(pieces: list[str], usage: bool = True) -> list[str]:
    head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**head, "choices": [choice]}).decode()

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({}, "stop"))
    if usage:
        u = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3 + len(pieces)}
        events.append(orjson.dumps({**head, "choices": [], "usage": u}).decode())
    return events


def planned(
    cache: PromptCache,
    headers: dict[str, str] | None = None,
    settings: CacheSettings = ON,
    **kw: Any,
) -> Any:
    raw, body = request(**kw)
    return cache.plan(raw, body, "chat", settings, headers if headers is not None else KEY_A)


# ---------------------------------------------------------------- plans and control


def test_plan_bypasses_when_disabled_or_not_deterministic() -> None:
    cache = PromptCache(clock=FakeClock())
    assert planned(cache, settings=CacheSettings()).status == BYPASS
    _, body = request()
    del body["temperature"]
    plan = cache.plan(orjson.dumps(body), body, "chat", ON, KEY_A)
    assert plan.key is None and "deterministic" in plan.reason
    assert planned(cache, temperature=0.7).key is None
    assert planned(cache, temperature=0.7, top_p=0).key is not None
    assert planned(cache, n=2).reason == "n>1"
    assert planned(cache, temperature=1, settings=CacheSettings(enabled=True, cacheable="all")).key
    assert planned(cache).status == MISS


def test_cache_control_header() -> None:
    assert parse_cache_control(None) == parse_cache_control("")
    cc = parse_cache_control('No-Cache, no-store , max-age="30", private')
    assert (cc.no_cache, cc.no_store, cc.max_age) == (True, True, 30.0)
    assert parse_cache_control("max-age=abc").max_age is None
    cache = PromptCache(clock=FakeClock())
    p = planned(cache, {**KEY_A, "Cache-Control": "no-cache"})
    assert (p.lookup, p.store, p.status) == (False, True, MISS)
    p = planned(cache, {**KEY_A, "cache-control": "no-store"})
    assert (p.lookup, p.store) == (True, False)
    assert planned(cache, {**KEY_A, "Cache-Control": "no-cache, no-store"}).status == BYPASS
    assert not planned(cache, {**KEY_A, "Cache-Control": "max-age=0"}).lookup


def test_no_cache_refreshes_and_no_store_skips() -> None:
    cache = PromptCache(clock=FakeClock())
    assert cache.store_completion(planned(cache), completion("old"))
    refresh = planned(cache, {**KEY_A, "Cache-Control": "no-cache"})
    assert cache.lookup(refresh, stream=False) is None
    assert cache.store_completion(refresh, completion("new"))
    hit = cache.lookup(planned(cache), stream=False)
    assert hit is not None and hit.body == completion("new")
    assert not cache.store_completion(
        planned(cache, {**KEY_A, "Cache-Control": "no-store"}), completion("x")
    )


def test_max_age_limits_the_age_of_a_hit() -> None:
    clock = FakeClock()
    cache = PromptCache(clock=clock)
    cache.store_completion(planned(cache), completion())
    clock.advance(20)
    assert cache.lookup(planned(cache, {**KEY_A, "Cache-Control": "max-age=10"}), False) is None
    hit = cache.lookup(planned(cache, {**KEY_A, "Cache-Control": "max-age=30"}), False)
    assert hit is not None and hit.headers["age"] == "20" and hit.headers[HEADER] == HIT


def test_tenant_scope_never_holds_the_key_and_isolates_tenants() -> None:
    scope = tenant_scope(KEY_A)
    assert "sk-tenant-a" not in scope and len(scope) == 32
    assert scope == tenant_scope({"authorization": "bearer sk-tenant-a"})
    assert scope == tenant_scope({"x-api-key": "sk-tenant-a"})
    assert scope != tenant_scope(KEY_B)
    assert scope != tenant_scope({**KEY_A, "x-edgeproxy-tenant": "team-1"})
    # The tenant header narrows a credential's scope; it cannot reach another credential's.
    assert tenant_scope({**KEY_B, "x-edgeproxy-tenant": "x"}) != tenant_scope(
        {**KEY_A, "x-edgeproxy-tenant": "x"}
    )
    cache = PromptCache(clock=FakeClock())
    cache.store_completion(planned(cache, KEY_A), completion())
    assert cache.lookup(planned(cache, KEY_A), stream=False) is not None
    assert cache.lookup(planned(cache, KEY_B), stream=False) is None
    assert cache.lookup(planned(cache, {}), stream=False) is None


def test_ttl_expiry() -> None:
    clock = FakeClock()
    cache = PromptCache(clock=clock)
    cache.store_completion(planned(cache), completion())
    clock.advance(59)
    assert cache.lookup(planned(cache), stream=False) is not None
    clock.advance(1)
    assert cache.lookup(planned(cache), stream=False) is None


def test_only_complete_answers_are_stored() -> None:
    cache = PromptCache(clock=FakeClock())
    plan = planned(cache)
    assert not cache.store_completion(plan, b'{"error":{"message":"boom"}}')
    assert not cache.store_completion(plan, b"not json")
    cut = orjson.loads(completion())
    cut["choices"][0]["finish_reason"] = None
    assert not cache.store_completion(plan, orjson.dumps(cut))
    # Streams: cut (no finish, no [DONE]), in-band error, or an unclean end are never stored.
    events = stream_events(["Hel", "lo"])
    rec = cache.recorder(plan)
    assert rec is not None
    for e in events[:2]:
        rec.feed(e)
    assert not rec.finish(clean=True)
    rec = cache.recorder(plan)
    assert rec is not None
    for e in [*events[:2], '{"error":{"message":"upstream died"}}']:
        rec.feed(e)
    assert not rec.finish(clean=True)
    rec = cache.recorder(plan)
    assert rec is not None
    for e in [*events, "[DONE]"]:
        rec.feed(e)
    assert not rec.finish(clean=False)
    assert cache.lookup(plan, stream=True) is None
    assert cache.recorder(planned(cache, {**KEY_A, "Cache-Control": "no-store"})) is None


# ---------------------------------------------------------------- replay and conversions


def relayed_bytes(events: list[str]) -> bytes:
    return b"".join(encode_sse(e) for e in [*events, "[DONE]"])


def test_recorded_stream_replays_byte_identical() -> None:
    cache = PromptCache(clock=FakeClock())
    plan = planned(cache, stream=True, stream_options={"include_usage": True})
    events = stream_events(["Hel", "lo, ", "w\u00f6rld"])
    rec = cache.recorder(plan, {"x-edgeproxy-provider": "p1"})
    assert rec is not None
    wire = relayed_bytes(events)
    for i in range(0, len(wire), 7):  # as the relay writes it, in any split
        rec.feed_bytes(wire[i : i + 7])
    assert rec.finish(clean=True)
    hit = cache.lookup(plan, stream=True)
    assert hit is not None and hit.chunks is not None
    assert b"".join(hit.chunks) == wire
    assert hit.headers["x-edgeproxy-provider"] == "p1"
    # The same entry serves a non-stream request, assembled from the events.
    flat = cache.lookup(planned(cache), stream=False)
    assert flat is not None and flat.body is not None
    answer = orjson.loads(flat.body)
    assert answer["choices"][0]["message"]["content"] == "Hello, w\u00f6rld"
    assert answer["usage"]["completion_tokens"] == 3
    # A stream request without include_usage does not get the usage-only chunk.
    plain = cache.lookup(planned(cache, stream=True), stream=True)
    assert plain is not None and plain.chunks is not None
    assert b"".join(plain.chunks) == relayed_bytes(events[:-1])


def test_usage_chunk_added_when_asked_and_missing() -> None:
    cache = PromptCache(clock=FakeClock())
    events = stream_events(["a", "b"], usage=False)
    rec = cache.recorder(planned(cache))
    assert rec is not None
    for e in [*events, "[DONE]"]:
        rec.feed(e)
    assert rec.finish(clean=True)
    hit = cache.lookup(planned(cache, stream_options={"include_usage": True}), stream=True)
    assert hit is not None and hit.chunks is not None
    assert b"".join(hit.chunks) == relayed_bytes(events)  # no usage stored: nothing to add


def test_chunks_to_completion_with_tool_calls() -> None:
    head = '{"id":"c","object":"chat.completion.chunk","created":2,"model":"m","choices":['
    events = [
        head + '{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}',
        head + '{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}',
        head + '{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"ci"}}]},'
        '"finish_reason":null}]}',
        head
        + '{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\\":1}"}}]},'
        '"finish_reason":null}]}',
        head + '{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "[DONE]",
    ]
    c = orjson.loads(chunks_to_completion(events))
    assert c["object"] == "chat.completion" and c["id"] == "c"
    msg = c["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":1}'},
        }
    ]
    assert c["choices"][0]["finish_reason"] == "tool_calls"
    # Round trip through synthesised chunks gives the same answer.
    again = orjson.loads(
        chunks_to_completion([_data(b) for b in completion_to_chunks(orjson.dumps(c))])
    )
    assert again["choices"] == c["choices"]


def _data(sse: bytes) -> str:
    events = SseParser().feed(sse)
    assert len(events) == 1
    return events[0].data


def sdk_client(payload: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=payload)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://cache.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


@pytest.mark.parametrize(
    "content", ["Hello there, how can I help you today?", "", "\u00e9\U0001f600 line\nnext " * 9]
)
def test_synthesised_stream_decodes_in_the_openai_sdk(content: str) -> None:
    cache = PromptCache(clock=FakeClock())
    answer = completion(content)
    cache.store_completion(planned(cache), answer)
    hit = cache.lookup(planned(cache, stream=True, stream_options={"include_usage": True}), True)
    assert hit is not None and hit.chunks is not None
    assert len(hit.chunks) >= 4 and hit.chunks[-1] == encode_sse("[DONE]")
    client = sdk_client(b"".join(hit.chunks), "text/event-stream")
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14
    # And the non-stream hit parses as the same completion.
    flat = cache.lookup(planned(cache), stream=False)
    assert flat is not None and flat.body is not None
    parsed = sdk_client(flat.body, "application/json").chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert parsed.choices[0].message.content == content


def test_synthesised_tool_call_stream_in_the_openai_sdk() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"query": "weather in Paris today"}'},
            }
        ],
    }
    c = orjson.loads(completion())
    c["choices"][0]["message"] = message
    c["choices"][0]["finish_reason"] = "tool_calls"
    client = sdk_client(b"".join(completion_to_chunks(orjson.dumps(c))), "text/event-stream")
    with client.chat.completions.stream(
        model="chat", messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls
    assert call is not None and call[0].id == "call_9"
    assert call[0].function.arguments == '{"query": "weather in Paris today"}'  # type: ignore[union-attr]
