"""What classifying a request's task costs (``routing/tasks.py``, ``edgeproxy-core`` classify).

Run: .venv/bin/python bench/classify_bench.py [--markdown]   (figures: docs/benchmarks.md, "Task
classification")

Not a test. A model is trained first, with the default settings (2^18 buckets, character 3-5-
grams, word 1-2-grams), on the shipped corpus (tests/fixtures/tasks/train.jsonl); then prompts of
200 B, 2 KB and 20 KB, made of the held-out corpus's user messages, are classified:

- ``predict``: the Rust model alone (``TaskModel.predict`` on the text), and
- ``classify``: what the request path pays, ``routing.tasks.classify_now`` on a body (the
  explicit-name check, the text read from the messages, the model, the decision), with a
  ``tasks:`` section of no rules and the classifier.

Each case is timed call by call (``perf_counter_ns``) for ``--calls`` calls, ``--rounds`` times;
the table gives the median over rounds of each round's p50 and p99, in microseconds. The 20 KB
prompt is read as its first and last 4 KiB (the model's ``max_bytes``), so it costs about what
8 KB costs.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from edgeproxy.routing.classifier import TrainSettings, read_examples, train
from edgeproxy.routing.tasks import classify_now
from edgeproxy.snapshot import (
    DEFAULT_TASK,
    ModelFile,
    Route,
    TaskClassifier,
    Tasks,
    Timeouts,
)

REPO = Path(__file__).resolve().parent.parent
SIZES = {"200 B": 200, "2 KB": 2_000, "20 KB": 20_000}


def _percentiles(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        samples.append(clock() - start)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def _no_count(encoding: str) -> int:
    return 0  # no rule counts the prompt here


def _prompt(texts: list[str], size: int) -> str:
    out = ""
    for text in texts:
        if len(out.encode()) >= size:
            break
        out += text + "\n"
    data = out.encode()[:size]
    return data.decode("utf-8", "ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    fixtures = REPO / "tests" / "fixtures" / "tasks"
    started = time.perf_counter()
    model = train(read_examples(fixtures / "train.jsonl"), TrainSettings())
    trained = time.perf_counter() - started
    texts = [e.text for e in read_examples(fixtures / "heldout.jsonl")]
    tasks = Tasks(
        categories=tuple(model.labels),
        classifier=TaskClassifier(ModelFile("bench", model.digest), model),
    )
    route = Route("chat", (), (), Timeouts(), 3, "error", default_task=DEFAULT_TASK)

    rows = []
    for label, size in SIZES.items():
        prompt = _prompt(texts, size)
        body = {
            "model": "chat",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": prompt},
            ],
        }
        cases: dict[str, Callable[[], object]] = {
            "predict": functools.partial(model.predict, prompt),
            "classify": functools.partial(classify_now, tasks, route, {}, body, _no_count),
        }
        for name, fn in cases.items():
            for _ in range(200):  # warm caches and the allocator
                fn()
            rounds = [_percentiles(fn, args.calls) for _ in range(args.rounds)]
            p50 = statistics.median(r[0] for r in rounds)
            p99 = statistics.median(r[1] for r in rounds)
            rows.append((f"{name}, {label} prompt", p50, p99))

    print(
        f"model: 2^{model.bits} buckets, {len(model.labels)} tasks, trained on 3000 examples "
        f"in {trained:.2f}s; {args.rounds} rounds x {args.calls} calls"
    )
    if args.markdown:
        print("| case | p50 µs | p99 µs |\n|---|---:|---:|")
        for name, p50, p99 in rows:
            print(f"| {name} | {p50:.1f} | {p99:.1f} |")
    else:
        print(f"{'case':<30} {'p50 us':>8} {'p99 us':>8}")
        for name, p50, p99 in rows:
            print(f"{name:<30} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
