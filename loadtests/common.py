"""What every locust scenario shares: the users, the request bodies, the custom stream metrics, and
a record of what happened (who served, policy versions seen, faults set) written when a run ends.

Users
- ``ChatUser`` (FastHttpUser): non-stream chat completions.
- ``StreamUser`` (HttpUser, because it yields the body as it arrives): streaming chat completions;
  each stream records three custom request events besides the plain HTTP one:
  ``SSE ttft`` (ms from sending the request to the first content event),
  ``SSE tokens_per_s`` (content events per second after the first one; the value sits in the
  response-time columns, so read "ms" as "tokens/s" on that row), and ``SSE stream`` (ms for the
  whole stream, failed when the stream ends without ``[DONE]`` or with an in-band error).

Environment (set by ``loadtests/run.py``): ``EDGEPROXY_LOADTEST_OUT`` (the run's directory, where
``events.json`` is written), ``EDGEPROXY_SIM_CONTROL`` (the simulator's control API),
``EDGEPROXY_POLICY_PATH`` and ``EDGEPROXY_PROXY_PID`` (for the reload scenario), and
``EDGEPROXY_LOADTEST_SECONDS`` (the run time, so fault/reload timelines scale with it).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

MODEL = os.environ.get("EDGEPROXY_LOADTEST_MODEL", "gpt-4o-mini")
MAX_TOKENS = int(os.environ.get("EDGEPROXY_LOADTEST_MAX_TOKENS", "24"))
# Requests per second per user; users x this = the offered rate.
USER_RATE = float(os.environ.get("EDGEPROXY_LOADTEST_USER_RATE", "2"))
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer unused-by-the-proxy"}


def run_seconds(default: float = 60.0) -> float:
    return float(os.environ.get("EDGEPROXY_LOADTEST_SECONDS", default))


def body(*, stream: bool) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say something short about proxies."}],
            "max_tokens": MAX_TOKENS,
            "stream": stream,
        }
    ).encode()


NON_STREAM_BODY = body(stream=False)
STREAM_BODY = body(stream=True)


class Record:
    """Counters written to events.json at the end (thread-safe: locust runs users as greenlets)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.served_by: collections.Counter[str] = collections.Counter()
        self.policy_versions: collections.Counter[str] = collections.Counter()
        self.status: collections.Counter[str] = collections.Counter()
        # per 5-second bucket: {"ok": n, "failed": n, "served": {region: n}}
        self.timeline: dict[int, dict[str, Any]] = {}
        self.marks: list[dict[str, Any]] = []
        # Requests and failures by "type name", from locust's own request events: the summary's
        # counts (locust's CSV is written once a second and leaves out the last second's).
        self.counts: collections.Counter[str] = collections.Counter()

    def counted(self, request_type: str, name: str, failed: bool) -> None:
        with self.lock:
            self.counts[f"{request_type} {name}"] += 1
            if failed:
                self.counts[f"{request_type} {name} failed"] += 1

    def served(self, headers: Any, status: int, ok: bool) -> None:
        where = "{}/{}".format(
            headers.get("x-edgeproxy-provider", "-"), headers.get("x-edgeproxy-region", "-")
        )
        version = headers.get("x-edgeproxy-policy-version", "-")
        bucket = int((time.monotonic() - self.t0) // 5) * 5
        with self.lock:
            self.served_by[where] += 1
            self.policy_versions[version] += 1
            self.status[str(status)] += 1
            slot = self.timeline.setdefault(
                bucket,
                {
                    "ok": 0,
                    "failed": 0,
                    "served": collections.Counter(),
                    "versions": collections.Counter(),
                },
            )
            slot["ok" if ok else "failed"] += 1
            slot["served"][where] += 1
            slot["versions"][version] += 1

    def mark(self, what: str, **detail: Any) -> None:
        with self.lock:
            self.marks.append({"t": round(time.monotonic() - self.t0, 2), "what": what, **detail})

    def dump(self) -> dict[str, Any]:
        with self.lock:
            return {
                "served_by": dict(self.served_by),
                "policy_versions": dict(self.policy_versions),
                "status": dict(self.status),
                "timeline": {
                    str(k): {**v, "served": dict(v["served"]), "versions": dict(v["versions"])}
                    for k, v in sorted(self.timeline.items())
                },
                "marks": self.marks,
                "counts": dict(self.counts),
            }


RECORD = Record()


@events.test_start.add_listener
def _reset(environment: Any, **_: Any) -> None:
    RECORD.t0 = time.monotonic()


@events.request.add_listener
def _count(request_type: str, name: str, exception: Exception | None = None, **_: Any) -> None:
    RECORD.counted(request_type, name, exception is not None)


@events.quitting.add_listener
def _write(environment: Any, **_: Any) -> None:
    out = os.environ.get("EDGEPROXY_LOADTEST_OUT")
    if out:
        Path(out, "events.json").write_text(json.dumps(RECORD.dump(), indent=1))


def fire(environment: Any, name: str, value: float, *, exception: Exception | None = None) -> None:
    environment.events.request.fire(
        request_type="SSE",
        name=name,
        response_time=value,
        response_length=0,
        exception=exception,
        context={},
    )


class StreamFailure(Exception):
    pass


class ChatUser(FastHttpUser):
    """Non-stream chat completions at USER_RATE requests per second per user."""

    abstract = True
    wait_time = constant_throughput(USER_RATE)

    @task
    def chat(self) -> None:
        with self.client.post(
            "/v1/chat/completions",
            data=NON_STREAM_BODY,
            headers=HEADERS,
            name="chat",
            catch_response=True,
        ) as resp:
            ok = resp.status_code == 200
            RECORD.served(resp.headers or {}, resp.status_code, ok)
            if not ok:
                resp.failure(f"HTTP {resp.status_code}")


class StreamUser(HttpUser):
    """Streaming chat completions, with time to first token and tokens per second recorded."""

    abstract = True
    wait_time = constant_throughput(USER_RATE)

    @task
    def chat_stream(self) -> None:
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        done = False
        error: str | None = None
        with self.client.post(
            "/v1/chat/completions",
            data=STREAM_BODY,
            headers=HEADERS,
            name="chat stream (headers)",
            stream=True,
            catch_response=True,
        ) as resp:
            status = resp.status_code
            if status != 200:
                resp.failure(f"HTTP {status}")
                RECORD.served(resp.headers, status, False)
                return
            buf = b""
            try:
                for piece in resp.iter_content(chunk_size=None):
                    buf += piece
                    while b"\n\n" in buf:
                        event, buf = buf.split(b"\n\n", 1)
                        data = event.removeprefix(b"data: ")
                        if data == b"[DONE]":
                            done = True
                            continue
                        if b'"error"' in data[:20]:
                            error = "in-band error event"
                            continue
                        if b'"content":"' in data and b'"content":""' not in data:
                            tokens += 1
                            if first is None:
                                first = time.perf_counter()
            except Exception as exc:  # the connection broke mid-stream
                error = f"{type(exc).__name__}"
            end = time.perf_counter()
            ok = done and error is None
            RECORD.served(resp.headers, status, ok)
            if not ok:
                resp.failure(error or "stream ended without [DONE]")
        env = self.environment
        if first is not None:
            fire(env, "ttft", (first - started) * 1000)
            if tokens > 1 and end > first:
                fire(env, "tokens_per_s", (tokens - 1) / (end - first))
        fire(
            env,
            "stream",
            (end - started) * 1000,
            exception=None if ok else StreamFailure(error or "stream ended without [DONE]"),
        )
