"""Mixed API: what one app fleet sends a sidecar at once, on every endpoint the proxy serves.

Non-stream Chat Completions, the Responses API (non-stream and streamed), Anthropic Messages
(streamed, to the ``claude-sonnet`` route) and embeddings (a batch of 8 texts), at a constant
offered rate, weighted roughly as a chat product with retrieval would call them. Each request
checks its answer's shape, not only the status: a 200 with the wrong body is a failure. Who
served each request is recorded as in the other scenarios.
"""

from __future__ import annotations

import json
from typing import Any

from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests.common import HEADERS, MAX_TOKENS, MODEL, NON_STREAM_BODY, RECORD, USER_RATE

RESPONSES_BODY = json.dumps(
    {"model": MODEL, "input": "Say something short about proxies.", "max_output_tokens": 24}
).encode()
RESPONSES_STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "input": "Say something short about proxies.",
        "max_output_tokens": MAX_TOKENS,
        "stream": True,
    }
).encode()
MESSAGES_BODY = json.dumps(
    {
        "model": "claude-sonnet",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Say something short about proxies."}],
        "stream": True,
    }
).encode()
EMBEDDINGS_BODY = json.dumps(
    {"model": "text-embedding-3-small", "input": [f"passage {i} about proxies" for i in range(8)]}
).encode()
ANTHROPIC_HEADERS = {
    "Content-Type": "application/json",
    "x-api-key": "unused-by-the-proxy",
    "anthropic-version": "2023-06-01",
}


def _answered(body: bytes) -> str | None:
    """Why a non-stream answer is not what its API promises, or None when it is."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(data, dict):
        return "not an object"
    if data.get("object") == "chat.completion":
        return None if data.get("choices") else "no choices"
    if data.get("object") == "response":
        return None if data.get("status") == "completed" else f"status {data.get('status')}"
    if data.get("object") == "list":
        vectors = [d.get("embedding") for d in data.get("data", []) if isinstance(d, dict)]
        return None if len(vectors) == 8 and all(vectors) else "wrong number of vectors"
    return "unknown answer"


class MixedApi(FastHttpUser):
    wait_time = constant_throughput(USER_RATE)

    def _post(
        self,
        path: str,
        body: bytes,
        name: str,
        *,
        headers: dict[str, str] | None = None,
        stream_end: bytes | None = None,
    ) -> None:
        with self.client.post(
            path, data=body, headers=headers or HEADERS, name=name, catch_response=True
        ) as resp:
            ok = resp.status_code == 200
            why = f"HTTP {resp.status_code}"
            if ok:
                content = resp.content or b""
                if stream_end is not None:
                    # The whole stream was read: it must end as its API ends a complete one.
                    why = "stream ended incomplete"
                    ok = stream_end in content and b"error" not in content[-400:]
                else:
                    reason = _answered(content)
                    ok, why = reason is None, reason or ""
            RECORD.served(resp.headers or {}, resp.status_code, ok)
            if not ok:
                resp.failure(why)

    @task(4)
    def chat(self) -> None:
        self._post("/v1/chat/completions", NON_STREAM_BODY, "chat")

    @task(2)
    def responses(self) -> None:
        self._post("/v1/responses", RESPONSES_BODY, "responses")

    @task(2)
    def responses_stream(self) -> None:
        self._post(
            "/v1/responses",
            RESPONSES_STREAM_BODY,
            "responses stream",
            stream_end=b"event: response.completed",
        )

    @task(1)
    def messages_stream(self) -> None:
        self._post(
            "/v1/messages",
            MESSAGES_BODY,
            "messages stream",
            headers=ANTHROPIC_HEADERS,
            stream_end=b"event: message_stop",
        )

    @task(1)
    def embeddings(self) -> None:
        self._post("/v1/embeddings", EMBEDDINGS_BODY, "embeddings")
