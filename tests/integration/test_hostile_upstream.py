"""What a hostile or careless upstream (or a client that stops reading) cannot do to the proxy:
exhaust its memory with an endless stream, stall its event loop counting one, hold a stream open
with keep-alives, outlive the request's deadline, end an answer over one stray bad event, or make
it fail a request over a malformed ``usage`` or ``choices``."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgeproxy import tokens
from edgeproxy.server.upstream_stream import MAX_SKIPPED_EVENTS
from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.process import Telemetry
from harness import LoopThread, Stack

MESSAGES = [{"role": "user", "content": "Write something long."}]

# ---- a tiny upstream that misbehaves on purpose -------------------------------------------------

# One content event of the endless stream: 8 KiB of words (the text is the same each time, so
# the test knows the whole answer without keeping it).
PIECE = "lorem ipsum dolor sit amet " * 303
EVENT = b"data: " + orjson.dumps({"id": "chatcmpl-h", "choices": [{"index": 0, "delta": {"content": PIECE}}]}) + b"\n\n"  # fmt: skip
ROLE = b'data: {"id":"chatcmpl-h","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
FINISH = b'data: {"id":"chatcmpl-h","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"
BAD_EVENT = b'data: {"choices": [ broken\n\n'
ANSWER = {
    "id": "chatcmpl-h",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
}


class Upstream:
    """An OpenAI-wire upstream whose behaviour the test sets (``stream_events``: bytes to
    write, or seconds to pause; ``answer``)."""

    def __init__(self) -> None:
        self.stream_events: Callable[[], Iterator[bytes | float]] = lambda: iter(
            (ROLE, FINISH, DONE)
        )
        self.answer: dict[str, Any] = ANSWER
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def chat(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            body = await request.json()
            if not body.get("stream"):
                return web.Response(body=orjson.dumps(self.answer), content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for event in self.stream_events():
                if isinstance(event, float):
                    await asyncio.sleep(event)  # the events before arrive in a read of their own
                else:
                    await response.write(event)
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[Upstream]:
    up = Upstream()
    loop_thread.run(up.start())
    yield up
    loop_thread.run(up.stop())


# The hostile upstream first ($hostile, substituted by hand), a healthy simulator behind it.
POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 3s, response: 5s, total: 30s}
providers:
  hostile:
    kind: openai
    regions: {r: {base_url: "HOSTILE"}}
    models: {m: {}}
  sim:
    kind: openai
    regions: {r: {base_url: "$fallback"}}
    models: {m-fallback: {assistant_prefill: true}}
routes:
  m:
    chain: [hostile/r/m, sim/r/m-fallback]
    on_midstream_failure: resume
    cache: {cacheable: all}
"""


def _stack(make_stack: Callable[..., Stack], upstream: Upstream, **overrides: str) -> Stack:
    policy = POLICY.replace("HOSTILE", upstream.url)
    for old, new in overrides.items():
        policy = policy.replace(old, new)
    fallback = SimConfig(name="fallback", ttft=0.0, tokens_per_second=0)
    return make_stack(policy, [fallback])


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds}s"
        time.sleep(0.05)


# ---- an endless stream ----------------------------------------------------------------------


