"""Active health checks: a background task that probes each upstream base URL and tells breakers.

User traffic finds a dead upstream only by failing on it; probes find it first, and find it back
sooner than an ejection timer would. Rules:

- One probe per base URL (a provider's region), however many models share it; the result feeds
  the breaker of every candidate behind it.
- Cheap by default: ``GET {base_url}/models`` (no tokens billed), a TCP connect, or a configured
  URL. A billed probe (a one-token completion) only when a target explicitly asks for it.
- ``unhealthy_threshold`` failed probes in a row trip the breakers (a growing ejection, as for
  traffic failures); ``healthy_threshold`` passing probes end an outlier ejection early
  (half-open: real traffic then decides). A held ``eject()`` (quota exhausted, model not found)
  is not ended by probes: /models answers fine on an account with no quota left, or after a
  model is retired. A rejected key's ejection is: the probe sends the same key, and a refused
  probe (401/403, the wire's ``probe_verdict``) counts as down, so it passes only once the key
  works again.
- Intervals are jittered so sidecars started together do not probe in lockstep, and a global
  token bucket caps probes per second however many targets a policy names.

The probe function is injectable; unit tests drive ``step()`` on a fake clock without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgeproxy.clock import Clock
from edgeproxy.failure import FailureClass, classify_status
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.snapshot.settings import ProbeMode, ProberSettings
from edgeproxy.snapshot.wire import ProbeRequest
from edgeproxy.upstreams.http1 import ConnectFailed, Http1Pool

log = logging.getLogger("edgeproxy.prober")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    base_url: str  # the API root, e.g. https://api.openai.com/v1
    keys: tuple[str, ...]  # candidate keys whose breakers this probe feeds
    mode: ProbeMode = "models"
    # The HTTP probe, built by the candidate's wire (None for ``tcp``): its URL, method, body
    # and headers (the provider's key among them; ``ProbeRequest`` keeps them out of repr).
    request: ProbeRequest | None = None
    # The wire's verdict on the probe's HTTP status: True healthy, False down, None busy.
    verdict: Callable[[int], bool | None] | None = field(default=None, compare=False)

    @property
    def probe_url(self) -> str:
        if self.request is not None:
            return self.request.url
        if self.mode == "tcp":
            host, port = _host_port(self.base_url)
            return f"tcp://{host}:{port}"
        return self.base_url


@dataclass(frozen=True, slots=True)
class ProbeResult:
    # True: healthy. False: down. None: inconclusive (e.g. a 429 says "busy", not "down").
    ok: bool | None
    detail: str
    failure: FailureClass | None = None


ProbeFn = Callable[[ProbeTarget, float], Awaitable[ProbeResult]]


class TokenBucket:
    """``rate`` tokens per second on the clock, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self._rate)


@dataclass
class _TargetState:
    target: ProbeTarget
    next_due: float
    ok_streak: int = 0
    fail_streak: int = 0
    probes_total: int = 0
    last: ProbeResult | None = None


