"""Stream relay micro-benchmark: per-chunk cost of checking an OpenAI-wire SSE stream.

Run: .venv/bin/python bench/relay_bench.py   (figures go to docs/benchmarks.md, "Stream relay")

Not a test. Compares, on the same bytes, the former Python path (Rust ``SseParser.feed`` per
chunk, then ``orjson.loads`` + checks + ``encode_sse`` per event in Python; a copy of the old
``UpstreamStream._check`` is kept below) against the Rust ``ChatStreamScanner`` (one call per
chunk), alone and with the Python fold into ``StreamProgress`` that ``UpstreamStream`` does.
Prints the median (and best) of several runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

from edgeproxy._core import ChatStreamScanner, SseEvent, SseParser, encode_sse
from edgeproxy.server.upstream_stream import (
    DONE,
    StreamOptions,
    StreamProgress,
    UpstreamStream,
    add_usage,
)

RUNS = 9
_SUBSTANCE = ("content", "tool_calls", "function_call", "refusal", "reasoning_content")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "café",
    "owners",
    "count",
    "their",
    "beans",
]


class LegacyCheck:
    """The former per-event Python check (``UpstreamStream._check`` before the Rust scanner)."""

    def __init__(self, options: StreamOptions | None = None) -> None:
        self.parser = SseParser()
        self.progress = StreamProgress()
        self.options = options or StreamOptions()

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._check(event) for event in self.parser.feed(chunk))

    def _check(self, event: SseEvent) -> bytes:
        progress = self.progress
        if progress.done:
            return b""
        if event.data == DONE:
            progress.done = progress.started = True
            return encode_sse(DONE)
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise ValueError("upstream sent an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise ValueError("upstream sent an event that is not an object")
        if "error" in chunk:
            raise ValueError(event.data)
        substance = False
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                if choice.get("index", 0) != 0:
                    progress.multiple_choices = True
                if choice.get("finish_reason"):
                    progress.finished = progress.started = substance = True
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    if any(delta.get(k) for k in _SUBSTANCE):
                        progress.started = substance = True
                    if delta.get("tool_calls") or delta.get("function_call"):
                        progress.tool_calls = True
                    content = delta.get("content")
                    if isinstance(content, str) and content and choice.get("index", 0) == 0:
                        progress.text.append(content)
        usage = chunk.get("usage")
        rewrite = self.options.continues is not None
        if isinstance(usage, dict) and usage:
            progress.started = True
            progress.usage = usage
            if self.options.prior_usage:
                chunk["usage"] = add_usage(usage, self.options.prior_usage)
                rewrite = True
        if progress.model is None and isinstance(chunk.get("model"), str):
            progress.model = chunk["model"]
        if progress.id is None and isinstance(chunk.get("id"), str):
            progress.id = chunk["id"]
        progress.events += 1
        if not rewrite:
            return encode_sse(event.data)
        original = self.options.continues
        if original is not None:
            if not (substance or usage):
                return b""
            if original.id is not None:
                chunk["id"] = original.id
        return encode_sse(orjson.dumps(chunk).decode())


def event(i: int, tokens: int = 20) -> bytes:
    """One chunk as OpenAI sends it with ``include_usage``: ~``tokens`` words of content."""
    content = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(tokens)) + " "
    obj = {
        "id": "chatcmpl-8xYz1234567890abcdefghijklm",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
        "choices": [
            {"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream(n: int, tokens: int = 20) -> list[bytes]:
    return [event(i, tokens) for i in range(n)]


def _no_response() -> Any:
    return cast(Any, None)


def per_chunk_us(make: Callable[[], Callable[[bytes], object]], chunks: list[bytes]) -> list[float]:
    """Microseconds per chunk of feeding ``chunks`` to a fresh consumer, one value per run."""
    runs = []
    for _ in range(RUNS):
        feed = make()
        feed(chunks[0])  # warm-up (first-use costs), not timed
        start = time.perf_counter_ns()
        for chunk in chunks:
            feed(chunk)
        runs.append((time.perf_counter_ns() - start) / len(chunks) / 1000)
    return runs


def paths(options: StreamOptions | None) -> dict[str, Callable[[], Callable[[bytes], object]]]:
    opts = options or StreamOptions()
    continues = opts.continues

    def scanner() -> Callable[[bytes], object]:
        prior = opts.prior_usage
        return ChatStreamScanner(
            continuation=continues is not None,
            continuation_id=continues.id if continues is not None else None,
            prior_usage=(prior.get("prompt_tokens", 0), prior.get("completion_tokens", 0))
            if prior
            else None,
        ).feed

    def relay() -> Callable[[bytes], object]:
        up = UpstreamStream(_no_response(), opts)
        return lambda chunk: up._check(up.scanner.feed(chunk))

    return {
        "old: SseParser + Python per event": lambda: LegacyCheck(opts).feed,
        "new: ChatStreamScanner.feed": scanner,
        "new: feed + UpstreamStream fold": relay,
    }


def main() -> None:
    small = stream(500)
    big = b""
    while len(big) < 100 * 1024:
        big += event(len(big))
    cont = StreamOptions(
        continues=StreamProgress(id="chatcmpl-first"),
        prior_usage={"prompt_tokens": 10, "completion_tokens": 5},
    )
    print(f"event size {len(small[0])} B; 100 KB chunk = {len(big)} B")
    print(f"{'case':<44} {'path':<36} {'median us':>10} {'best us':>9} {'speed-up':>8}")
    cases = [
        ("500 chunks, 1 event (~20 tokens) each", small, None),
        ("one 100 KB chunk (~250 events)", [big] * 20, None),
        ("500 chunks, continuation (id rewrite)", small, cont),
    ]
    for name, chunks, options in cases:
        base = None
        for path, make in paths(options).items():
            runs = per_chunk_us(make, chunks)
            med = statistics.median(runs)
            base = base or med
            print(f"{name:<44} {path:<36} {med:>10.2f} {min(runs):>9.2f} {base / med:>7.1f}x")

    # Parse throughput on 1 MiB fed in 16 KiB network chunks.
    data = b"".join(stream(4800))[: 1024 * 1024]
    data = data[: data.rindex(b"\n\n") + 2]
    pieces = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    mb = len(data) / 1e6
    feeders: list[tuple[str, Callable[[], Callable[[bytes], object]]]] = [
        ("SseParser.feed (SSE only)", lambda: SseParser().feed),
        ("ChatStreamScanner.feed (SSE + JSON + out)", lambda: ChatStreamScanner().feed),
        ("old path (SseParser + Python per event)", lambda: LegacyCheck().feed),
    ]
    for label, make in feeders:
        runs = []
        for _ in range(RUNS):
            feed = make()
            start = time.perf_counter()
            for piece in pieces:
                feed(piece)
            runs.append(mb / (time.perf_counter() - start))
        print(f"throughput {label:<44} {statistics.median(runs):>8.0f} MB/s (best {max(runs):.0f})")


if __name__ == "__main__":
    main()
