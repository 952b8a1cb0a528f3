"""The benchmark's upstream: nginx serving a fixed chat completion and fixed SSE streams.

nginx (Debian's nginx-light) runs in the foreground from a generated nginx.conf in a temporary
directory, one process (``master_process off``), on loopback. It is cheap enough not to be the
bottleneck; the harness proves it by measuring its direct throughput against the proxy's.

Locations (each an OpenAI-compatible base URL, so a policy or LiteLLM can point at it):
- ``/json/v1/chat/completions``: a fixed non-stream answer (Content-Length, keep-alive).
- ``/sse/v1/chat/completions``: a fixed stream of ``SHORT_EVENTS`` content events + finish + [DONE].
- ``/sselong/v1/chat/completions``: the same with ``LONG_EVENTS`` content events.
- ``/slow/v1/chat/completions``: the short stream sent at ``SLOW_RATE`` bytes/s (nginx
  ``limit_rate``): a cheap way to hold 1,000 streams open for ~20 s each.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.procutil import Proc, wait_port

SHORT_EVENTS = 20
LONG_EVENTS = 200
SLOW_RATE = 256  # bytes per second per stream: the short stream lasts ~20 s

COMPLETION_ID = "chatcmpl-bench0000000000000000000000"
WORDS = ["Proxies", " relay", " tokens", " quickly", " and", " keep", " apps", " up", "."]


def chat_json(model: str = "bench-json") -> str:
    return json.dumps(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(WORDS * 2),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 18, "total_tokens": 30},
            "system_fingerprint": "fp_bench",
        },
        separators=(",", ":"),
    )


def sse_stream(events: int, model: str = "bench-sse") -> str:
    def chunk(delta: dict[str, str], finish: str | None) -> str:
        body = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"

    parts = [chunk({"role": "assistant", "content": ""}, None)]
    parts += [chunk({"content": WORDS[i % len(WORDS)]}, None) for i in range(events)]
    parts.append(chunk({}, "stop"))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def _nginx_string(text: str) -> str:
    # Single-quoted nginx string: escape backslashes and single quotes; newlines as \n.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_conf(tmp: Path, port: int) -> str:
    # The JSON answer is short enough for `return`; the streams are files (nginx caps a config
    # string at 4 KiB). The static module refuses POST with 405, so `error_page 405 =200 $uri`
    # re-serves the same URI as a GET of the file: a documented nginx idiom, one internal redirect.
    www = tmp / "www"
    streams = {
        "sse": sse_stream(SHORT_EVENTS),
        "sselong": sse_stream(LONG_EVENTS),
        "slow": sse_stream(SHORT_EVENTS),
    }
    for prefix, text in streams.items():
        path = www / prefix / "v1" / "chat" / "completions"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    locations = [
        f"""
    location = /json/v1/chat/completions {{
      default_type application/json;
      return 200 {_nginx_string(chat_json())};
    }}"""
    ]
    for prefix in streams:
        extra = f"limit_rate {SLOW_RATE};" if prefix == "slow" else ""
        locations.append(
            f"""
    location = /{prefix}/v1/chat/completions {{
      default_type text/event-stream;
      root {www};
      error_page 405 =200 $uri;
      {extra}
    }}"""
        )
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  sendfile on;
  tcp_nodelay on;
  server_tokens off;
  etag off;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    {"".join(locations)}
    # OTLP/HTTP trace sink for the tracing-on proxy: reads and drops the body, answers 200.
    location = /v1/traces {{ return 200; }}
    location / {{ return 404; }}
  }}
}}
"""


def start_nginx(tmp: Path, port: int, nginx: str = "nginx") -> Proc:
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, port))
    proc = Proc("nginx", [nginx, "-p", str(tmp), "-c", str(conf)], tmp / "nginx.out")
    wait_port(port, 10, proc.popen)
    return proc
