"""A Gemini-wire upstream that answers what the test tells it to, in front of a healthy
OpenAI-wire simulator, through the real proxy and the official SDKs: an answer without
``usageMetadata`` (counted and billed by the proxy, never free), no candidate or a
finishReason that is a model failure (fails over), a blocked prompt and a ``SAFETY`` stop
(``content_filter``, an incomplete Responses answer), a stream that ends without its final
chunk (the SDK raises), the key only ever in the ``x-goog-api-key`` header and never echoed
back, and the Anthropic SDK streaming a tool call served by Gemini."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from edgeproxy.sim import SimConfig
from harness import LoopThread, Stack

KEY = "sk-gem-hostile-0123456789abcdef"
HI = [{"role": "user", "content": "Hi"}]


def answer(
    finish: str | None = "STOP", text: str = "Hello there, friend.", **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", **extra}


@dataclass
class GeminiUpstream:
    """``:generateContent`` answers ``answer`` (with ``status``); ``:streamGenerateContent``
    writes ``events`` (each a JSON object, as one SSE event) and ends the body."""

    answer: dict[str, Any] = field(default_factory=answer)
    status: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # URL and headers
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.seen.append((str(request.rel_url), dict(request.headers)))
            await request.read()
            if request.match_info["method"] == "generateContent":
                return web.Response(
                    status=self.status,
                    body=orjson.dumps(self.answer),
                    content_type="application/json",
                )
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for event in self.events:
                await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v1beta/models/{model}:{method}", serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1beta"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  gem:
    kind: gemini
    api_key: KEY
    regions: {main: {base_url: "HOSTILE"}}
    models: {flash: {upstream_name: gemini-2.5-flash, price: {input: 0.3, output: 2.5}}}
  oai:
    kind: openai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {}}
routes:
  gem-first:
    chain: [gem/main/flash, oai/main/gpt]
  gem-only:
    chain: [gem/main/flash]
    on_midstream_failure: error
"""


@pytest.fixture
def gemini(loop_thread: LoopThread) -> Iterator[GeminiUpstream]:
    upstream = GeminiUpstream()
    loop_thread.run(upstream.start())
    yield upstream
    loop_thread.run(upstream.stop())


@pytest.fixture
def stack(make_stack: Callable[..., Stack], gemini: GeminiUpstream) -> Stack:
    policy = POLICY.replace("HOSTILE", gemini.url).replace("KEY", KEY)
    return make_stack(policy, [SimConfig(name="oai", ttft=0.0, tokens_per_second=0)])


def test_an_answer_without_usage_is_counted_and_billed_by_the_proxy(
    stack: Stack, gemini: GeminiUpstream
) -> None:
    gemini.answer = answer()  # no usageMetadata
    raw = stack.client().chat.completions.with_raw_response.create(model="gem-only", messages=HI)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there, friend."
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert float(raw.headers["x-edgeproxy-cost-usd"]) > 0  # never an answer for free
    # A stream whose events carry no usageMetadata either: the proxy's count in the usage chunk.
    gemini.events = [answer(finish=None, text="Hello "), answer(text="again.")]
    chunks = list(
        stack.client().chat.completions.create(
            model="gem-only", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(
    "hostile",
    [
        {},  # no candidate, no block reason
        {"candidates": []},
        {"candidates": "many"},
        answer(finish="MALFORMED_FUNCTION_CALL", text=""),
        answer(finish="MISSING_THOUGHT_SIGNATURE", text=""),
    ],
    ids=["empty", "no-candidates", "not-a-list", "malformed-call", "no-signature"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_no_answer_fails_over(
    stack: Stack, gemini: GeminiUpstream, hostile: dict[str, Any], stream: bool
) -> None:
    gemini.answer, gemini.events = hostile, [hostile]
    client = stack.client()
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="gem-first", messages=HI, stream=True
        ) as raw:
            provider = raw.headers["x-edgeproxy-provider"]
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="gem-first", messages=HI)
        provider, text = raw.headers["x-edgeproxy-provider"], raw.parse().choices[0].message.content
    assert provider == "oai" and text  # the next candidate answered
    assert len(gemini.seen) == 1


@pytest.mark.parametrize(
    "filtered",
    [
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}},
        answer(finish="SAFETY", text=""),
        answer(finish="RECITATION", text="It was the best of times"),
    ],
    ids=["blocked-prompt", "safety", "recitation"],
)
def test_a_filtered_answer_is_content_filter_in_every_wire(
    stack: Stack, gemini: GeminiUpstream, filtered: dict[str, Any]
) -> None:
    gemini.answer, gemini.events = filtered, [filtered]
    client = stack.client()
    chat = client.chat.completions.create(model="gem-only", messages=HI)
    assert chat.choices[0].finish_reason == "content_filter"
    response = client.responses.create(model="gem-only", input="Hi")
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter"
    events = list(client.responses.create(model="gem-only", input="Hi", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "content_filter"  # type: ignore[union-attr]


def test_a_stream_that_ends_without_its_final_chunk_raises_in_the_sdks(
    stack: Stack, gemini: GeminiUpstream
) -> None:
    # Text, then the end of the body with no finishReason: Gemini's stream has no terminator,
    # so only the missing finish says the answer was cut.
    gemini.events = [answer(finish=None, text="Half an ans"), answer(finish=None, text="wer")]
    client = stack.client()
    with pytest.raises(openai.APIError) as chat:
        list(client.chat.completions.create(model="gem-only", messages=HI, stream=True))
    assert "incomplete" in chat.value.message
    seen: list[str] = []
    with (
        pytest.raises(openai.APIError) as responses,
        client.responses.stream(model="gem-only", input="Hi") as stream,
    ):
        seen.extend(event.type for event in stream)
    assert "response.output_text.delta" in seen and "response.completed" not in seen
    assert responses.value.code == "stream_interrupted"


def test_the_key_travels_in_its_header_only_and_is_never_echoed(
    stack: Stack, gemini: GeminiUpstream
) -> None:
    gemini.status = 400
    gemini.answer = {
        "error": {
            "code": 400,
            "message": f"API key not valid. Please pass a valid API key. (got {KEY})",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": KEY}],
        }
    }
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().responses.create(model="gem-only", input="Hi")
    assert "API key not valid" in info.value.message and info.value.request_id
    assert KEY not in str(info.value.body) and KEY not in info.value.response.text
    url, headers = gemini.seen[-1]
    assert KEY not in url and "key=" not in url
    assert headers["x-goog-api-key"] == KEY and "Authorization" not in headers


def test_the_anthropic_sdk_streams_a_tool_call_served_by_gemini(
    stack: Stack, gemini: GeminiUpstream
) -> None:
    call = {"functionCall": {"id": "c9", "name": "get_weather", "args": {"city": "Rome"}}}
    gemini.events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking. "}]}}]},
        {
            "candidates": [{"content": {"role": "model", "parts": [call]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 9},
        },
    ]
    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
    client = anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="sk-client-not-forwarded", max_retries=0, timeout=10
    )
    with client.messages.stream(
        model="gem-only",
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    use = final.content[1]
    assert use.type == "tool_use" and use.id == "c9" and use.input == {"city": "Rome"}
    assert final.usage.output_tokens == 9
