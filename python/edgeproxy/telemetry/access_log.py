"""The access log: one line per request, cheap to make and written off the event loop.

``RequestTelemetry.finish`` hands a sink the request's fields as one tuple, in ``FIELDS`` order
(no dict, no ``LogRecord``). Two sinks:

- ``AccessLogWriter`` (what ``edgeproxy serve`` installs through ``logs.configure_logging``):
  renders the line on the loop with a precompiled layout (``orjson`` for the values only) and
  queues the bytes; a background thread writes them in batches (when 256 lines are waiting, or
  every 100 ms). The queue is bounded: when the writer falls behind, new lines are dropped and
  counted (``dropped``, the ``edgeproxy.access_log.dropped`` metric, and a warning line in the
  log itself once it catches up) instead of blocking the loop or growing without end.
  ``flush()``/``close()`` drain it, and ``close`` runs at exit: a clean stop loses nothing.
- ``LoggingAccessLog``: the standard ``logging`` route (logger ``edgeproxy.access``, the
  fields as ``extra``), for a process that did not configure the writer (the tests, a library
  user). Same fields; ~10x the cost.

The line is the one ``logs.JsonFormatter``/``TextFormatter`` would print for the same record
(``ts``, ``level``, ``logger``, ``msg``, then the fields), so log tooling sees no difference. In
the text format control characters are escaped (a newline in a client's ``model`` cannot forge a
line); in JSON ``orjson`` escapes them. The fields a client writes (``model``, a
``request_id`` it sent) come redacted (the listener redacts them once, for spans and log alike);
the others are ids, policy names, numbers and fixed words.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

import orjson

from edgeproxy.telemetry.escape import escape_controls, needs_quoting, text_value

LOGGER = "edgeproxy.access"
MESSAGE = "request"

# The documented fields (docs/observability.md, "Access log"), in line order.
FIELDS: tuple[str, ...] = (
    "request_id",
    "trace_id",
    "route",
    "model",
    "stream",
    "candidate",
    "attempts",
    "attempt_outcomes",
    "status",
    "outcome",
    "error_type",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost_usd",
    "cache",
    "policy_version",
    "task",
    "task_source",
    "auto",
    "cache_write_tokens",
    "compacted",
    "compaction",
    "affinity",
    "key",
    "team",
)

# One request's values in FIELDS order (str, int, float, bool, None, or a list of str).
AccessValues = tuple[object, ...]

QUEUE_LINES = 8192  # lines waiting for the writer before new ones are dropped (~3 MB)
BATCH_LINES = 256  # wake the writer when this many are waiting
FLUSH_SECONDS = 0.1  # otherwise it writes what is waiting this often


class AccessLog(Protocol):
    def enabled(self) -> bool:
        """Whether a line would be written (the listener skips building it otherwise)."""
        ...

    def write(self, created: float, values: AccessValues) -> None:
        """One request's line; ``created`` is its wall-clock time (``time.time()``)."""
        ...

    def flush(self) -> None:
        """Write out whatever is waiting (at a clean stop)."""
        ...


# -- rendering -----------------------------------------------------------------------------------

_JSON_KEYS = tuple(f',"{name}":'.encode() for name in FIELDS)
_JSON_HEAD = (
    b'","level":"info","logger":"' + LOGGER.encode() + b'","msg":"' + MESSAGE.encode() + b'"'
)


class _Clock:
    """The timestamp's second part, formatted once per second (strftime costs ~1.5 µs)."""

    __slots__ = ("_pattern", "_second", "_text", "_utc")

    def __init__(self, utc: bool, pattern: str) -> None:
        self._utc = utc
        self._pattern = pattern
        self._second = -1
        self._text = ""

    def second(self, created: float) -> str:
        whole = int(created)
        if whole != self._second:
            t = time.gmtime(whole) if self._utc else time.localtime(whole)
            self._text = time.strftime(self._pattern, t)
            self._second = whole
        return self._text


class JsonLine:
    """``logs.JsonFormatter``'s line for an access record, without the record."""

    def __init__(self) -> None:
        self._clock = _Clock(True, "%Y-%m-%dT%H:%M:%S")

    def __call__(self, created: float, values: AccessValues) -> bytes:
        ms = int((created % 1) * 1000)
        parts = [
            b'{"ts":"',
            f"{self._clock.second(created)}.{ms:03d}Z".encode(),
            _JSON_HEAD,
        ]
        dumps = orjson.dumps
        for key, value in zip(_JSON_KEYS, values, strict=True):
            parts.append(key)
            parts.append(dumps(value))
        parts.append(b"}\n")
        return b"".join(parts)


