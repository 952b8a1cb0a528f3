"""Single flight: identical requests that miss at the same moment make one upstream call.

Non-stream (``Flight``): the first request for a key is the leader and calls the upstream; the
others are followers and await the leader's answer. When the leader fails (any error, or it ends
without publishing), each follower falls back to its own upstream call: the leader's failure may
be its own (its deadline, its client leaving), and the attempt loop retries and fails over
anyway. Followers bound their wait by their own deadline.

Stream (``StreamBroadcast``): the leader appends every chunk it writes to its client (bytes,
already SSE-encoded) to a shared buffer; followers replay it from the start and then follow
live, ending when the leader ends. Once the leader has appended a chunk it is committed, and so
are the followers: if its stream then fails, they get the same in-band error event its client
got. If the leader fails before its first chunk, followers fall back to their own call.
The shared buffer is bounded (``MAX_SHARED_BYTES``): a stream that outgrows it stops taking new
followers, and keeps only what the followers already reading have not read yet; one that falls
that far behind the leader is dropped (``FollowerTimeout``, committed).

Everything here runs on one event loop; nothing is shared across threads.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Final, Generic, TypeVar

from edgeproxy.errors import EdgeProxyError

T = TypeVar("T")

# The most a stream's shared buffer holds (the cache's recording cap: a longer stream is not
# stored either).
MAX_SHARED_BYTES: Final = 8 * 1024 * 1024


class LeaderFailed(EdgeProxyError):
    """The leader produced nothing to share: the follower should make its own call."""


class FollowerTimeout(EdgeProxyError, TimeoutError):
    """A follower's own deadline passed while waiting for the leader.

    ``committed`` tells whether the follower had already yielded chunks (then it must end its
    response with an in-band error, like any stream cut after the commit point).
    """

    def __init__(self, committed: bool) -> None:
        super().__init__("the deadline passed while waiting for an identical request's answer")
        self.committed = committed


class FlightTable(Generic[T]):
    """In-flight leaders by key; a leader's entry lives from ``join`` until it finishes."""

    def __init__(self) -> None:
        self._flights: dict[bytes, T] = {}

    def get(self, key: bytes) -> T | None:
        return self._flights.get(key)

    def add(self, key: bytes, flight: T) -> None:
        self._flights[key] = flight

    def discard(self, key: bytes, flight: T) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)


class Flight:
    """One non-stream request's part in a single flight; use ``with`` so a leader always ends.

    Leader: ``publish(answer)`` after a successful call (or ``fail()``); leaving the ``with``
    block without publishing counts as failure. Follower: ``await wait(within)``.
    """

    def __init__(self, table: FlightTable[Flight] | None, key: bytes, shared: Flight | None):
        self._table = table
        self._key = key
        self.leader = shared is None
        self._shared = self if shared is None else shared
        self.followers = 0
        self._future: asyncio.Future[bytes] | None = (
            asyncio.get_running_loop().create_future() if self.leader else None
        )

    def publish(self, answer: bytes) -> None:
        """Leader: share the successful answer with every follower."""
        assert self.leader and self._future is not None
        if not self._future.done():
            self._future.set_result(answer)
        self._leave()

    def fail(self) -> None:
        """Leader: no answer to share; followers fall back to their own calls."""
        assert self.leader and self._future is not None
        if not self._future.done():
            self._future.set_exception(LeaderFailed())
            self._future.exception()  # mark retrieved: nobody may be waiting
        self._leave()

    async def wait(self, within: float) -> bytes:
        """Follower: the leader's answer. Raises ``LeaderFailed`` or ``FollowerTimeout``."""
        assert not self.leader
        future = self._shared._future
        assert future is not None
        try:
            async with asyncio.timeout(max(within, 0.0)):
                return await asyncio.shield(future)
        except TimeoutError:
            raise FollowerTimeout(committed=False) from None

    def _leave(self) -> None:
        if self._table is not None:
            self._table.discard(self._key, self)

    def __enter__(self) -> Flight:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.leader:
            self.fail()  # no-op when already published


class StreamBroadcast:
    """The leader's relayed SSE chunks, shared with followers that replay and follow them."""

    def __init__(
        self,
        table: FlightTable[StreamBroadcast] | None = None,
        key: bytes = b"",
        max_bytes: int = MAX_SHARED_BYTES,
    ):
        self._table = table
        self._key = key
        self._max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._base = 0  # the index, in the whole stream, of _chunks[0]
        self._held = 0  # bytes in _chunks
        self._cursors: dict[object, int] = {}  # each follower's next index in the whole stream
        self._sent_any = False  # the leader appended a chunk (followers are committed)
        self._closed = False
        self._failed_early = False
        self._changed = asyncio.Event()
        self.followers = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def held_bytes(self) -> int:
        """Bytes of the stream kept for followers (bounded by ``max_bytes``)."""
        return self._held

    def append(self, chunk: bytes) -> None:
        """Leader: one chunk written to its client (commits the followers too)."""
        if self._closed:
            raise RuntimeError("append after the broadcast ended")
        if not chunk:
            return
        self._sent_any = True
        self._chunks.append(chunk)
        self._held += len(chunk)
        if self._held > self._max_bytes:
            self._shrink()
        self._wake()

    def _shrink(self) -> None:
        """Over the bound: no new followers, and only what the current ones have yet to read
        is kept; a follower that is still too far behind is dropped."""
        self._detach()
        while self._chunks and (
            self._held > self._max_bytes or self._base < min(self._cursors.values(), default=0)
        ):
            self._held -= len(self._chunks.popleft())
            self._base += 1
        if not self._cursors:
            self._held = 0
            self._base += len(self._chunks)
            self._chunks.clear()

    def close(self) -> None:
        """Leader: its stream ended (cleanly, or after an in-band error it appended)."""
        self._end()

    def fail(self, error_chunk: bytes) -> None:
        """Leader: its stream broke. Before any chunk followers fall back to their own call;
        after, they get ``error_chunk`` (the in-band error event) and end."""
        if self._closed:
            return
        if self._sent_any:
            self._chunks.append(error_chunk)
        else:
            self._failed_early = True
        self._end()

    async def follow(self, within: float) -> AsyncIterator[bytes]:
        """Follower: every chunk from the start, live, until the leader ends.

        Raises ``LeaderFailed`` when the leader failed before its first chunk, and
        ``FollowerTimeout`` when ``within`` seconds pass before the leader ends (or when it
        falls more than ``max_bytes`` behind the leader).
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        if self._base > 0:  # the start is gone: it can only make its own call
            raise LeaderFailed()
        cursor = object()
        sent = self._cursors[cursor] = 0
        self.followers += 1
        try:
            while True:
                while sent < self._base + len(self._chunks):
                    if sent < self._base:  # dropped: it fell too far behind
                        raise FollowerTimeout(committed=True)
                    sent += 1
                    yield self._chunks[sent - 1 - self._base]
                    self._cursors[cursor] = sent
                if sent < self._base:
                    raise FollowerTimeout(committed=True)
                if self._closed:
                    if self._failed_early:
                        raise LeaderFailed()
                    return
                changed = self._changed
                try:
                    async with asyncio.timeout_at(end):
                        await changed.wait()
                except TimeoutError:
                    raise FollowerTimeout(committed=sent > 0) from None
        finally:
            self.followers -= 1
            del self._cursors[cursor]

    def _wake(self) -> None:
        # Swap the event so every waiter wakes once and the next wait blocks again.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _detach(self) -> None:
        if self._table is not None:
            self._table.discard(self._key, self)
            self._table = None

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake()
            self._detach()