def test_an_endless_stream_keeps_memory_bounded_and_counts_off_the_loop(
    make_stack: Callable[..., Stack], upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 MB of answer with no usage from the upstream, on a route that caches and may resume:
    the proxy's traced memory stays a fraction of the stream (nothing keeps the whole answer:
    not the resume text, the cache recording or the shared broadcast), its token count runs in
    worker threads piece by piece (only a short tail on the loop) and is still exact."""
    events = 5000
    upstream.stream_events = lambda: iter((ROLE, *([EVENT] * events), FINISH, DONE))
    stack = _stack(make_stack, upstream)
    counted: list[tuple[str, int]] = []
    real = tokens.count_tokens

    def recording(text: str, encoding: str = "cl100k_base") -> int:
        counted.append((threading.current_thread().name, len(text)))
        return real(text, encoding)

    monkeypatch.setattr(tokens, "count_tokens", recording)
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    received, tail = 0, b""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with stack.http.stream("POST", "/v1/chat/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += len(chunk)
                tail = (tail + chunk)[-4096:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received > events * len(EVENT)  # the whole answer reached the client
    # The cache's recording and the followers' broadcast stop at 8 MiB each; the rest is per chunk.
    assert peak < 24 * 1024 * 1024, f"traced peak {peak / 2**20:.1f} MiB for a 40 MB stream"
    usage_line = next(line for line in tail.split(b"\n\n") if b'"usage"' in line)
    usage = orjson.loads(usage_line.removeprefix(b"data: "))["usage"]
    assert usage["completion_tokens"] == real(PIECE * events, "cl100k_base")  # exact, in pieces
    on_loop = [n for thread, n in counted if thread == "servers"]
    in_workers = [n for thread, n in counted if thread != "servers"]
    # All but the last piece (under 64 Ki characters) counted in worker threads, a read at a time.
    assert sum(in_workers) > len(PIECE) * events - tokens.OFF_LOOP_BYTES
    assert all(n < tokens.OFF_LOOP_BYTES for n in on_loop)  # at most a short tail inline
    # Too long to record: the answer was not cached.
    stats = stack.proxy.state.cache.stats()
    assert stats["entries"] == 0


# ---- a client that stops reading ------------------------------------------------------------------


def test_a_client_that_stops_reading_is_dropped_at_the_deadline(
    make_stack: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    """A raw client with a tiny receive buffer asks for a long stream and never reads. Once
    ``timeouts.total`` (2 s) has passed, the proxy has dropped it: its concurrency slot is free,
    the upstream connection closed, and the request logged as a client-side timeout."""
    caplog.set_level(logging.INFO, logger="edgeproxy.access")
    policy = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 5s, response: 5s, total: 2s}
providers:
  p:
    kind: openai
    regions: {r: {base_url: "$long"}}
    models: {m: {}}
routes:
  m: {chain: [p/r/m]}
"""
    # ~40 MB of stream, unpaced: far more than the socket buffers between them hold.
    sim = SimConfig(name="long", ttft=0.0, tokens_per_second=0, default_completion_tokens=200_000)
    stack = make_stack(policy, [sim])
    body = orjson.dumps({"model": "m", "messages": MESSAGES, "stream": True})
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        client.connect(("127.0.0.1", stack.proxy.port))
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _wait_until(lambda: stack.stats("long")["in_flight"] == 1, 5, "the stream started")
        inflight = lambda: stack.http.get("/admin/status").json()["inflight"]  # noqa: E731
        assert inflight() == 1
        # Bounded waits: the deadline (2 s) plus slack for a loaded machine.
        _wait_until(lambda: inflight() == 0, 10, "the proxy freed the slot")
        _wait_until(lambda: stack.stats("long")["in_flight"] == 0, 10, "the upstream was closed")
    finally:
        client.close()
    assert stack.stats("long")["streams_completed"] == 0
    outcomes = [getattr(r, "outcome", None) for r in caplog.records if r.getMessage() == "request"]
    assert outcomes == ["client_timeout"]


# ---- keep-alives are not content ----------------------------------------------------------------


KEEPALIVE_POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 1s, response: 5s, total: 20s}
providers:
  alpha:
    kind: openai
    regions: {r: {base_url: "$alpha"}}
    models: {m: {}}
  claude:
    kind: anthropic
    regions: {r: {base_url: "$claude"}}
    models: {c: {}}
routes:
  m: {chain: [alpha/r/m]}
  c: {chain: [claude/r/c]}
