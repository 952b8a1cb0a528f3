"""SimProvider over real loopback sockets: OpenAI wire shapes and every fault mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from edgeproxy.sim import Fault, SimConfig, SimProvider

MESSAGES: list[Any] = [{"role": "user", "content": "Say something about edge proxies."}]


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(name="alpha", ttft=0.0, tokens_per_second=0, default_completion_tokens=10, seed=7)
    )
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def client(sim: SimProvider) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0, timeout=5)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-sim", "messages": MESSAGES, **extra}


async def read_events(resp: aiohttp.ClientResponse) -> list[bytes]:
    """SSE data payloads in order (framing checked: every event is ``data: ...`` + blank line)."""
    raw = await resp.read()
    assert raw.endswith(b"\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert all(e.startswith(b"data: ") for e in events)
    return [e[len(b"data: ") :] for e in events]


# -- wire shapes --------------------------------------------------------------------------------


async def test_non_stream_shape(sim: SimProvider, client: AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-sim", messages=MESSAGES)
    assert raw.headers["x-sim-name"] == "alpha"
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-sim"
    assert completion.created > 0
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    content = choice.message.content or ""
    assert len(content.split()) == 10 and content.endswith(".")
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 10
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    again = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert again.choices[0].message.content == content  # deterministic for (seed, messages)
    other = await client.chat.completions.create(
        model="gpt-sim", messages=[{"role": "user", "content": "something else"}]
    )
    assert other.choices[0].message.content != content


async def test_max_tokens_gives_length(client: AsyncOpenAI) -> None:
    by_old_name = await client.chat.completions.create(
        model="gpt-sim", messages=MESSAGES, max_tokens=3
    )
    by_new_name = await client.chat.completions.create(
        model="gpt-sim", messages=MESSAGES, max_completion_tokens=3
    )
    for completion in (by_old_name, by_new_name):
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_stream_shape_with_usage(client: AsyncOpenAI) -> None:
    full = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-sim", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-sim" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, finish, usage = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks[1:-2])
    assert text == full.choices[0].message.content
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_raw_events(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["x-sim-name"] == "alpha"
        events = await read_events(resp)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) == 1 + 10 + 1  # role, one per token, finish; no usage chunk
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)
    assert sim.stats.streams_completed == 1


async def test_stream_is_paced(http: aiohttp.ClientSession) -> None:
    config = SimConfig(name="paced", ttft=0.05, tokens_per_second=100, default_completion_tokens=10)
    async with SimProvider(config) as sim:
        start = time.monotonic()
        async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
            first = await resp.content.readuntil(b"\n\n")
            first_at = time.monotonic() - start
            await resp.read()
        total = time.monotonic() - start
    assert b'"role":"assistant"' in first
    assert 0.04 <= first_at < 0.5
    assert total >= 0.05 + 0.08  # ttft + 9 token intervals of 10 ms


async def test_bad_requests(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/chat/completions"
    cases: list[tuple[bytes, str | None]] = [
        (b"{not json", None),
        (b"[]", None),
        (orjson.dumps({"messages": MESSAGES}), "model"),
        (orjson.dumps({"model": "m"}), "messages"),
        (orjson.dumps({"model": "m", "messages": []}), "messages"),
        (orjson.dumps(chat_body(n=2)), "n"),
        (orjson.dumps(chat_body(max_tokens=0)), "max_tokens"),
    ]
    for body, param in cases:
        async with http.post(url, data=body) as resp:
            assert resp.status == 400, body
            error = (await resp.json())["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "invalid_request_error" and error["message"]
            assert error["param"] == param
    assert sim.stats.outcomes["bad_request"] == len(cases)


async def test_sdk_bad_request(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, n=2)
    assert info.value.status_code == 400


async def test_models_health_stats(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200
    async with http.get(sim.url + "/models") as resp:
        assert resp.headers["x-sim-name"] == "alpha"
        models = await resp.json()
    assert models == {
        "object": "list",
        "data": [{"id": "gpt-sim", "object": "model", "created": 0, "owned_by": "alpha"}],
    }
    async with http.get(sim.base_url + "/health") as resp:
        assert resp.status == 200 and await resp.text() == "ok"
        assert resp.headers["x-sim-name"] == "alpha"
    async with http.get(sim.base_url + "/nope") as resp:
        assert resp.status == 404 and resp.headers["x-sim-name"] == "alpha"
    async with http.get(sim.base_url + "/_sim/stats") as resp:
        stats = (await resp.json())["stats"]
    assert stats["requests_total"] == 1 and stats["outcomes"] == {"ok": 1}


async def test_api_key_required(http: aiohttp.ClientSession) -> None:
    async with SimProvider(
        SimConfig(name="auth", ttft=0, tokens_per_second=0, require_api_key="sk-good")
    ) as sim:
        bad = AsyncOpenAI(base_url=sim.url, api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.code == "invalid_api_key"
        await bad.close()
        good = AsyncOpenAI(base_url=sim.url, api_key="sk-good", max_retries=0)
        assert (await good.chat.completions.create(model="m", messages=MESSAGES)).choices
        await good.close()
        headers = {"api-key": "sk-good"}
        async with http.post(sim.url + "/chat/completions", json=chat_body(), headers=headers) as r:
            assert r.status == 200
        async with http.get(sim.url + "/models") as resp:
            assert resp.status == 401
        assert sim.stats.outcomes["unauthorized"] == 1


# -- faults -------------------------------------------------------------------------------------


async def test_status_faults(sim: SimProvider, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="status", status=503))
    with pytest.raises(openai.InternalServerError) as server_error:
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert server_error.value.status_code == 503
    assert server_error.value.response.headers["x-sim-name"] == "alpha"
    assert "retry-after" not in server_error.value.response.headers

    sim.set_fault(Fault(mode="status", status=429, retry_after=2, error_code="insufficient_quota"))
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, stream=True)
    assert limited.value.code == "insufficient_quota"
    assert limited.value.type == "insufficient_quota"
    assert limited.value.response.headers["retry-after"] == "2"

    sim.set_fault(Fault(mode="status", status=529))
    with pytest.raises(openai.APIStatusError) as overloaded:
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert overloaded.value.status_code == 529
    assert overloaded.value.type == "overloaded_error"

    sim.set_fault(Fault(mode="status", status=400, error_code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert too_long.value.code == "context_length_exceeded"
    assert too_long.value.param == "messages"
    assert sim.stats.outcomes["status"] == 4


async def test_refuse_then_heal_on_same_port(
    sim: SimProvider, client: AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    port = sim.port
    # A pooled keep-alive connection must not survive the refuse fault.
    async with http.get(sim.base_url + "/health") as resp:
        assert resp.status == 200
    sim.set_fault(Fault(mode="refuse"))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(sim.base_url + "/health"):
            pass
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

    sim.clear_fault()
    assert sim.port == port
    completion = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert completion.choices[0].finish_reason == "stop"


async def test_refuse_before_start() -> None:
    provider = SimProvider(SimConfig(name="down"))
    provider.set_fault(Fault(mode="refuse"))
    port = await provider.start()
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        provider.clear_fault()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    finally:
        await provider.stop()


async def test_reset(sim: SimProvider, client: AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    sim.set_fault(Fault(mode="reset"))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    with pytest.raises(aiohttp.ClientError):
        async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
            await resp.read()

    # At the socket level no response byte arrives and the connection is reset.
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    body = orjson.dumps(chat_body())
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with pytest.raises(ConnectionResetError):
        data = await reader.read(100)
        assert data == b""  # pragma: no cover - a FIN instead of RST would fail here
    writer.close()
    assert sim.stats.outcomes["reset"] == 3


async def test_hang_times_out_and_releases(sim: SimProvider, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="hang"))
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, timeout=0.3)
    assert time.monotonic() - start < 1.0
    for _ in range(50):  # the abandoned handler is cancelled once the client goes away
        if sim.stats.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.stats.in_flight == 0


async def test_slow_first_token(sim: SimProvider, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="slow_first_token", ttft=0.3))
    start = time.monotonic()
    stream = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, stream=True)
    chunks = stream.__aiter__()
    await chunks.__anext__()
    assert time.monotonic() - start >= 0.3
    rest = [c async for c in chunks]
    assert rest[-1].choices[0].finish_reason == "stop"

    start = time.monotonic()
    completion = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)
    assert time.monotonic() - start >= 0.3
    assert completion.choices[0].finish_reason == "stop"


async def test_cut_stream(sim: SimProvider, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="cut", after_tokens=4))
    stream = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, stream=True)
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 1 + 4  # role chunk + 4 content chunks, no finish chunk
    assert all(c.choices[0].finish_reason is None for c in received)
    assert sim.stats.streams_completed == 0


async def test_cut_raw(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    sim.set_fault(Fault(mode="cut", after_tokens=2))
    async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
        seen = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                seen += line
    assert seen.count(b"data: ") == 3 and b"[DONE]" not in seen

    async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200 and resp.content_length is not None
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_cut_non_stream_sdk(sim: SimProvider, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="cut"))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-sim", messages=MESSAGES)


async def test_stall(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    sim.set_fault(Fault(mode="stall", after_tokens=3))
    async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
        events = [await resp.content.readuntil(b"\n\n") for _ in range(4)]
        assert b'"content":""' in events[0]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 0.2)
        assert resp.connection is not None and not resp.closed  # still open, just silent
    assert sim.stats.outcomes["stall"] == 1


async def test_malformed(
    sim: SimProvider, http: aiohttp.ClientSession, client: AsyncOpenAI
) -> None:
    sim.set_fault(Fault(mode="malformed", after_tokens=2))
    async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
        events = await read_events(resp)
    assert events[-1] == b"[DONE]"
    bad = [i for i, e in enumerate(events[:-1]) if not _is_json(e)]
    assert bad == [3]  # after the role chunk and two content chunks
    assert orjson.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert len(events) == 1 + 10 + 1 + 1 + 1

    with pytest.raises(ValueError):  # the SDK cannot decode the broken event
        stream = await client.chat.completions.create(
            model="gpt-sim", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            pass

    async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200
        assert not _is_json(await resp.read())


async def test_no_done(sim: SimProvider, http: aiohttp.ClientSession, client: AsyncOpenAI) -> None:
    sim.set_fault(Fault(mode="no_done"))
    async with http.post(sim.url + "/chat/completions", json=chat_body(stream=True)) as resp:
        events = await read_events(resp)  # the body ends cleanly
    assert b"[DONE]" not in events
    assert orjson.loads(events[-1])["choices"][0]["finish_reason"] == "stop"

    stream = await client.chat.completions.create(model="gpt-sim", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_rate_is_deterministic(http: aiohttp.ClientSession) -> None:
    async def pattern(sim: SimProvider) -> list[int]:
        sim.set_fault(Fault(mode="status", status=500, rate=0.5))
        statuses = []
        for _ in range(24):
            async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
                statuses.append(resp.status)
        return statuses

    config = SimConfig(name="r", ttft=0, tokens_per_second=0, seed=42)
    async with SimProvider(config) as one, SimProvider(config) as two:
        first = await pattern(one)
        assert await pattern(one) == first  # set_fault re-seeds
        assert await pattern(two) == first  # same seed, same choices
        assert 0 < first.count(500) < 24 and set(first) == {200, 500}
        async with SimProvider(SimConfig(name="r2", ttft=0, tokens_per_second=0, seed=43)) as other:
            assert await pattern(other) != first


async def test_count_reverts(sim: SimProvider, http: aiohttp.ClientSession) -> None:
    sim.set_fault(Fault(mode="status", status=502, count=2))
    statuses = []
    for _ in range(4):
        async with http.post(sim.url + "/chat/completions", json=chat_body()) as resp:
            statuses.append(resp.status)
        if len(statuses) == 1:
            assert sim.fault.count == 1  # hits left
    assert statuses == [502, 502, 200, 200]
    assert sim.fault == Fault()


async def test_stop_releases_hanging_and_stalled(http: aiohttp.ClientSession) -> None:
    sim = SimProvider(SimConfig(name="s", ttft=0, tokens_per_second=0))
    await sim.start()

    async def call(stream: bool) -> int:
        async with http.post(sim.url + "/chat/completions", json=chat_body(stream=stream)) as r:
            await r.read()
            return r.status

    sim.set_fault(Fault(mode="hang"))
    hanging = asyncio.create_task(call(False))
    await asyncio.sleep(0.05)
    sim.set_fault(Fault(mode="stall", after_tokens=1))
    stalled = asyncio.create_task(call(True))
    sim.set_fault(Fault(mode="slow_first_token", ttft=30))
    slow = asyncio.create_task(call(True))
    await asyncio.sleep(0.1)
    assert sim.stats.in_flight == 3

    start = time.monotonic()
    await sim.stop()
    assert time.monotonic() - start < 1.0
    for task in (hanging, stalled, slow):
        with pytest.raises(aiohttp.ClientError):
            await task
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []
    assert sim.stats.in_flight == 0


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
