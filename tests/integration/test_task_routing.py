"""Every request gets a task, and a route may serve each task from its own chain: through the
real proxy, the official SDKs as clients, simulated providers that say who answered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from edgeproxy.sim import SimConfig
from harness import LoopThread, Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 1s, response: 2s, total: 10s}
  default_task: chat
tasks:
  categories: [extraction, qa, chat]
  rules:
    - {name: json-out, task: extraction, response_format: json}
    - {name: cite, task: qa, system_keywords: [cite your sources]}
providers:
  general:
    kind: openai
    regions: {main: {base_url: "$general"}}
    models: {gen: {}}
  specialist:
    kind: openai
    regions: {main: {base_url: "$specialist"}}
    models: {ft: {}}
  claude:
    kind: anthropic
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {}}
routes:
  assistant:
    chain: [general/main/gen, claude/main/sonnet]
    tasks:
      extraction: {chain: [specialist/main/ft, general/main/gen]}
      qa: {chain: [claude/main/sonnet, general/main/gen]}
"""
SIMS = [
    SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("general", "specialist", "claude")
]
HI = [{"role": "user", "content": "Hello there."}]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(POLICY, SIMS)


@pytest.fixture
def access_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "request":
                records.append(record)

    handler = Collect()
    logger = logging.getLogger("edgeproxy.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old)


def _served(raw: Any) -> tuple[str, str]:
    return raw.headers["x-edgeproxy-task"], raw.headers["x-edgeproxy-provider"]


def test_a_rule_picks_the_task_and_the_task_picks_its_chain(
    stack: Stack, access_log: list[logging.LogRecord]
) -> None:
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(
        model="assistant", messages=HI, response_format={"type": "json_object"}
    )
    assert _served(raw) == ("extraction", "specialist")
    raw = client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "system", "content": "Always cite your sources."}, *HI],
    )
    assert _served(raw) == ("qa", "claude")
    raw = client.chat.completions.with_raw_response.create(model="assistant", messages=HI)
    assert _served(raw) == ("chat", "general")  # the route's chain serves the default task
    fields = [(r.task, r.task_source) for r in access_log]  # type: ignore[attr-defined]
    assert fields == [("extraction", "rule"), ("qa", "rule"), ("chat", "default")]


def test_the_app_may_name_the_task_and_the_provider_never_sees_the_name(stack: Stack) -> None:
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(
        model="assistant", messages=HI, extra_headers={"x-edgeproxy-task": "extraction"}
    )
    assert _served(raw) == ("extraction", "specialist")
    raw = client.chat.completions.with_raw_response.create(
        model="assistant", messages=HI, metadata={"task": "qa", "feature": "search"}
    )
    assert _served(raw) == ("qa", "claude")
    # Streams say it too, and fail over within the task's chain.
    stack.fault("specialist", mode="status", status=503)
    with client.chat.completions.with_streaming_response.create(
        model="assistant",
        messages=HI,
        stream=True,
        extra_headers={"x-edgeproxy-task": "extraction"},
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        assert response.headers["x-edgeproxy-task"] == "extraction"
        assert response.headers["x-edgeproxy-provider"] == "general" and text
    assert stack.requests_to("claude") == 1  # the qa request only: never in extraction's chain


def test_an_unknown_task_is_refused_in_each_clients_wire(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="assistant", messages=HI, extra_headers={"x-edgeproxy-task": "poetry"}
        )
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "unknown_task"
    assert "extraction" in error["message"] and info.value.request_id
    claude = anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="unused", max_retries=0, timeout=10
    )
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="assistant",
            max_tokens=16,
            messages=HI,  # type: ignore[arg-type]
            extra_headers={"x-edgeproxy-task": "poetry"},
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert sum(stack.requests_to(s.name) for s in SIMS) == 0


RECORDED = """
version: 1
tasks: {categories: [chat]}
providers:
  general:
    kind: openai
    regions: {main: {base_url: "$recorder"}}
    models: {gen: {}}
routes:
  assistant: {chain: [general/main/gen]}
"""
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "gen",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def test_metadata_task_is_taken_out_of_what_the_provider_gets(
    loop_thread: LoopThread, make_stack: Callable[..., Stack]
) -> None:
    """``metadata.task`` is the proxy's; the rest of ``metadata`` goes on as written."""
    seen: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    loop_thread.run(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop_thread.run(site.start())
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        stack = make_stack(RECORDED.replace("$recorder", url), [])
        body = {"model": "assistant", "messages": HI, "metadata": {"task": "chat", "team": "a"}}
        response = stack.http.post(
            "/v1/chat/completions",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200 and response.headers["x-edgeproxy-task"] == "chat"
        (sent,) = [orjson.loads(b) for b in seen]
        assert sent["metadata"] == {"team": "a"}
    finally:
        loop_thread.run(runner.cleanup())