"""


@pytest.mark.parametrize("model", ["m", "c"], ids=["openai-wire comments", "anthropic-wire pings"])
def test_keepalives_alone_do_not_hold_a_stream_past_the_idle_timeout(
    make_stack: Callable[..., Stack], model: str
) -> None:
    """After three tokens the upstream sends nothing but keep-alives (SSE comments; Anthropic
    ``ping`` events) every 50 ms: the stream fails at ``timeouts.idle`` (1 s) with
    ``idle_timeout``, not at the 20 s deadline."""
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=200) for n in ("alpha", "claude")]
    stack = make_stack(KEEPALIVE_POLICY, sims)
    for sim in ("alpha", "claude"):
        stack.fault(sim, mode="keepalive_only", after_tokens=3)
    with pytest.raises(openai.APIError) as info:
        for _ in stack.client(timeout=15).chat.completions.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ):
            pass
    assert "idle_timeout" in str(info.value) and "incomplete" in str(info.value)


# ---- a stray malformed event -----------------------------------------------------------------


def _text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_one_malformed_event_after_the_first_byte_is_skipped(
    make_stack: Callable[..., Stack],
) -> None:
    """The simulator's ``malformed`` fault puts one bad event mid-stream: the answer still
    completes (the same text as without the fault) through both ingresses, the wire says an
    event was skipped, and the answer is not cached (something of it may be missing)."""
    policy = """
version: 1
providers:
  alpha:
    kind: openai
    regions: {r: {base_url: "$alpha"}}
    models: {m: {}}
routes:
  m: {chain: [alpha/r/m], cache: {cacheable: all}}
