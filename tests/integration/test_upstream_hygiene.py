"""What the proxy sends upstream: its own key, never the client's headers, never a cookie an
upstream set for an earlier request (possibly another tenant's)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from harness import LoopThread

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


class RecordingUpstream:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def chat(request: web.Request) -> web.Response:
            self.seen.append(dict(request.headers))
            response = web.json_response(COMPLETION)
            response.set_cookie("session", f"secret-{len(self.seen)}")
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        # A host name, not an IP: aiohttp's default cookie jar ignores cookies from IP hosts,
        # so only a name shows whether the proxy would store and replay them.
        site = web.TCPSite(self.runner, "localhost", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def test_no_cookie_and_no_client_header_reaches_the_upstream(loop_thread: LoopThread) -> None:
    import httpx

    upstream = RecordingUpstream()
    loop_thread.run(upstream.start())
    policy = load_policy_text(
        "version: 1\nproviders:\n  p:\n    kind: openai\n    api_key: sk-provider\n"
        f"    regions: {{r: {{base_url: 'http://localhost:{upstream.port}/v1'}}}}\n"
        "    models: {m: {}}\nroutes:\n  m: {chain: [p/r/m]}\n",
        "t.yaml",
        {},
    )
    proxy = ProxyServer(policy, port=0)
    loop_thread.run(proxy.start())
    try:
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            response = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": "Bearer sk-client", "Cookie": "app=1", "X-Custom": "y"},
            )
            assert response.status_code == 200
            assert "set-cookie" not in response.headers  # upstream headers are not relayed
    finally:
        loop_thread.run(proxy.stop())
        loop_thread.run(upstream.stop())
    assert len(upstream.seen) == 3
    for headers in upstream.seen:
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["authorization"] == "Bearer sk-provider"
        assert "cookie" not in lower
        assert "x-custom" not in lower
