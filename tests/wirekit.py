"""Helpers for the wire-translation tests: golden transcripts, parsed events, chunked feeding."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from edgeproxy._core import SseParser

WIRE = Path(__file__).parent / "fixtures" / "wire"

OPENAI_STREAMS = ("openai_stream_text.sse", "openai_stream_tools.sse")
ANTHROPIC_STREAMS = ("anthropic_stream_text.sse", "anthropic_stream_tools.sse")


def fixture(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    data = orjson.loads(fixture(name))
    assert isinstance(data, dict)
    return data


def events(raw: bytes) -> list[tuple[str, Any]]:
    """(event type, decoded data) of every event; ``[DONE]`` stays a string."""
    parser = SseParser()
    out = []
    for ev in parser.feed(raw):
        out.append((ev.event, ev.data if ev.data == "[DONE]" else orjson.loads(ev.data)))
    assert not parser.pending, "stream ends mid-event"
    return out


def feed_chunks(feed: Callable[[bytes], bytes], raw: bytes, cuts: Iterable[int]) -> bytes:
    """Feed ``raw`` split at ``cuts`` (any order, duplicates allowed) and join the output."""
    out = []
    start = 0
    for end in [*sorted(cuts), len(raw)]:
        out.append(feed(raw[start:end]))
        start = end
    return b"".join(out)
