"""W3C trace context from a hostile client, through the real proxy to a recording upstream.

A non-ASCII ``tracestate`` used to be forwarded verbatim and the upstream request failed (a 500
with a traceback). Now an invalid ``tracestate`` is dropped, a valid one forwarded, an invalid
``traceparent`` ignored, with tracing off (the proxy passes the app's context through) and on
(the proxy's own span is the upstream's parent)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.telemetry.process import Telemetry
from harness import LoopThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
COMPLETION = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Recording:
    """An upstream that records the trace headers it receives and answers a completion."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def chat(request: web.Request) -> web.Response:
            self.seen.append(
                {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("trace")}
            )
            return web.json_response(COMPLETION)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[Recording]:
    up = Recording()
    loop_thread.run(up.start())
    yield up
    loop_thread.run(up.stop())


def serve(loop_thread: LoopThread, upstream: Recording, telemetry: Telemetry) -> ProxyServer:
    policy = load_policy_text(
        "version: 1\nproviders:\n  p:\n    kind: openai\n"
        f"    regions: {{r: {{base_url: 'http://127.0.0.1:{upstream.port}/v1'}}}}\n"
        "    models: {m: {}}\nroutes:\n  m: {chain: [p/r/m]}\n",
        "t.yaml",
        {},
    )
    proxy = ProxyServer(policy, port=0, telemetry=telemetry)
    loop_thread.run(proxy.start())
    return proxy


HOSTILE: list[dict[str, bytes]] = [
    {"traceparent": TRACEPARENT.encode(), "tracestate": "vendor=café".encode()},
    {"traceparent": TRACEPARENT.encode(), "tracestate": b"vendor=\xff\xfe"},
    {"traceparent": TRACEPARENT.encode(), "tracestate": b"a=1,a=2"},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é".encode()},
    {"traceparent": b"\xff" * 55, "tracestate": b"vendor=x"},
]


@pytest.mark.parametrize("tracing", [False, True], ids=["tracing-off", "tracing-on"])
def test_an_invalid_trace_context_is_dropped_not_a_500(
    loop_thread: LoopThread, upstream: Recording, tracing: bool
) -> None:
    provider = None
    if tracing:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    proxy = serve(loop_thread, upstream, Telemetry(tracer_provider=provider))
    try:
        for headers in HOSTILE:
            response = httpx.post(f"{proxy.url}/v1/chat/completions", json=BODY, headers=headers)
            assert response.status_code == 200, (headers, response.text)
        valid = {"traceparent": TRACEPARENT, "tracestate": "vendor=x,other=y"}
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=BODY, headers=valid)
        assert response.status_code == 200
    finally:
        loop_thread.run(proxy.stop())
    *hostile, good = upstream.seen
    assert len(hostile) == len(HOSTILE)
    for seen in hostile:
        assert all(value.isascii() for value in seen.values()), seen
        assert "tracestate" not in seen  # nothing invalid is forwarded
    for seen in hostile[:3]:  # a valid traceparent with a bad tracestate: the trace goes on
        assert seen["traceparent"].split("-")[1] == TRACE_ID
    assert good["tracestate"] == "vendor=x,other=y"
    assert good["traceparent"].split("-")[1] == TRACE_ID
    if not tracing:
        assert good["traceparent"] == TRACEPARENT  # not a participant: passed through as is
