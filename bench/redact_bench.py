"""What scrubbing an upstream's 64 KiB error body costs (``telemetry/redact.py``).

Run: .venv/bin/python bench/redact_bench.py   (figures go to docs/observability.md, "Redaction")

Not a test. Twelve registered keys (a policy with a dozen providers), then, on 64 KiB of text:
ordinary prose with no secret (the usual error body), prose quoting a key, random letters (the
worst case for the trigger-word search), and a body made of nothing but trigger words (the
pattern budget's worst case); and ``redact_body`` on the same prose as a JSON error body (the
pass-through path: decode, one pass over the compact re-encoding, the original bytes back).
Prints the median and best time per call.
"""

from __future__ import annotations

import random
import statistics
import string
import time
from collections.abc import Callable

import orjson

from edgeproxy.telemetry.redact import clear_secrets, redact, redact_body, register_secrets

SIZE = 64 * 1024
RUNS = 9


def _time(fn: Callable[[], object], number: int) -> tuple[float, float]:
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return statistics.median(runs), min(runs)


def main() -> None:
    rng = random.Random(7)
    keys = ["sk-" + "".join(rng.choices(string.ascii_letters, k=40)) for _ in range(8)]
    keys += ["".join(rng.choices("0123456789abcdef", k=32)) for _ in range(4)]
    register_secrets(keys)
    prose = (
        "The request was rejected because the model you asked for is not available in this "
        "region at the moment; please retry later or choose another deployment. "
    )
    english = (prose * (SIZE // len(prose) + 1))[:SIZE]
    quoting = (
        english[: SIZE // 2]
        + f"Incorrect API key provided: Bearer {keys[3]}. "
        + english[SIZE // 2 :]
    )
    letters = "".join(rng.choices(string.ascii_lowercase + " ", k=SIZE))
    triggers = ("key token: secret bearer " * (SIZE // 25 + 1))[:SIZE]
    body = orjson.dumps({"error": {"message": english, "type": "invalid_request_error"}})
    cases: list[tuple[str, Callable[[], object]]] = [
        ("redact: 64 KiB prose, nothing to scrub", lambda: redact(english)),
        ("redact: 64 KiB prose quoting a key", lambda: redact(quoting)),
        ("redact: 64 KiB random letters", lambda: redact(letters)),
        ("redact: 64 KiB of trigger words", lambda: redact(triggers)),
        ("redact_body: 64 KiB JSON error body", lambda: redact_body(body)),
    ]
    print(f"{'case':<44} {'median us':>10} {'best us':>9}")
    for name, fn in cases:
        median, best = _time(fn, 50)
        print(f"{name:<44} {median * 1e6:>10.0f} {best * 1e6:>9.0f}")
    clear_secrets()


if __name__ == "__main__":
    main()
