"""Rust hot path of edgeproxy (built from rust/edgeproxy-py): SSE parsing and encoding."""

from typing import final

__all__ = ["EdgeProxyError", "SseError", "SseEvent", "SseParser", "__version__", "encode_sse"]

__version__: str
"""Version of the Rust crate (CARGO_PKG_VERSION)."""

class EdgeProxyError(Exception):
    """Root of edgeproxy's exception tree (Rust and Python errors alike)."""

class SseError(EdgeProxyError):
    """A Server-Sent Events stream could not be parsed (e.g. an event over the size limit)."""

@final
class SseEvent:
    """One dispatched Server-Sent Event (immutable, comparable, hashable)."""

    @property
    def event(self) -> str:
        """The event type: the block's last ``event`` field, ``"message"`` if none."""
    @property
    def data(self) -> str:
        """The ``data`` field values joined with ``"\\n"``."""
    @property
    def id(self) -> str:
        """The last event ID at dispatch (persists across events); ``""`` if none."""
    @property
    def retry(self) -> int | None:
        """Reconnection time (ms) from a ``retry`` field seen since the previous event."""
    def __new__(
        cls, data: str, event: str = "message", id: str = "", retry: int | None = None
    ) -> SseEvent:
        """Build an event by hand (tests, fakes); the parser builds them while parsing."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SseParser:
    """Incremental SSE parser following the WHATWG event-stream rules.

    Feed it network chunks in any split: the events are the same. An event not
    terminated by a blank line is never returned; ``pending`` tells that the stream
    ended mid-event. One line, or the data of one event, over ``max_event_bytes``
    raises ``SseError``, and every later ``feed`` raises it again.
    """

    def __new__(cls, max_event_bytes: int = 16777216) -> SseParser: ...
    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse one chunk; return the events it completed (GIL released for chunks >= 64 KiB)."""
    @property
    def pending(self) -> bool:
        """True when the stream so far ended mid-event (partial line or undispatched fields)."""
    @property
    def last_event_id(self) -> str:
        """The last event ID as of the last blank line (what a client sends as Last-Event-ID)."""
    @property
    def retry(self) -> int | None:
        """The reconnection time (ms) set by the last valid ``retry`` field, if any."""
    @property
    def max_event_bytes(self) -> int:
        """The size limit given at construction."""

def encode_sse(data: str, event: str | None = None) -> bytes:
    """Serialise one event: ``event: X`` when given, one ``data:`` line per line of ``data``.

    ``data`` is split on ``\\n``, ``\\r\\n`` and ``\\r``; CR/LF are dropped from ``event``.
    ``SseParser`` parses the result back to the same event (line ends become ``\\n``).
    """
