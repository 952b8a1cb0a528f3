"""Hot reload while traffic flows: no failed request, no request under a mix of versions.

Client threads keep requests in flight (streaming and not) while the policy file is rewritten
every few hundred ms, in every way a file changes on disk, between two valid versions that send
route ``m`` to different sims, with invalid and half-written versions mixed in. Each answer says which
policy version served it and which sim answered; the two must belong together.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text
from fixtures.reloadkit import ReloadStack, wait_until, write_in_place, write_then_rename
from harness import LoopThread

WRITERS = 6
DURATION = 3.0
STEP = 0.12


@pytest.fixture
def stack(loop_thread: LoopThread, tmp_path: Path) -> Iterator[ReloadStack]:
    s = ReloadStack(loop_thread, tmp_path / "policy.yaml", debounce=0.05)
    yield s
    s.close()


def test_reload_under_load(stack: ReloadStack) -> None:
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    version_a, version_b = stack.version_of(a), stack.version_of(b)
    first_sim = {version_a: "pa", version_b: "pb"}
    bad = {
        # Leaves the route's residency set (pc is tagged us): must never take effect.
        "residency": stack.text("pc", "pa"),
        "typo": b.replace("chain:", "chian:"),
        "yaml": a.replace("routes:", "routes: [\n"),
        # A writer caught half-way: the file ends in the middle of the providers.
        "half": b[: len(b) // 2],
    }
    for name, text in bad.items():
        with pytest.raises(PolicyError):
            load_policy_text(text, name, {})
    stack.start(a)

    stop = threading.Event()
    served: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(base_url=stack.proxy.url if stack.proxy else "", timeout=10) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                stream = (worker + i) % 2 == 0
                try:
                    response = stack.chat(http, stream=stream)
                    body = response.text
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                version = response.headers.get("x-edgeproxy-policy-version", "?")
                provider = response.headers.get("x-edgeproxy-provider", "?")
                ok = response.status_code == 200 and (not stream or "data: [DONE]" in body)
                with lock:
                    if not ok:
                        failures.append(f"{response.status_code}: {body[:200]}")
                    served[(version, provider)] += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()

    # Every way a file changes on disk, in turn. After each write the test waits (with a
    # deadline) until the proxy has dealt with it (the good version serving, or one more
    # rejection), then lets traffic flow on that state for STEP seconds.
    good_b = lambda: write_then_rename(stack.path, b)  # noqa: E731
    writes: list[tuple[Callable[[], None], str | None]] = [
        (good_b, version_b),
        (lambda: write_in_place(stack.path, bad["typo"]), None),
        (lambda: write_in_place(stack.path, a, pieces=3, pause=0.01), version_a),  # slow writer
        (lambda: write_in_place(stack.path, bad["half"]), None),
        (good_b, version_b),
        (lambda: write_in_place(stack.path, bad["residency"]), None),
        (lambda: _delete_and_recreate(stack.path, a), version_a),
        (lambda: write_then_rename(stack.path, bad["yaml"]), None),
    ]
    started = time.monotonic()
    rounds = 0
    seen_versions: set[str] = set()
    try:
        for write, expect in itertools.cycle(writes):
            if time.monotonic() - started > DURATION:
                break
            rejected = stack.reloader.counts.rejected
            write()
            rounds += 1
            if expect is not None:
                stack.wait_for_version(expect)
            else:
                wait_until(
                    lambda r=rejected: stack.reloader.counts.rejected > r,
                    what="the bad version to be rejected",
                )
            deadline = time.monotonic() + STEP
            while time.monotonic() < deadline:
                seen_versions.add(stack.policy.version)
                time.sleep(0.005)
        # The last write is one of the good or bad ones; end on B, then a bad one: B stays.
        write_then_rename(stack.path, b)
        stack.wait_for_version(version_b)
        rejected = stack.reloader.counts.rejected
        write_in_place(stack.path, bad["residency"])
        wait_until(lambda: stack.reloader.counts.rejected > rejected, what="a final rejection")
        response = stack.chat()
        assert response.headers["x-edgeproxy-policy-version"] == version_b
        assert response.headers["x-edgeproxy-provider"] == "pb"
    finally:
        stop.set()
        for t in threads:
            t.join(20)

    counts = stack.reloader.counts
    total = sum(served.values())
    print(
        f"\nreload under load: {total} requests, {len(failures)} failures, {rounds} writes, "
        f"reloads applied={counts.applied} rejected={counts.rejected} "
        f"unchanged={counts.unchanged}; served {dict(served)}"
    )
    assert failures == []
    # Every answer came from the sim its own policy version puts first: no mixed versions.
    for (version, provider), n in served.items():
        assert version in first_sim, (version, provider, n)
        assert provider == first_sim[version], (version, provider, n)
    # Both versions actually served traffic, and the bad ones never took effect.
    assert {v for v, _ in served} == {version_a, version_b}
    assert seen_versions <= {version_a, version_b}
    assert stack.requests_to("c") == 0
    assert counts.applied >= 4
    assert counts.rejected >= 3
    assert total >= 100


def _delete_and_recreate(path: Path, text: str) -> None:
    path.unlink()
    time.sleep(0.005)
    path.write_text(text)
