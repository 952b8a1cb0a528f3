"""Prompt-hash cache micro-benchmark: cache key (canonicalise + XXH3-128) and a store lookup.

Run: .venv/bin/python bench/cache_bench.py   (figures go to docs/benchmarks.md, "Prompt-hash cache")

A/B against another build of the extension (a copy of an older ``_core.abi3.so``), interleaved
round by round so both sides see the same machine load:

    .venv/bin/python bench/cache_bench.py --baseline /tmp/before/_core.abi3.so

Not a test: it prints the median (and best) of several runs per body and case. Time is the
thread's CPU time (``time.thread_time_ns``; ``--wall`` for wall-clock time): on a shared machine a
run that is preempted would otherwise count the other processes' turns.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType

import orjson

from edgeproxy import _core

RUNS = 15
# Escape-dense: a `\n` every ~70 bytes, two `\"` and one non-ASCII character per line.
DENSE_LINE = 'The quick brown fox jumps over the lazy dog; "quoted", caf\u00e9, 42.\n'
# Few escapes: the same prose without quotes or line breaks (one `\n` per turn).
FEW_LINE = "The quick brown fox jumps over the lazy dog, caf\u00e9, 42. "


def body(size: int, line: str = DENSE_LINE, tail: str = "") -> bytes:
    """A chat request of about ``size`` bytes: alternating turns of repeated ``line``."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    raw = b""
    while len(raw) < size:
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": line * max(1, min(60, size // 200)) + tail})
        raw = orjson.dumps({"model": "chat", "temperature": 0, "messages": messages})
    return raw


def per_call_us(fn: Callable[[], object], loops: int, clock: Callable[[], int]) -> float:
    start = clock()
    for _ in range(loops):
        fn()
    return (clock() - start) / loops / 1000


def cases(core: ModuleType, raw: bytes) -> dict[str, Callable[[], object]]:
    store = core.CacheStore(64 * 1024 * 1024, 10_000)
    try:
        core.cache_key(b"{}", "chat", "openai", "tenant", utf8_checked=True)
        checked = True
    except TypeError:  # an older build: no `utf8_checked`
        checked = False

    def proxy_key() -> bytes:
        if checked:
            return core.cache_key(raw, "chat", "openai", "tenant", utf8_checked=True)
        return core.cache_key(raw, "chat", "openai", "tenant")

    store.put(core.cache_key(raw, "chat", "openai", "tenant"), b"x" * 2048, 300.0, 0.0)
    return {
        "canonical_request": lambda: core.canonical_request(raw),
        "cache_key": lambda: core.cache_key(raw, "chat", "openai", "tenant"),
        "cache_key + get (hit)": lambda: store.get(
            core.cache_key(raw, "chat", "openai", "tenant"), 1.0
        ),
        # What the proxy calls (orjson has decoded the body, so UTF-8 is not checked again);
        # an older build without `utf8_checked` runs the plain call here.
        "proxy key + get (hit)": lambda: store.get(proxy_key(), 1.0),
    }


def load_baseline(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline._core", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="path of another _core.abi3.so to compare with")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--wall", action="store_true", help="wall-clock time, not CPU time")
    args = parser.parse_args()
    clock = time.perf_counter_ns if args.wall else time.thread_time_ns
    builds = {"this build": _core}
    if args.baseline:
        builds = {"baseline": load_baseline(args.baseline), **builds}
    bodies = {
        "1 KB": body(1024),
        "100 KB few escapes": body(100 * 1024, FEW_LINE, "\n"),
        "100 KB escape-dense": body(100 * 1024),
    }
    print(f"clock: {'wall' if args.wall else 'thread CPU'}, {args.runs} runs")
    print(f"{'body':<20} {'bytes':>7} {'what':<22} {'build':<11} {'median us':>10} {'best us':>8}")
    for label, raw in bodies.items():
        loops = 5_000 if len(raw) < 10_000 else 200
        per_build = {name: cases(core, raw) for name, core in builds.items()}
        # Same answers from every build (keys may only change with KEY_DOMAIN).
        keys = {name: c["cache_key"]() for name, c in per_build.items()}
        if len(set(keys.values())) != 1:
            print(f"note: keys differ between builds for {label}")
        for what in per_build["this build"]:
            runs: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(args.runs):  # interleaved: each round runs every build once
                for name in builds:
                    runs[name].append(per_call_us(per_build[name][what], loops, clock))
            for name, r in runs.items():
                print(
                    f"{label:<20} {len(raw):>7} {what:<22} {name:<11}"
                    f" {statistics.median(r):>10.2f} {min(r):>8.2f}"
                )
            if args.baseline:
                ratio = statistics.median(runs["this build"]) / statistics.median(runs["baseline"])
                print(f"{'':<20} {'':>7} {what:<22} {'ratio':<11} {ratio:>10.2f}")


if __name__ == "__main__":
    main()