class Prober:
    def __init__(
        self,
        targets: Sequence[ProbeTarget],
        registry: BreakerRegistry,
        probe: ProbeFn,
        settings: ProberSettings,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._probe = probe
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        # Burst of one second's worth: a policy with many targets starts probing at the rate,
        # not all at once.
        self._bucket = TokenBucket(
            settings.max_probes_per_second, max(1.0, settings.max_probes_per_second), clock
        )
        self._targets: dict[str, _TargetState] = {}
        self._task: asyncio.Task[None] | None = None
        self.deferred_total = 0  # probes postponed by the rate budget
        self.update_targets(targets)

    def update_targets(self, targets: Sequence[ProbeTarget]) -> None:
        """After a policy reload: keep the schedule and streaks of targets that still exist."""
        now = self._clock.monotonic()
        fresh: dict[str, _TargetState] = {}
        for target in targets:
            old = self._targets.get(target.probe_url)
            if old is not None and old.target == target:
                fresh[target.probe_url] = old
            else:
                fresh[target.probe_url] = _TargetState(target, next_due=now)  # probe at once
        self._targets = fresh

    def _next_interval(self) -> float:
        j = self.settings.jitter
        return self.settings.interval * self._rng.uniform(1 - j, 1 + j)

    async def step(self) -> float:
        """Probe every due target the rate budget allows; return seconds until the next is due."""
        now = self._clock.monotonic()
        due = [t for t in self._targets.values() if t.next_due <= now]
        due.sort(key=lambda t: t.next_due)  # the longest overdue first
        batch: list[_TargetState] = []
        for state in due:
            if not self._bucket.try_take():
                # Over budget: the rest keep their due time, so they stay first in line (oldest
                # due first) when the bucket refills, and none of them starves.
                self.deferred_total += len(due) - len(batch)
                break
            batch.append(state)
        deferred = len(batch) < len(due)
        results = await asyncio.gather(*(self._run_one(s.target) for s in batch))
        after = self._clock.monotonic()
        for state, result in zip(batch, results, strict=True):
            state.next_due = after + self._next_interval()
            self._apply(state, result)
        if deferred:
            return self._bucket.wait_time()
        if not self._targets:
            return self.settings.interval
        return max(0.0, min(t.next_due for t in self._targets.values()) - after)

    async def _run_one(self, target: ProbeTarget) -> ProbeResult:
        try:
            # The probe gets the timeout to apply itself; this is a backstop for one that does not.
            async with asyncio.timeout(self.settings.timeout * 2):
                return await self._probe(target, self.settings.timeout)
        except TimeoutError:
            return ProbeResult(False, "probe timed out", FailureClass.CONNECT_TIMEOUT)
        except Exception as exc:  # a probe bug must not kill the prober
            log.warning("probe of %s raised %s", target.probe_url, type(exc).__name__)
            return ProbeResult(False, f"probe raised {type(exc).__name__}", None)

    def _apply(self, state: _TargetState, result: ProbeResult) -> None:
        state.probes_total += 1
        state.last = result
        if result.ok is None:
            return
        if result.ok:
            state.fail_streak = 0
            state.ok_streak += 1
            if state.ok_streak >= self.settings.healthy_threshold:
                for key in state.target.keys:
                    self._registry.get(key).probe_succeeded()
            return
        state.ok_streak = 0
        state.fail_streak += 1
        if state.fail_streak >= self.settings.unhealthy_threshold:
            for key in state.target.keys:
                breaker = self._registry.get(key)
                if breaker.state != "open":
                    breaker.trip(f"health probe failed {state.fail_streak}x: {result.detail}")

    async def run(self) -> None:
        while True:
            wait = await self.step()
            await self._clock.sleep(wait)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="edgeproxy-prober")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def snapshot(self) -> list[dict[str, object]]:
        now = self._clock.monotonic()
        return [
            {
                "url": s.target.probe_url,
                "mode": s.target.mode,
                "keys": list(s.target.keys),
                "ok": None if s.last is None else s.last.ok,
                "detail": None if s.last is None else s.last.detail,
                "fail_streak": s.fail_streak,
                "probes_total": s.probes_total,
                "next_in_seconds": round(max(0.0, s.next_due - now), 3),
            }
            for s in self._targets.values()
        ]


# -- the real probes -----------------------------------------------------------------------------

# A probe's answer is read up to this much (then dropped): a hostile or broken upstream cannot make
# the prober buffer more. The client never asks for compression, so this is what arrives.
MAX_PROBE_BODY = 64 * 1024


def http_probe(pool: Http1Pool) -> ProbeFn:
    """Probes over the proxy's one upstream client (the pool user traffic uses): the wire's own
    request, no redirect ever followed, the answer read capped; or a TCP connect."""

    async def probe(target: ProbeTarget, time_limit: float) -> ProbeResult:
        request = target.request
        if target.mode == "tcp" or request is None:
            return await tcp_probe(target, time_limit)
        try:
            async with asyncio.timeout(time_limit):
                response = await pool.post(
                    request.url,
                    request.body,
                    request.headers,
                    connect_timeout=time_limit,
                    method=request.method,
                )
                try:
                    await response.read(MAX_PROBE_BODY)
                finally:
                    response.release()  # reused when read whole, else dropped
        except TimeoutError:
            return ProbeResult(
                False, f"no answer within {time_limit:g}s", FailureClass.CONNECT_TIMEOUT
            )
        except ConnectFailed as exc:
            return ProbeResult(False, f"connect failed: {exc}", FailureClass.CONNECT_ERROR)
        except (ConnectionError, OSError, ValueError) as exc:
            return ProbeResult(
                False, f"connection failed: {type(exc).__name__}", FailureClass.RESET
            )
        return _verdict(target, response.status)

    return probe


def _verdict(target: ProbeTarget, status: int) -> ProbeResult:
    ok = target.verdict(status) if target.verdict is not None else 200 <= status < 300
    if ok is None:
        return ProbeResult(None, f"HTTP {status}: busy, not down", classify_status(status))
    if ok:
        return ProbeResult(True, f"HTTP {status}" if status < 300 else f"HTTP {status}: reachable")
    failure = classify_status(status)
    return ProbeResult(False, f"HTTP {status}", failure)


async def tcp_probe(target: ProbeTarget, time_limit: float) -> ProbeResult:
    host, port = _host_port(target.base_url)
    try:
        async with asyncio.timeout(time_limit):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(
            False, f"no connection within {time_limit:g}s", FailureClass.CONNECT_TIMEOUT
        )
    except OSError as exc:
        return ProbeResult(False, f"connect failed: {exc}", FailureClass.CONNECT_ERROR)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, "TCP connect")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)
