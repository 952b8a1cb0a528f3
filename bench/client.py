"""A minimal blocking HTTP/1.1 keep-alive client for concurrency-1 measurements.

It times each request with ``perf_counter_ns``: time to the first content token of a stream
(the first ``"content":"<non-empty>`` in the body) and time to the complete response. Its own
cost is the same whichever server it talks to, so differences between targets are the targets'.
Requests to different targets are interleaved one by one to cancel out drift on a noisy machine.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

TOKEN = b'"content":"'


@dataclass
class Target:
    name: str
    port: int
    path: str
    headers: dict[str, str]

    def request(self, body: bytes) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(head).encode() + body


class Conn:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.sock = socket.create_connection(("127.0.0.1", target.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def once(self, raw_request: bytes) -> tuple[int, int, int]:
        """(status, ns to first token or -1, ns to the complete response)."""
        sock = self.sock
        t0 = time.perf_counter_ns()
        sock.sendall(raw_request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = -1
        chunked = False
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        first = -1

        def scan(data: bytes) -> None:
            nonlocal first
            if first < 0:
                i = data.find(TOKEN)
                while i >= 0:
                    if data[i + len(TOKEN) : i + len(TOKEN) + 1] not in (b'"', b""):
                        first = time.perf_counter_ns() - t0
                        return
                    i = data.find(TOKEN, i + 1)

        scan(body)
        if chunked:
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-body")
                body += chunk
                scan(body[-len(chunk) - 16 :])
        else:
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-body")
                body += chunk
                scan(body[-len(chunk) - 16 :])
        return status, first, time.perf_counter_ns() - t0


def interleaved(
    targets: list[Target], body: bytes, n: int, bodies: dict[str, bytes] | None = None
) -> dict[str, tuple[list[int], list[int], int]]:
    """n requests per target, one target after another; per target (ttft ns, total ns, errors).
    ``bodies`` overrides ``body`` per target name."""
    conns = {t.name: Conn(t) for t in targets}
    raws = {t.name: t.request((bodies or {}).get(t.name, body)) for t in targets}
    out: dict[str, tuple[list[int], list[int], int]] = {t.name: ([], [], 0) for t in targets}
    try:
        for i in range(n):
            order = targets if i % 2 == 0 else list(reversed(targets))
            for t in order:
                try:
                    status, first, total = conns[t.name].once(raws[t.name])
                except OSError:
                    conns[t.name].close()
                    conns[t.name] = Conn(t)
                    ttfts, totals, errs = out[t.name]
                    out[t.name] = (ttfts, totals, errs + 1)
                    continue
                ttfts, totals, errs = out[t.name]
                if status != 200:
                    out[t.name] = (ttfts, totals, errs + 1)
                    continue
                if first >= 0:
                    ttfts.append(first)
                totals.append(total)
    finally:
        for c in conns.values():
            c.close()
    return out
