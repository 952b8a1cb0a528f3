"""The access log line (JSON and text, what a client can put in it) and its batched writer."""

from __future__ import annotations

import io
import logging
import shlex
import sys
import threading
from collections.abc import Iterator

import orjson
import pytest

from edgeproxy.telemetry import access_log
from edgeproxy.telemetry.access_log import (
    FIELDS,
    AccessLogWriter,
    AccessValues,
    JsonLine,
    LoggingAccessLog,
    NoAccessLog,
    TextLine,
)
from edgeproxy.telemetry.escape import escape_controls, text_value
from edgeproxy.telemetry.logs import JsonFormatter, TextFormatter, configure_logging

CREATED = 1_764_921_600.25  # 2025-12-05T08:00:00.250Z


def values(model: str = "gpt-4o-mini", **changes: object) -> AccessValues:
    fields: dict[str, object] = {
        "request_id": "req_1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "route": "gpt-4o-mini",
        "model": model,
        "stream": True,
        "candidate": "alpha/eu-west/gpt-4o-mini",
        "attempts": 2,
        "attempt_outcomes": ["alpha/us-east/gpt-4o-mini=reset", "alpha/eu-west/gpt-4o-mini=ok"],
        "status": 200,
        "outcome": "ok",
        "error_type": None,
        "latency_ms": 412.3,
        "ttft_ms": 50.0,
        "input_tokens": 1000,
        "cached_tokens": 400,
        "output_tokens": 200,
        "cost_usd": 0.00024,
        "cache": "miss",
        "policy_version": "v1",
        "task": "extraction",
        "task_source": "rule",
        "auto": "challenger:alpha/eu-west/gpt-4o-mini",
        "cache_write_tokens": 0,
        "compacted": "150000->30000",
        "compaction": "trim_tool_results+drop_middle",
        "affinity": "home",
        "key": "ci-bot",
        "team": "search",
    }
    fields.update(changes)
    return tuple(fields[name] for name in FIELDS)


def record(vals: AccessValues) -> logging.LogRecord:
    rec = logging.LogRecord("edgeproxy.access", logging.INFO, "x", 1, "request", None, None)
    rec.created, rec.msecs = CREATED, 250.0
    for name, v in zip(FIELDS, vals, strict=True):
        setattr(rec, name, v)
    return rec


# -- the line ------------------------------------------------------------------------------------


def test_the_json_line_is_the_json_formatters_line() -> None:
    """Same keys, same order, same values as the logging route: tooling sees no difference."""
    vals = values()
    fast = orjson.loads(JsonLine()(CREATED, vals))
    slow = orjson.loads(JsonFormatter().format(record(vals)))
    assert list(fast) == list(slow) == ["ts", "level", "logger", "msg", *FIELDS]
    assert fast == slow
    assert fast["ts"] == "2025-12-05T08:00:00.250Z"


def test_the_text_line_is_the_text_formatters_line() -> None:
    vals = values()
    fast = TextLine()(CREATED, vals).decode()
    slow = TextFormatter().format(record(vals))
    assert fast == slow + "\n"
    assert " model=gpt-4o-mini " in fast
    assert (
        ' attempt_outcomes="alpha/us-east/gpt-4o-mini=reset,alpha/eu-west/gpt-4o-mini=ok" ' in fast
    )


@pytest.mark.parametrize(
    "model",
    [
        "x\nFORGED 08:00:00 INFO    edgeproxy.access: request status=200",
        "x\r\nFORGED",
        "x\u2028FORGED",
        "x\x1b[2Jclear",
        'x" status=500 y="',
        "x status=500",
        "",
    ],
)
def test_a_client_cannot_forge_a_text_line_or_a_field(model: str) -> None:
    for line in (
        TextLine()(CREATED, values(model)).decode(),
        TextFormatter().format(record(values(model))) + "\n",
    ):
        assert line.count("\n") == 1 and line.endswith("\n")
        assert "\r" not in line and "\u2028" not in line and "\x1b" not in line
        # Read back as key=value pairs (quotes and backslashes as a shell reads them): the same
        # fields, in order, and the forged ones stay inside the model's value.
        pairs = [t.partition("=") for t in shlex.split(line.split(": request ", 1)[1])]
        assert [k for k, _, _ in pairs] == list(FIELDS)
        fields = {k: v for k, _, v in pairs}
        assert fields["status"] == "200" and fields["outcome"] == "ok"
        assert escape_controls(model) == fields["model"]