"""
    stack = make_stack(policy, [SimConfig(name="alpha", ttft=0.0, tokens_per_second=200)])
    client = stack.client()
    whole = _text(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    other = [{"role": "user", "content": "Another question."}]
    stack.fault("alpha", mode="malformed", after_tokens=3)
    assert _text(client.chat.completions.create(model="m", messages=MESSAGES, stream=True)) == whole  # type: ignore[arg-type]
    stack.fault("alpha", mode="malformed", after_tokens=3)
    raw = stack.http.post(
        "/v1/chat/completions", json={"model": "m", "messages": other, "stream": True}
    )
    assert ": edgeproxy skipped a malformed event" in raw.text and raw.text.endswith(
        "data: [DONE]\n\n"
    )
    stack.fault("alpha", mode="malformed", after_tokens=3)
    messages = anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="x", max_retries=0, timeout=10
    ).messages
    with messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "Hi."}]
    ) as s:
        assert s.get_final_message().stop_reason == "end_turn"
    # Not stored: the same request goes upstream again.
    before = stack.requests_to("alpha")
    stack.http.post("/v1/chat/completions", json={"model": "m", "messages": other, "stream": True})
    assert stack.requests_to("alpha") == before + 1


def test_more_malformed_events_than_allowed_end_the_stream(
    make_stack: Callable[..., Stack], upstream: Upstream
) -> None:
    """A stream that keeps sending garbage is broken: past MAX_SKIPPED_EVENTS the stream ends
    with the in-band error (here resumed on the fallback, as the route asks)."""
    good = [EVENT] * 3
    upstream.stream_events = lambda: iter(
        (ROLE, *good, 0.2, *([BAD_EVENT] * (MAX_SKIPPED_EVENTS + 1)), *good, FINISH, DONE)
    )
    stack = _stack(
        make_stack, upstream, **{"on_midstream_failure: resume": "on_midstream_failure: error"}
    )
    with pytest.raises(openai.APIError) as info:
        _text(stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert "malformed" in str(info.value)
    upstream.stream_events = lambda: iter(
        (ROLE, *good, 0.2, *([BAD_EVENT] * MAX_SKIPPED_EVENTS), *good, FINISH, DONE)
    )
    text = _text(
        stack.client().chat.completions.create(model="m", messages=other_messages(), stream=True)
    )  # type: ignore[arg-type]
    assert text == PIECE * 6  # as many as allowed: skipped, and nothing else lost


def other_messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Something else."}]


# ---- hostile 200 answers --------------------------------------------------------------------------


def test_a_usage_with_strings_is_served_and_recounted(
    make_stack: Callable[..., Stack], upstream: Upstream
) -> None:
    """``usage`` with strings where counts belong used to be a 500 (Anthropic ingress) or passed
    on as is: the answer is served, with the proxy's own count, on both ingresses, streamed or
    not."""
    bad_usage = {"prompt_tokens": "lots", "completion_tokens": "1", "total_tokens": []}
    upstream.answer = {**ANSWER, "usage": bad_usage}
    usage_event = b"data: " + orjson.dumps({"id": "chatcmpl-h", "choices": [], "usage": bad_usage}) + b"\n\n"  # fmt: skip
    upstream.stream_events = lambda: iter((ROLE, EVENT, 0.1, FINISH, usage_event, DONE))
    stack = _stack(make_stack, upstream)
    completion = stack.client().chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "hello"
    assert completion.usage is not None and completion.usage.completion_tokens == 1  # recounted
    assert completion.usage.prompt_tokens > 0
    assert (
        _text(
            stack.client().chat.completions.create(
                model="m", messages=other_messages(), stream=True
            )
        )
        == PIECE
    )  # type: ignore[arg-type]
    client = anthropic.Anthropic(base_url=stack.proxy.url, api_key="x", max_retries=0, timeout=10)
    message = client.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "Hi."}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "hello"
    assert message.usage.output_tokens == 1
    with client.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "Yo."}]
    ) as s:
        assert s.get_final_message().stop_reason == "end_turn"
    assert upstream.requests == 4  # every one served by the hostile upstream itself


@pytest.mark.parametrize("choices", [["x"], [None], [{"index": 0}, 5]], ids=str)
def test_choices_that_are_not_objects_fail_over(
    make_stack: Callable[..., Stack], upstream: Upstream, choices: list[Any]
) -> None:
    """A 200 whose ``choices`` are not objects is ``malformed``: the next candidate answers."""
    upstream.answer = {**ANSWER, "choices": choices}
    stack = _stack(make_stack, upstream)
    response = stack.http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-edgeproxy-provider"] == "sim"
    assert response.headers["x-edgeproxy-attempts"] == "2"
    assert upstream.requests == 1


def test_the_sdk_sees_a_clean_answer_not_a_500(
    make_stack: Callable[..., Stack], upstream: Upstream
) -> None:
    """The OpenAI SDK over a whole exchange with hostile usage: no exception, numbers in usage."""
    upstream.answer = {**ANSWER, "usage": {"prompt_tokens": 3, "completion_tokens": {"x": 1}}}
    stack = _stack(make_stack, upstream)
    completion = stack.client().chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.usage is not None
    assert isinstance(completion.usage.completion_tokens, int)
    raw = httpx.post(
        f"{stack.base_url}/chat/completions", json={"model": "m", "messages": other_messages()}
    )
    assert raw.status_code == 200 and isinstance(raw.json()["usage"]["completion_tokens"], int)


def test_a_model_name_quoting_a_key_stays_off_the_spans(
    make_stack: Callable[..., Stack], upstream: Upstream
) -> None:
    """The answer's ``model`` goes on the attempt's span (``gen_ai.response.model``): an
    upstream that puts a key there, streamed or not, leaves it on no span."""
    key = "sk-proj-" + "Q" * 40
    upstream.answer = {**ANSWER, "model": f"gpt-x {key}"}
    role = ROLE.replace(
        b'"id":"chatcmpl-h"', b'"id":"chatcmpl-h","model":"gpt-x ' + key.encode() + b'"'
    )
    upstream.stream_events = lambda: iter((role, EVENT, FINISH, DONE))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy = POLICY.replace("HOSTILE", upstream.url)
    fallback = SimConfig(name="fallback", ttft=0.0, tokens_per_second=0)
    stack = make_stack(policy, [fallback], telemetry=Telemetry(tracer_provider=provider))
    client = stack.client()
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    _text(client.chat.completions.create(model="m", messages=other_messages(), stream=True))  # type: ignore[arg-type]
    spans = [s.to_json() for s in exporter.get_finished_spans()]
    models = [s for s in spans if "gen_ai.response.model" in s]
    assert len(models) >= 2 and all(key not in s for s in spans)
