"""The access log line's cost: the ``logging`` route vs the batched writer.

CPU time of the whole process (``time.process_time``: the writer's thread included) per line,
median over runs, the variants taking turns within each run. Lines go to /dev/null, so the
figure is building, formatting, redacting and writing, not the disk.

    .venv/bin/python -m bench.access_log_bench [--lines 20000] [--runs 7]

Variants:
  logging      what every request paid before: ``logger.info("request", extra={...})`` through
               ``JsonFormatter`` (a dict of extras, a LogRecord, the whole line redacted) and a
               ``StreamHandler`` (one write and flush per line), on the caller's thread
  writer-json  ``AccessLogWriter`` (JSON): a precompiled layout over a tuple of values on the
               caller's thread, written in batches by its thread (what ``serve`` does)
  writer-text  the same in ``--log-format text`` (control characters escaped)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

from edgeproxy.telemetry.access_log import FIELDS, AccessLogWriter, AccessValues
from edgeproxy.telemetry.logs import JsonFormatter


def values(i: int) -> AccessValues:
    """A streamed request that failed over once: every field set, as ``finish`` makes them."""
    return (
        f"req_{i:032x}",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "gpt-4o-mini",
        "gpt-4o-mini",
        True,
        "alpha/eu-west/gpt-4o-mini",
        2,
        ["alpha/us-east/gpt-4o-mini=server_error", "alpha/eu-west/gpt-4o-mini=ok"],
        200,
        "ok",
        None,
        412.3,
        101.7,
        1000,
        400,
        200,
        0.00024,
        "miss",
        "v1abc",
    )


def logging_route(lines: int) -> None:
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with open("/dev/null", "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(JsonFormatter())
        logger.handlers[:] = [handler]
        for i in range(lines):
            logger.info("request", extra=dict(zip(FIELDS, values(i), strict=True)))
        logger.handlers[:] = []


def writer(fmt: str) -> Callable[[int], None]:
    def run(lines: int) -> None:
        with open("/dev/null", "wb") as sink:
            log = AccessLogWriter(sink, fmt)
            now = time.time()
            for i in range(lines):
                log.write(now, values(i))
            log.close()  # everything written: the thread's CPU is in the figure
            assert log.written >= lines and log.dropped == 0

    return run


VARIANTS: dict[str, Callable[[int], None]] = {
    "logging": logging_route,
    "writer-json": writer("json"),
    "writer-text": writer("text"),
}


def measure(lines: int, runs: int) -> dict[str, float]:
    """Median CPU µs per line of each variant."""
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for run in VARIANTS.values():
        run(500)  # warm up
    for _ in range(runs):
        for name, run in VARIANTS.items():
            start = time.process_time()
            run(lines)
            results[name].append((time.process_time() - start) / lines * 1e6)
    return {name: statistics.median(v) for name, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    medians = measure(args.lines, args.runs)
    print(f"{'variant':<12} {'CPU us/line':>12}   ({args.lines} lines x {args.runs} runs, median)")
    for name, us in medians.items():
        print(f"{name:<12} {us:>12.2f}   x{us / medians['logging']:.2f} of logging")


if __name__ == "__main__":
    main()