def test_a_client_cannot_break_the_json_line() -> None:
    model = 'x\n{"level":"info"}\u2028"\\'
    for line in (JsonLine()(CREATED, values(model)), JsonFormatter().format(record(values(model)))):
        text = line.decode() if isinstance(line, bytes) else line
        assert text.rstrip("\n").count("\n") == 0
        assert orjson.loads(text)["model"] == model


def test_escaping_rules() -> None:
    assert escape_controls("plain") == "plain"
    assert escape_controls("a\nb\tc\x00d\x7f\x85\u2029") == "a\\nb\\tc\\x00d\\x7f\\x85\\u2029"
    assert text_value("a b") == '"a b"'
    assert text_value('q"x\\') == '"q\\"x\\\\"'
    assert text_value(None) == "None" and text_value(2.5) == "2.5" and text_value(True) == "True"
    assert text_value(["a=1", "b"]) == '"a=1,b"'


def test_a_traceback_line_cannot_pass_for_a_record() -> None:
    try:
        raise ValueError("bad model x\n08:00:00 INFO    edgeproxy.access: request forged")
    except ValueError:
        rec = logging.LogRecord("edgeproxy", logging.ERROR, "x", 1, "failed", None, sys.exc_info())
    text = TextFormatter().format(rec)
    first, *rest = text.split("\n")
    assert first.endswith("failed") and rest
    assert all(line.startswith("  ") for line in rest)


# -- the writer ----------------------------------------------------------------------------------


class Recording(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_the_writer_batches_and_a_close_writes_everything() -> None:
    stream = Recording()
    writer = AccessLogWriter(stream, "json", batch_lines=256, flush_seconds=60)
    for i in range(1000):
        writer.write(CREATED, values(request_id=f"req_{i}"))
    writer.close()
    lines = stream.getvalue().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"req_{i}" for i in range(1000)]
    assert stream.writes <= 1000 // 256 + 2  # batches, not a write per line
    writer.write(CREATED, values(request_id="late"))  # after close: written at once
    assert orjson.loads(stream.getvalue().splitlines()[-1])["request_id"] == "late"


def test_nothing_is_written_before_a_batch_or_the_interval() -> None:
    stream = Recording()
    writer = AccessLogWriter(stream, "text", batch_lines=256, flush_seconds=60)
    for _ in range(10):
        writer.write(CREATED, values())
    assert stream.writes == 0  # waiting for more lines (or the interval)
    writer.flush()
    assert len(stream.getvalue().splitlines()) == 10 and stream.writes == 1
    writer.close()


class Stuck(io.BytesIO):
    """A stream whose first write blocks until released (a full pipe, a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        return super().write(data)


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    stream = Stuck()
    writer = AccessLogWriter(stream, "json", queue_lines=8, batch_lines=1, flush_seconds=60)
    writer.write(CREATED, values(request_id="first"))  # the thread takes it and blocks
    assert stream.entered.wait(10)
    for i in range(20):
        writer.write(CREATED, values(request_id=f"r{i}"))  # never blocks
    assert writer.dropped == 12
    stream.release.set()
    writer.close()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    ids = [line.get("request_id") for line in lines]
    assert ids[:9] == ["first", *[f"r{i}" for i in range(8)]]
    assert lines[-1]["level"] == "warning"
    assert lines[-1]["msg"] == "12 access log lines dropped: the writer fell behind"


def test_a_broken_stream_loses_lines_not_the_caller() -> None:
    stream = io.BytesIO()
    stream.close()
    writer = AccessLogWriter(stream, "json")
    writer.write(CREATED, values())
    writer.close()  # no exception
    assert writer.written == 0


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    access_log.install(None)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_installs_the_writer_only_when_info_is_on() -> None:
    configure_logging("info", "json")
    sink = access_log.process_access_log()
    assert isinstance(sink, AccessLogWriter) and sink.enabled()
    configure_logging("warning", "json")
    assert not access_log.process_access_log().enabled()
    assert isinstance(access_log.process_access_log(), NoAccessLog)
    access_log.install(None)
    assert isinstance(access_log.process_access_log(), LoggingAccessLog)


def test_the_logging_route_carries_the_same_fields() -> None:
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            lines.append(rec)

    logger = logging.getLogger("edgeproxy.access")
    handler, old = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        sink = LoggingAccessLog()
        assert sink.enabled()
        sink.write(CREATED, values())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    (rec,) = lines
    assert rec.getMessage() == "request"
    assert {name: getattr(rec, name) for name in FIELDS} == dict(zip(FIELDS, values(), strict=True))
