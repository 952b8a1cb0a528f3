"""`edgeproxy serve` exports one coherent trace per request to an OTLP/HTTP collector, and
writes its access log lines out before a clean stop.

The collector is a tiny aiohttp server on loopback that decodes the protobuf the real exporter
sends; the proxy is the real CLI process, configured only by the standard OTEL_* variables.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeproxy.sim import SimCluster, SimConfig
from harness import LoopThread

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    def __init__(self) -> None:
        self.spans: list[object] = []
        self.loop = asyncio.new_event_loop()
        self.port = _free_port()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def traces(request: web.Request) -> web.Response:
            export = ExportTraceServiceRequest()
            export.ParseFromString(await request.read())
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()


def test_one_trace_per_request_reaches_the_collector(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    collector = Collector()
    cluster = SimCluster(
        [
            SimConfig(name="a", ttft=0, tokens_per_second=0),
            SimConfig(name="b", ttft=0, tokens_per_second=0),
        ],
        control_port=0,
    )
    loop_thread.run(cluster.start())
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "version: 1\nproviders:\n"
            f"  a: {{kind: openai, regions: {{r: {{base_url: '{cluster.sims['a'].url}'}}}}, models: {{m: {{}}}}}}\n"
            f"  b: {{kind: openai, regions: {{r: {{base_url: '{cluster.sims['b'].url}'}}}}, models: {{m: {{}}}}}}\n"
            "routes:\n  m: {chain: [a/r/m, b/r/m]}\n"
        )
        cluster.sims["a"].set_fault(
            __import__("edgeproxy.sim", fromlist=["Fault"]).Fault(mode="status", status=503)
        )
        port = _free_port()
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_SERVICE_NAME": "edgeproxy-test",
        }
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeproxy.cli",
                "serve",
                "--policy",
                str(policy),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.05)
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(2):
                assert (
                    httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10
                    ).status_code
                    == 200
                )
        finally:
            proxy.send_signal(signal.SIGTERM)  # a clean stop flushes the batch exporter
            output = proxy.communicate(timeout=30)[0]
        assert proxy.returncode == 0, output
    finally:
        loop_thread.run(cluster.stop())
        collector.loop.call_soon_threadsafe(collector.loop.stop)
    spans = collector.spans
    traces: dict[bytes, list[str]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span.name)  # type: ignore[attr-defined]
    assert len(traces) == 2, traces  # one trace per request
    for names in traces.values():
        assert sorted(names) == sorted(
            [
                "POST /v1/chat/completions",
                "chat m",  # a's 503
                "chat m",  # b's answer
            ]
        )
    # The access log (JSON, batched off the loop) was written out by the clean stop: one line
    # per request, none lost.
    access = [orjson.loads(line) for line in output.splitlines() if '"msg":"request"' in line]
    assert [line["status"] for line in access] == [200, 200], output
    assert {line["trace_id"] for line in access} == {t.hex() for t in traces}