_TEXT_TEMPLATE = (
    f" INFO    {LOGGER}: {MESSAGE} " + " ".join(f"{name}={{}}" for name in FIELDS) + "\n"
)
# The fields whose values are text (or None); the others are numbers, booleans or None, whose
# str() never needs quoting. ``attempt_outcomes`` (a list) is always quoted.
_TEXT_FIELDS = tuple(i for i, name in enumerate(FIELDS) if name in (
    "request_id", "trace_id", "route", "model", "candidate", "outcome", "error_type", "cache",
    "policy_version", "task", "task_source", "auto",
))  # fmt: skip
_OUTCOMES = FIELDS.index("attempt_outcomes")


class TextLine:
    """``logs.TextFormatter``'s line for an access record: ``key=value`` pairs, control
    characters escaped and values with spaces, quotes or ``=`` quoted."""

    def __init__(self) -> None:
        self._clock = _Clock(False, "%H:%M:%S")

    def __call__(self, created: float, values: AccessValues) -> bytes:
        fields = list(values)
        for i in _TEXT_FIELDS:
            value = fields[i]
            if value is not None and (not value or needs_quoting(value)):  # type: ignore[arg-type]
                fields[i] = text_value(value)
        fields[_OUTCOMES] = text_value(values[_OUTCOMES])
        line = self._clock.second(created) + _TEXT_TEMPLATE.format(*fields)
        return line.encode(errors="backslashreplace")


def render(fmt: str) -> Callable[[float, AccessValues], bytes]:
    return JsonLine() if fmt == "json" else TextLine()


# -- sinks ---------------------------------------------------------------------------------------


class AccessLogWriter:
    """Renders lines on the caller's thread, writes them in batches from a daemon thread.

    ``write`` never blocks: a full queue drops the line and counts it."""

    def __init__(
        self,
        stream: IO[bytes],
        fmt: str = "json",
        *,
        queue_lines: int = QUEUE_LINES,
        batch_lines: int = BATCH_LINES,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._stream = stream
        self._render = render(fmt)
        self._fmt = fmt
        self._queue: deque[bytes] = deque()
        self._capacity = queue_lines
        self._batch = batch_lines
        self._interval = flush_seconds
        self._wake = threading.Event()
        self._io = threading.Lock()  # one writer of the stream at a time (thread, flush, close)
        self._closed = False
        self.dropped = 0
        self._reported = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="edgeproxy-access-log", daemon=True)
        self._thread.start()

    def enabled(self) -> bool:
        return True

    def write(self, created: float, values: AccessValues) -> None:
        line = self._render(created, values)
        queue = self._queue
        if self._closed:  # after close (a request finishing late in a stop): write it now
            queue.append(line)
            self.flush()
            return
        if len(queue) >= self._capacity:
            self.dropped += 1
            return
        queue.append(line)
        if len(queue) == self._batch:
            self._wake.set()

    def flush(self) -> None:
        with self._io:
            self._drain()

    def close(self) -> None:
        """Stop the thread and write everything that is waiting (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait(self._interval)
            wake.clear()
            with self._io:
                self._drain()

    def _drain(self) -> None:
        queue = self._queue
        lines: list[bytes] = []
        pop = queue.popleft
        while queue:
            lines.append(pop())
        dropped = self.dropped - self._reported
        if dropped:
            self._reported += dropped
            lines.append(self._dropped_line(dropped))
        if not lines:
            return
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the lines are lost, not the loop
            return
        self.written += len(lines)

    def _dropped_line(self, count: int) -> bytes:
        message = f"{count} access log lines dropped: the writer fell behind"
        created = time.time()
        if self._fmt == "json":
            ms = int((created % 1) * 1000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"
            line = {"ts": stamp, "level": "warning", "logger": LOGGER, "msg": message}
            return orjson.dumps(line) + b"\n"
        stamp = time.strftime("%H:%M:%S", time.localtime(created))
        return f"{stamp} WARNING {LOGGER}: {escape_controls(message)}\n".encode()


class LoggingAccessLog:
    """Through the ``logging`` module: for processes that did not install a writer."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(LOGGER)

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, created: float, values: AccessValues) -> None:
        self._logger.info(MESSAGE, extra=dict(zip(FIELDS, values, strict=True)))

    def flush(self) -> None:
        pass


class NoAccessLog:
    """The access log is off (``--log-level warning`` or above)."""

    def enabled(self) -> bool:
        return False

    def write(self, created: float, values: AccessValues) -> None:
        pass

    def flush(self) -> None:
        pass


_installed: AccessLog | None = None


def install(sink: AccessLog | None) -> None:
    """Make ``sink`` the process's access log (``logs.configure_logging`` does this); a writer
    is closed at exit, so its last lines are written. ``None``: back to ``LoggingAccessLog``."""
    global _installed
    previous, _installed = _installed, sink
    if isinstance(previous, AccessLogWriter) and previous is not sink:
        previous.close()
    if isinstance(sink, AccessLogWriter):
        atexit.register(sink.close)


def process_access_log() -> AccessLog:
    """The installed sink, else the ``logging`` route."""
    return _installed if _installed is not None else LoggingAccessLog()
