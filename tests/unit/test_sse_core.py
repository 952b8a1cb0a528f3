"""Example-based tests of the Rust SSE parser and encoder (edgeproxy._core)."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from edgeproxy import _core
from edgeproxy._core import EdgeProxyError, SseError, SseEvent, SseParser, encode_sse

OPENAI_STREAM = (
    b": keep-alive\r\n\r\n"
    + b"".join(
        b"data: "
        + json.dumps({"choices": [{"delta": {"content": piece}}]}, ensure_ascii=False).encode()
        + b"\r\n\r\n"
        for piece in ["Hel", "lo, ", "w\u00f6rld ", "\U0001f600"]
    )
    + b"data: [DONE]\r\n\r\n"
)


def contents(events: list[SseEvent]) -> list[str]:
    return [
        "[DONE]" if e.data == "[DONE]" else json.loads(e.data)["choices"][0]["delta"]["content"]
        for e in events
    ]


def feed_all(chunks: list[bytes], parser: SseParser | None = None) -> list[SseEvent]:
    parser = parser or SseParser()
    return [ev for chunk in chunks for ev in parser.feed(chunk)]


def test_openai_stream_in_one_chunk() -> None:
    events = SseParser().feed(OPENAI_STREAM)
    assert contents(events) == ["Hel", "lo, ", "w\u00f6rld ", "\U0001f600", "[DONE]"]
    assert all(e.event == "message" and e.id == "" and e.retry is None for e in events)


def test_openai_stream_split_inside_crlf_and_inside_utf8_char() -> None:
    crlf = OPENAI_STREAM.index(b"\r\n\r\n", OPENAI_STREAM.index(b"Hel")) + 1  # between CR and LF
    emoji = OPENAI_STREAM.index("\U0001f600".encode()) + 2  # inside the 4-byte char
    umlaut = OPENAI_STREAM.index("\u00f6".encode()) + 1  # inside the 2-byte char
    cuts = sorted([crlf, umlaut, emoji])
    chunks = [OPENAI_STREAM[a:b] for a, b in pairwise([0, *cuts, len(OPENAI_STREAM)])]
    assert chunks[0].endswith(b"\r") and chunks[1].startswith(b"\n")
    parser = SseParser()
    assert feed_all(chunks, parser) == SseParser().feed(OPENAI_STREAM)
    assert not parser.pending


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    # Were the LF after a chunk-final CR a second line end, "a" would be dispatched alone.
    parser = SseParser()
    events = feed_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], parser)
    assert events == [SseEvent("a\nb")]
    assert not parser.pending


def test_stream_cut_mid_event_is_not_dispatched() -> None:
    parser = SseParser()
    cut = OPENAI_STREAM.index(b"data: [DONE]") + 8
    events = parser.feed(OPENAI_STREAM[:cut])
    assert contents(events)[-1] == "\U0001f600"
    assert parser.pending
    # A complete data line without its blank line is still not an event.
    parser = SseParser()
    assert parser.feed(b"data: partial\n") == []
    assert parser.pending


def test_fields_ids_retry_and_comments() -> None:
    parser = SseParser()
    events = parser.feed(
        b"\xef\xbb\xbf: comment\n"
        b"event: delta\nid: 7\nretry: 1500\ndata: a\ndata:b\ndata\n\n"
        b"id: bad\x00id\nretry: 12x\nunknown: x\ndata: c\n\n"
    )
    assert events == [
        SseEvent("a\nb\n", event="delta", id="7", retry=1500),
        SseEvent("c", event="message", id="7", retry=None),
    ]
    assert parser.last_event_id == "7"
    assert parser.retry == 1500
    assert not parser.pending


def test_empty_data_is_not_dispatched() -> None:
    assert SseParser().feed(b"event: ping\n\nretry: 5\n\n") == []


def test_too_large_event_raises_sse_error() -> None:
    parser = SseParser(max_event_bytes=32)
    assert parser.max_event_bytes == 32
    with pytest.raises(SseError, match="limit of 32 bytes"):
        parser.feed(b"data: " + b"x" * 40)
    with pytest.raises(EdgeProxyError):  # stays failed
        parser.feed(b"\n\n")
    assert issubclass(SseError, EdgeProxyError)
    assert issubclass(EdgeProxyError, Exception)


def test_large_chunk_releases_gil_and_parses_the_same() -> None:
    stream = encode_sse("x" * 100) * 2000  # ~216 KB, parsed with the GIL released
    assert len(stream) >= 64 * 1024
    events = SseParser().feed(stream)
    assert len(events) == 2000
    assert events[0] == events[-1] == SseEvent("x" * 100)


def test_encode_sse() -> None:
    assert encode_sse("hi") == b"data: hi\n\n"
    assert encode_sse("a\nb\r\nc", event="delta") == b"event: delta\ndata: a\ndata: b\ndata: c\n\n"
    assert encode_sse("") == b"data: \n\n"
    assert encode_sse("x", event="a\nb") == b"event: ab\ndata: x\n\n"  # no field injection
    [ev] = SseParser().feed(encode_sse('{"k": "\u00e9"}', event="delta"))
    assert (ev.event, ev.data) == ("delta", '{"k": "\u00e9"}')


def test_sse_event_value_semantics() -> None:
    ev = SseEvent("d", event="e", id="1", retry=3)
    assert (ev.event, ev.data, ev.id, ev.retry) == ("e", "d", "1", 3)
    assert ev == SseEvent("d", event="e", id="1", retry=3)
    assert ev != SseEvent("d")
    assert hash(ev) == hash(SseEvent("d", event="e", id="1", retry=3))
    assert repr(SseEvent("it's")) == "SseEvent(event='message', data=\"it's\", id='', retry=None)"
    with pytest.raises(AttributeError):
        ev.data = "other"  # type: ignore[misc]


def test_module_metadata() -> None:
    assert isinstance(_core.__version__, str) and _core.__version__
    assert SseParser.__module__ == "edgeproxy._core"
    assert SseError.__module__ == "edgeproxy._core"
