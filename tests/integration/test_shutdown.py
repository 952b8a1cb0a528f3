"""Graceful shutdown: a real ``edgeproxy serve`` process gets SIGTERM while a stream is in flight.

The upstream is a gate: it sends the first chunk of a stream and holds the rest until the test
opens the gate, so every step is ordered by the test (no sleeps, no timing assertions): readiness
fails after SIGTERM, new connections are refused after the drain delay, and the stream that was
started before SIGTERM still completes with ``[DONE]``; then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web

from edgeproxy.clock import FakeClock
from fixtures.reloadkit import wait_until
from harness import THREE_WAY, THREE_WAY_SIMS, LoopThread, Stack

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GatedUpstream:
    """An OpenAI-wire upstream whose streams stop after their first chunk until ``open()``."""

    loop: LoopThread
    runner: web.AppRunner | None = None
    url: str = ""
    streams_started: int = 0
    _gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._gate = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.streams_started += 1
        await response.write(_chunk({"role": "assistant", "content": "Hello"}))
        await self._gate.wait()
        await response.write(_chunk({"content": " after the drain began"}))
        await response.write(_chunk({}, finish="stop"))
        await response.write(b"data: [DONE]\n\n")
        return response

    def open(self) -> None:
        self.loop.loop.call_soon_threadsafe(self._gate.set)

    async def stop(self) -> None:
        self._gate.set()
        if self.runner is not None:
            await self.runner.cleanup()


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-gated",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


POLICY = """
version: 1
defaults:
  timeouts: {connect: 2s, first_token: 30s, idle: 60s, total: 120s}
providers:
  gated:
    kind: openai
    api_key: sk-gated
    regions:
      here: {base_url: "URL"}
    models:
      m: {}
routes:
  m:
    chain: [gated/here/m]
"""


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[GatedUpstream]:
    gated = GatedUpstream(loop_thread)
    loop_thread.run(gated.start())
    yield gated
    loop_thread.run(gated.stop())


class ServeProcess:
    """``edgeproxy serve`` on a free port (``--port 0``; the port is read from its banner)."""

    def __init__(self, policy: Path, *flags: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "edgeproxy.cli", "serve", "--policy", str(policy)]
        argv += ["--port", "0", "--log-format", "text", *flags]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self.port or self.process.poll() is not None, 30, "the banner")
        assert self.port, "".join(self.lines)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def first_chunk_read(url: str) -> Iterator[Iterator[str]]:
    """A stream through the proxy at ``url``, opened and read up to its first event (so the
    request is in flight); yields the rest of its lines."""
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "Hello" in first
        yield lines


def _connection_refused(url: str) -> Callable[[], bool]:
    def refused() -> bool:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
        except httpx.ConnectError:
            return True
        return False

    return refused


def _readyz_status(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.ConnectError:
        return 0


def test_a_stream_started_before_sigterm_completes(tmp_path: Path, upstream: GatedUpstream) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("URL", upstream.url))
    serve = ServeProcess(policy, "--drain-delay", "3", "--drain-timeout", "60")
    try:
        assert httpx.get(f"{serve.url}/readyz", timeout=5).status_code == 200
        with first_chunk_read(serve.url) as lines:
            serve.process.send_signal(signal.SIGTERM)
            # Readiness fails while the listener still takes connections (the drain delay)...
            wait_until(lambda: _readyz_status(serve.url) == 503, 10, "/readyz to answer 503")
            # ...then new connections are refused, while the stream is still held open.
            wait_until(_connection_refused(serve.url), 20, "new connections to be refused")
            assert serve.process.poll() is None and upstream.streams_started == 1
            upstream.open()
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert any("after the drain began" in line for line in rest)
        assert serve.wait() == 0, "".join(serve.lines)
    finally:
        upstream.open()
        serve.kill()
    log = "".join(serve.lines)
    assert "SIGTERM: draining" in log and "edgeproxy: stopped" in log


def test_a_stream_longer_than_the_drain_timeout_is_cut_and_the_process_still_exits(
    tmp_path: Path, upstream: GatedUpstream
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("URL", upstream.url))
    serve = ServeProcess(policy, "--drain-delay", "0", "--drain-timeout", "0.5")
    try:
        with first_chunk_read(serve.url) as lines:
            serve.process.send_signal(signal.SIGTERM)
            rest: list[str] = []
            # The connection may close mid-chunk: cut, as it must be.
            with contextlib.suppress(httpx.RemoteProtocolError):
                rest.extend(line for line in lines if line)
        assert "data: [DONE]" not in rest  # never a cut stream made to look complete
        assert serve.wait() == 0, "".join(serve.lines)
    finally:
        upstream.open()
        serve.kill()


def test_a_second_signal_stops_at_once(tmp_path: Path, upstream: GatedUpstream) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("URL", upstream.url))
    serve = ServeProcess(policy, "--drain-delay", "0", "--drain-timeout", "600")
    try:
        with first_chunk_read(serve.url):
            serve.process.send_signal(signal.SIGINT)
            wait_until(_connection_refused(serve.url), 20, "the listener to close")
            serve.process.send_signal(signal.SIGINT)
            assert serve.wait() == 1, "".join(serve.lines)
    finally:
        upstream.open()
        serve.kill()
    assert "stopping now" in "".join(serve.lines)


def test_drain_fails_readiness_and_closes_connections_before_the_listener(
    make_stack: Callable[..., Stack],
) -> None:
    # In-process, on a fake clock that only moves when told: the drain delay is an instant the
    # test chooses.
    clock = FakeClock(auto_advance=False)
    stack = make_stack(THREE_WAY, THREE_WAY_SIMS, clock=clock)
    assert stack.http.get("/readyz").status_code == 200
    draining = asyncio.run_coroutine_threadsafe(stack.proxy.drain(30.0), stack.loop.loop)
    wait_until(lambda: stack.proxy.draining, 10, "the drain to start")
    ready = stack.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    # Still served during the delay, but the client is told to reconnect for the next request.
    answer = stack.http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200 and answer.headers["connection"] == "close"
    assert answer.headers["server"] == "edgeproxy"
    status = stack.http.get("/admin/status").json()
    assert status["draining"] is True
    stack.loop.loop.call_soon_threadsafe(clock.advance, 30.0)
    draining.result(20)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.proxy.url}/healthz", timeout=2)
