"""The prompt-hash cache as the request path uses it.

Per request (OpenAI ingress shown; the Anthropic ingress passes ``wire="anthropic"``)::

    plan = cache.plan(raw, body, route.name, route_cache_settings, request.headers)
    reply = cache.lookup(plan, stream)                  # None on a miss or a bypass
    if reply is not None:                               # answer from the cache
        headers = {**reply.headers, ...}
        non-stream: web.Response(body=reply.body, ...); stream: write each of reply.chunks
    non-stream: with cache.join(plan) as flight:        # single flight (plan.key None: no-op)
        if not flight.leader: try: answer = await flight.wait(deadline.remaining())
                              except (LeaderFailed, FollowerTimeout): own call
        else: answer = <attempt loop>; cache.store_completion(plan, answer, served); flight.publish(answer)
    stream: broadcast, leader = cache.join_stream(plan)
        follower: async for chunk in broadcast.follow(deadline.remaining()): write(chunk)
        leader: recorder = cache.recorder(plan, served); for each relayed event: recorder.feed(data),
                broadcast.append(bytes written); at the end recorder.finish(clean) and
                broadcast.close() (or broadcast.fail(error_event_bytes) when cut)
    response header ``x-edgeproxy-cache``: plan.status on a miss or bypass, "hit" on a hit.

Nothing is stored unless the answer is complete: a non-stream answer is a 200 ``chat.completion``
the attempt loop accepted; a stream is stored only when ``[DONE]`` or a ``finish_reason`` was seen,
no in-band error came, and ``finish(clean=True)`` is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgeproxy._core import CacheError, CacheStore, SseParser, cache_key, encode_sse
from edgeproxy.cache.answers import (
    DONE,
    Answer,
    chunks_to_completion,
    completion_to_chunks,
    is_usage_only,
)
from edgeproxy.cache.control import parse_cache_control, tenant_scope
from edgeproxy.cache.singleflight import Flight, FlightTable, StreamBroadcast
from edgeproxy.clock import Clock, SystemClock
from edgeproxy.snapshot import CacheSettings

HEADER = "x-edgeproxy-cache"
HIT, MISS, BYPASS = "hit", "miss", "bypass"
# A stream whose events exceed this is relayed but not recorded (its entry could not fit anyway
# in a default-sized store without pushing most others out).
MAX_RECORD_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What the cache does for one request. ``key`` is None when the cache is bypassed."""

    key: bytes | None
    lookup: bool  # answer from the cache when an entry is there
    store: bool  # store this request's answer
    ttl: float
    reason: str = ""  # why the cache is bypassed, or why lookup/store is off
    max_age: float | None = None  # from Cache-Control: max-age
    include_usage: bool = False  # stream_options.include_usage of a stream request

    @property
    def status(self) -> str:
        """``x-edgeproxy-cache`` value when the request is not answered from the cache."""
        return BYPASS if self.key is None or not (self.lookup or self.store) else MISS


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A cache hit: exactly one of ``body`` (non-stream JSON) and ``chunks`` (SSE) is set."""

    body: bytes | None
    chunks: list[bytes] | None
    age: float  # seconds since the answer was stored
    served: dict[str, str] = field(default_factory=dict)  # headers of the original answer

    @property
    def headers(self) -> dict[str, str]:
        return {**self.served, HEADER: HIT, "age": str(int(self.age))}


def _bypass(reason: str, ttl: float = 0.0) -> CachePlan:
    return CachePlan(key=None, lookup=False, store=False, ttl=ttl, reason=reason)


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def cacheable(body: Mapping[str, Any], settings: CacheSettings) -> str:
    """'' when the request may be cached under ``settings``, else the reason it may not."""
    n = body.get("n")
    if n is not None and n != 1:
        return "n>1"
    if settings.cacheable == "deterministic" and not (
        _is_zero(body.get("temperature")) or _is_zero(body.get("top_p"))
    ):
        return "not deterministic (temperature or top_p must be 0)"
    return ""


class PromptCache:
    """The process-wide prompt-hash cache: one store, one clock, the single-flight tables."""

    def __init__(
        self,
        settings: CacheSettings | None = None,
        clock: Clock | None = None,
        *,
        store: CacheStore | None = None,
    ) -> None:
        bounds = settings or CacheSettings()
        self.clock: Clock = clock or SystemClock()
        self.store = store or CacheStore(bounds.max_bytes, bounds.max_entries)
        self._flights: FlightTable[Flight] = FlightTable()
        self._streams: FlightTable[StreamBroadcast] = FlightTable()
        # Told of every answer stored (its key, entry and TTL): the fleet's shared level
        # (docs/fleet.md). Called inline: it must only hand the entry on.
        self.on_store: Callable[[bytes, bytes, float], None] | None = None

    # ------------------------------------------------------------------ planning and lookup

    def plan(
        self,
        raw_body: bytes,
        body: Mapping[str, Any],
        route_name: str,
        settings: CacheSettings,
        headers: Mapping[str, str],
        *,
        wire: str = "openai",
        deterministic: bool = False,
    ) -> CachePlan:
        """Decide what the cache does for a request (cheap when disabled: no hashing).

        ``body`` is orjson's decoding of ``raw_body``, so ``raw_body`` is known to be UTF-8.
        ``deterministic``: the answer is a function of the request (embeddings), so the route's
        ``cacheable`` rule about sampling does not apply.
        """
        if not settings.enabled:
            return _bypass("disabled")
        reason = "" if deterministic else cacheable(body, settings)
        if reason:
            return _bypass(reason, settings.ttl)
        control = parse_cache_control(_get(headers, "cache-control"))
        if control.no_cache and control.no_store:
            return _bypass("no-cache, no-store", settings.ttl)
        try:
            # `body` is orjson's decoding of `raw_body`, so the bytes are valid UTF-8.
            key = cache_key(raw_body, route_name, wire, tenant_scope(headers), utf8_checked=True)
        except CacheError:
            return _bypass("body not canonicalisable", settings.ttl)
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        lookup = not control.no_cache and control.max_age != 0
        return CachePlan(
            key=key,
            lookup=lookup,
            store=not control.no_store,
            ttl=settings.ttl,
            reason="no-cache" if not lookup else ("no-store" if control.no_store else ""),
            max_age=control.max_age,
            include_usage=include_usage,
        )

    def lookup(self, plan: CachePlan, stream: bool) -> CachedReply | None:
        """The cached answer in the shape the request wants, or None (miss or bypass)."""
        if plan.key is None or not plan.lookup:
            return None
        raw = self.store.get(plan.key, self.clock.monotonic())
        if raw is None:
            return None
        answer = Answer.loads(raw)
        if answer is None:
            return None
        age = max(0.0, self.clock.monotonic() - answer.stored_at)
        if plan.max_age is not None and age > plan.max_age:
            return None
        if not stream:
            return CachedReply(body=answer.completion, chunks=None, age=age, served=answer.served)
        if answer.events is None:
            chunks = completion_to_chunks(answer.completion, include_usage=plan.include_usage)
        else:
            chunks = _replay(answer, plan.include_usage)
        return CachedReply(body=None, chunks=chunks, age=age, served=answer.served)

    # ------------------------------------------------------------------ storing

    def store_completion(
        self, plan: CachePlan, completion: bytes, served: Mapping[str, str] | None = None
    ) -> bool:
        """Store a complete non-stream answer (a 200 ``chat.completion``); True when stored."""
        if plan.key is None or not plan.store or not _complete_completion(completion):
            return False
        return self._put(plan, Answer(completion, None, self.clock.monotonic(), dict(served or {})))

    def store_answer(
        self, plan: CachePlan, body: bytes, served: Mapping[str, str] | None = None
    ) -> bool:
        """Store a complete answer that is not a chat completion (embeddings: the caller
        vouches that it is whole); ``lookup(plan, stream=False)`` returns it as stored."""
        if plan.key is None or not plan.store:
            return False
        return self._put(plan, Answer(body, None, self.clock.monotonic(), dict(served or {})))

    def recorder(
        self, plan: CachePlan, served: Mapping[str, str] | None = None
    ) -> StreamRecorder | None:
        """A recorder for a stream answer, or None when it is not to be stored."""
        if plan.key is None or not plan.store:
            return None
        return StreamRecorder(self, plan, dict(served or {}))

    def _put(self, plan: CachePlan, answer: Answer) -> bool:
        assert plan.key is not None
        entry = answer.dumps()
        stored = self.store.put(plan.key, entry, plan.ttl, self.clock.monotonic())
        if stored and self.on_store is not None:
            self.on_store(plan.key, entry, plan.ttl)
        return stored

    def adopt(self, key: bytes, entry: bytes, age: float, ttl_left: float) -> bool:
        """An entry another sidecar stored (the fleet's shared level), ``age`` seconds old with
        ``ttl_left`` to live: kept here as if stored ``age`` seconds ago. Not handed back to
        ``on_store``. False when it is not an entry of this format or cannot be kept."""
        if not ttl_left > 0:
            return False
        try:
            answer = Answer.loads(entry)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return False
        if answer is None:
            return False
        now = self.clock.monotonic()
        local = Answer(answer.completion, answer.events, now - max(age, 0.0), answer.served)
        return self.store.put(key, local.dumps(), ttl_left, now)

    # ------------------------------------------------------------------ single flight

    def join(self, plan: CachePlan) -> Flight:
        """This non-stream request's part in the single flight for its key.

        A bypassed plan (no key) or one with ``no-cache`` always leads (its own call).
        """
        if plan.key is None or not plan.lookup:
            return Flight(None, b"", None)
        leader = self._flights.get(plan.key)
        if leader is not None:
            leader.followers += 1
            return Flight(None, plan.key, leader)
        flight = Flight(self._flights, plan.key, None)
        self._flights.add(plan.key, flight)
        return flight

    def join_stream(self, plan: CachePlan) -> tuple[StreamBroadcast, bool]:
        """The broadcast for this stream request's key and whether this request leads it.

        The leader must end it with ``close()`` or ``fail(...)`` (use ``try/finally``).
        """
        if plan.key is None or not plan.lookup:
            return StreamBroadcast(), True
        broadcast = self._streams.get(plan.key)
        if broadcast is not None:
            return broadcast, False
        broadcast = StreamBroadcast(self._streams, plan.key)
        self._streams.add(plan.key, broadcast)
        return broadcast, True

    def in_flight(self) -> int:
        return len(self._flights) + len(self._streams)

    def stats(self) -> dict[str, int]:
        return {**self.store.stats(), "in_flight": self.in_flight()}


class StreamRecorder:
    """Collects a relayed stream's events; stores them on a clean, complete end only.

    Feed it the data of each event relayed to the client (``feed``), or the SSE bytes written
    (``feed_bytes``), then call ``finish(clean)``. It stores when ``clean`` is true, ``[DONE]``
    or a ``finish_reason`` was seen, and no in-band error was relayed.
    """

    def __init__(self, cache: PromptCache, plan: CachePlan, served: dict[str, str]) -> None:
        self._cache = cache
        self._plan = plan
        self._served = served
        self._events: list[str] = []
        self._bytes = 0
        self._parser: SseParser | None = None
        self.done = False
        self.finished = False
        self.broken = False  # an error event, unparseable data or too large: never stored
        self.stored = False

    def feed(self, data: str) -> None:
        if self.broken or self.done:
            return
        if data == DONE:
            self.done = True
            return
        self._bytes += len(data)
        if self._bytes > MAX_RECORD_BYTES:
            self._fail()
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail()
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self._fail()
            return
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished = True
        self._events.append(data)

    def feed_bytes(self, sse: bytes) -> None:
        """Feed SSE bytes as written to the client (parsed here with the Rust SSE parser).

        Once the recording is over (``[DONE]``) or given up (over ``MAX_RECORD_BYTES``, say an
        endless stream), the bytes are not even parsed."""
        if self.broken or self.done:
            return
        if self._parser is None:
            self._parser = SseParser()
        for event in self._parser.feed(sse):
            self.feed(event.data)

    def finish(self, clean: bool) -> bool:
        """End of the relay; stores the answer if it is complete. True when stored."""
        if self.stored or not clean or self.broken or not (self.done or self.finished):
            return False
        if not self._events:
            return False
        try:
            completion = chunks_to_completion(self._events)
        except (orjson.JSONDecodeError, TypeError, AttributeError, KeyError):
            return False
        answer = Answer(completion, self._events, self._cache.clock.monotonic(), self._served)
        self.stored = self._cache._put(self._plan, answer)
        return self.stored

    def _fail(self) -> None:
        self.broken = True
        self._events = []
        self._parser = None


def _replay(answer: Answer, include_usage: bool) -> list[bytes]:
    assert answer.events is not None
    events = answer.events
    has_usage = bool(events) and is_usage_only(events[-1])
    if has_usage and not include_usage:
        events = events[:-1]
    chunks = [encode_sse(data) for data in events]
    if include_usage and not has_usage:
        usage = orjson.loads(answer.completion).get("usage")
        if usage and events:
            head = orjson.loads(events[0])
            extra = {k: head[k] for k in ("id", "object", "created", "model") if k in head}
            chunks.append(
                encode_sse(orjson.dumps({**extra, "choices": [], "usage": usage}).decode())
            )
    chunks.append(encode_sse(DONE))
    return chunks


def _complete_completion(completion: bytes) -> bool:
    try:
        c = orjson.loads(completion)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(c, dict) or "error" in c:
        return False
    choices = c.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(ch, dict) and ch.get("finish_reason") for ch in choices)
    )


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
