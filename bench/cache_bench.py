"""Prompt-hash cache micro-benchmark: cache key (canonicalise + XXH3-128) and a store lookup.

Run: .venv/bin/python bench/cache_bench.py   (figures go to docs/benchmarks.md, "Prompt-hash cache")

Not a test: it prints the median (and best) of several runs per body size.
"""

from __future__ import annotations

import statistics
import time

import orjson

from edgeproxy._core import CacheStore, cache_key, canonical_request

RUNS = 9
LINE = 'The quick brown fox jumps over the lazy dog; "quoted", caf\u00e9, 42.\n'


def body(size: int) -> bytes:
    """A chat request of about ``size`` bytes: alternating turns of multi-line text."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    raw = b""
    while len(raw) < size:
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": LINE * max(1, min(60, size // 200))})
        raw = orjson.dumps({"model": "chat", "temperature": 0, "messages": messages})
    return raw


def per_call_us(fn: object, loops: int) -> list[float]:
    assert callable(fn)
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter_ns() - start) / loops / 1000)
    return runs


def main() -> None:
    store = CacheStore(64 * 1024 * 1024, 10_000)
    print(f"{'body':>10} {'what':<28} {'median us':>10} {'best us':>9}")
    for size in (1024, 100 * 1024):
        raw = body(size)
        key = cache_key(raw, "chat", "openai", "tenant")
        store.put(key, b"x" * 2048, 300.0, 0.0)
        loops = 20_000 if size < 10_000 else 500
        cases = {
            "canonical_request": lambda raw=raw: canonical_request(raw),
            "cache_key": lambda raw=raw: cache_key(raw, "chat", "openai", "tenant"),
            "cache_key + get (hit)": lambda raw=raw: store.get(
                cache_key(raw, "chat", "openai", "tenant"), 1.0
            ),
        }
        for name, fn in cases.items():
            runs = per_call_us(fn, loops)
            print(f"{len(raw):>9}B {name:<28} {statistics.median(runs):>10.2f} {min(runs):>9.2f}")


if __name__ == "__main__":
    main()
