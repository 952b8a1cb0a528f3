"""The health prober on a fake clock with a scripted probe function: no network."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict

from edgeproxy.clock import FakeClock
from edgeproxy.failure import FailureClass
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.resilience.prober import Prober, ProbeResult, ProbeTarget
from edgeproxy.snapshot import BreakerSettings, ProberSettings
from edgeproxy.snapshot.wire import ProbeRequest

UP = ProbeResult(True, "HTTP 200")
DOWN = ProbeResult(False, "connect failed", FailureClass.CONNECT_ERROR)
BUSY = ProbeResult(None, "HTTP 429")


class Script:
    """A probe function whose answer per URL the test sets, recording when it was called."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.answer: dict[str, ProbeResult] = defaultdict(lambda: UP)
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, target: ProbeTarget, time_limit: float) -> ProbeResult:
        self.calls.append((target.probe_url, self.clock.monotonic()))
        answer = self.answer[target.probe_url]
        if isinstance(answer, Exception):
            raise answer
        return answer


def setup(
    targets: list[ProbeTarget], **settings: object
) -> tuple[FakeClock, BreakerRegistry, Script, Prober]:
    clock = FakeClock()
    registry = BreakerRegistry(lambda _: BreakerSettings(base_ejection_time=30.0), clock)
    script = Script(clock)
    prober = Prober(
        targets,
        registry,
        script,
        ProberSettings(**settings),  # type: ignore[arg-type]
        clock,
        random.Random(0),
    )
    return clock, registry, script, prober


def models_probe(base_url: str, keys: tuple[str, ...]) -> ProbeTarget:
    """A target probed at GET {base_url}/models (what a wire builds by default)."""
    return ProbeTarget(base_url, keys, request=ProbeRequest("GET", f"{base_url}/models", {}))


EAST = models_probe("http://east/v1", ("openai/east/gpt-4o", "openai/east/gpt-4o-mini"))


async def probe_after(clock: FakeClock, prober: Prober, seconds: float) -> None:
    clock.advance(seconds)
    await prober.step()


async def test_failed_probes_mark_every_candidate_behind_the_url_down() -> None:
    clock, registry, script, prober = setup([EAST], unhealthy_threshold=2, interval=10, jitter=0)
    await prober.step()
    assert script.calls == [("http://east/v1/models", clock.monotonic())]
    script.answer["http://east/v1/models"] = DOWN
    await probe_after(clock, prober, 10)
    assert all(registry.get(k).state == "closed" for k in EAST.keys)  # one failure is a blip
    await probe_after(clock, prober, 10)
    for key in EAST.keys:
        breaker = registry.get(key)
        assert breaker.state == "open"
        assert "health probe failed 2x: connect failed" in breaker.reason


async def test_a_passing_probe_half_opens_an_ejected_candidate_early() -> None:
    clock, registry, script, prober = setup([EAST], unhealthy_threshold=1, interval=5, jitter=0)
    script.answer["http://east/v1/models"] = DOWN
    await prober.step()
    breaker = registry.get("openai/east/gpt-4o")
    assert breaker.state == "open" and breaker.reopen_at == clock.monotonic() + 30
    script.answer["http://east/v1/models"] = UP
    await probe_after(clock, prober, 5)
    assert breaker.state == "half_open"  # 25 s before the ejection would have ended


async def test_probes_do_not_end_a_held_ejection_and_inconclusive_results_change_nothing() -> None:
    clock, registry, script, prober = setup([EAST], unhealthy_threshold=2, interval=5, jitter=0)
    breaker = registry.get("openai/east/gpt-4o")
    breaker.eject(600, "insufficient_quota")
    await prober.step()
    assert breaker.state == "open"
    other = registry.get("openai/east/gpt-4o-mini")
    script.answer["http://east/v1/models"] = DOWN
    await probe_after(clock, prober, 5)
    script.answer["http://east/v1/models"] = BUSY
    await probe_after(clock, prober, 5)  # a 429 neither counts as down nor breaks the streak
    script.answer["http://east/v1/models"] = DOWN
    await probe_after(clock, prober, 5)
    assert other.state == "open"


async def test_a_probe_that_raises_counts_as_down_and_the_prober_survives() -> None:
    _, registry, script, prober = setup([EAST], unhealthy_threshold=1)
    script.answer["http://east/v1/models"] = RuntimeError("bug")  # type: ignore[assignment]
    await prober.step()
    assert registry.get("openai/east/gpt-4o").state == "open"
    assert prober.snapshot()[0]["detail"] == "probe raised RuntimeError"


async def test_the_global_probe_budget_holds_for_many_targets() -> None:
    targets = [models_probe(f"http://r{i}/v1", (f"p/r{i}/m",)) for i in range(20)]
    clock, _, script, prober = setup(targets, max_probes_per_second=2.0, interval=5.0)
    start = clock.monotonic()
    while clock.monotonic() - start < 60:
        wait = await prober.step()
        clock.advance(max(wait, 0.01))
    elapsed = clock.monotonic() - start
    # Unbudgeted, 20 targets every 5 s would be 240 probes; the bucket allows 2/s plus a burst.
    assert len(script.calls) <= 2 * elapsed + 2
    assert len(script.calls) >= 2 * 60 - 5  # and the budget is actually used
    assert {url for url, _ in script.calls} == {t.probe_url for t in targets}  # nobody starves
    assert prober.deferred_total > 0


async def test_intervals_are_jittered() -> None:
    clock, _, script, prober = setup([EAST], interval=10.0, jitter=0.2)
    for _ in range(30):
        wait = await prober.step()
        clock.advance(wait)
    times = [t for _, t in script.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(8.0 <= g <= 12.0 for g in gaps)
    assert max(gaps) - min(gaps) > 1.0  # not in lockstep


async def test_a_target_is_known_by_its_probe_url_and_never_shows_its_key() -> None:
    request = ProbeRequest("POST", "http://x/v1/messages", {"x-api-key": "sk-secret"}, b"{}")
    secret = ProbeTarget("http://x/v1", (), "completion", request=request)
    assert secret.probe_url == "http://x/v1/messages"
    assert "sk-secret" not in repr(secret)


async def test_run_sleeps_on_the_clock_between_probes() -> None:
    clock = FakeClock(auto_advance=False)
    registry = BreakerRegistry(lambda _: BreakerSettings(), clock)
    script = Script(clock)
    prober = Prober([EAST], registry, script, ProberSettings(interval=10, jitter=0), clock)
    prober.start()
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(script.calls) == 1 and clock.sleepers == 1
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert len(script.calls) == 1
    clock.advance(0.1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(script.calls) == 2
    await prober.stop()
    assert clock.sleepers == 0


async def test_a_reload_keeps_the_streaks_of_unchanged_targets() -> None:
    west = models_probe("http://west/v1", ("openai/west/gpt-4o",))
    clock, registry, script, prober = setup([EAST, west], unhealthy_threshold=2, jitter=0)
    script.answer["http://east/v1/models"] = DOWN
    await prober.step()
    prober.update_targets([EAST])
    assert [s["url"] for s in prober.snapshot()] == ["http://east/v1/models"]
    await probe_after(clock, prober, 10)
    assert registry.get("openai/east/gpt-4o").state == "open"  # the streak survived
    assert ProbeTarget("https://x/v1", (), mode="tcp").probe_url == "tcp://x:443"
