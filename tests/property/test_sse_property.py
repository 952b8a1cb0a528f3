"""Property tests: the Rust SSE parser against a tiny pure-Python WHATWG reference.

The reference below is written straight from the HTML standard's "event stream
interpretation" section and deliberately shares no code with the Rust parser: it
decodes the whole stream at once and splits it with a regex, where the Rust
parser works on raw bytes, chunk by chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy._core import SseEvent, SseParser, encode_sse

BOM = b"\xef\xbb\xbf"
U64_MAX = 2**64 - 1

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Ev = tuple[str, str, str, int | None]  # (event, data, id, retry)


@dataclass
class RefResult:
    events: list[Ev]
    pending: bool
    last_event_id: str
    retry: int | None


def reference(stream: bytes) -> RefResult:
    """Parse a complete byte stream by the WHATWG rules (the stream may end mid-event)."""
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    text = stream.decode("utf-8", errors="replace")
    *lines, partial = re.split(r"\r\n|\r|\n", text)
    events: list[Ev] = []
    data = event_type = id_buffer = last_event_id = ""
    retry: int | None = None
    retry_for_next_event: int | None = None
    for line in lines:
        if line == "":  # dispatch
            last_event_id = id_buffer
            if data == "":
                event_type = ""
                continue
            data = data.removesuffix("\n")
            events.append((event_type or "message", data, last_event_id, retry_for_next_event))
            retry_for_next_event = None
            data = event_type = ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = retry_for_next_event = min(int(value), U64_MAX)
    pending = bool(partial or data or event_type or id_buffer != last_event_id)
    return RefResult(events, pending, last_event_id, retry)


def as_tuples(events: list[SseEvent]) -> list[Ev]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


def run_rust(chunks: list[bytes]) -> RefResult:
    parser = SseParser()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return RefResult(as_tuples(events), parser.pending, parser.last_event_id, parser.retry)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


# ---- stream grammar -------------------------------------------------------------------

EOL = st.sampled_from([b"\n", b"\r", b"\r\n"])
FIELD_NAME = st.one_of(
    st.sampled_from([b"data", b"data", b"event", b"id", b"retry", b"dat", b"Data", b""]),
    st.binary(max_size=3),
)
VALUE = st.one_of(
    st.text(max_size=10).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.lists(
        st.sampled_from(
            [b" ", b":", b"\x00", b"7", b"42", b"x", b"\xc3", b"\xa9", b"\xff", b"\xef"]
        ),
        max_size=6,
    ).map(b"".join),
)
SEP = st.sampled_from([b":", b": ", b":  ", b""])
FIELD_LINE = st.builds(lambda n, s, v: n + s + v, FIELD_NAME, SEP, VALUE)
COMMENT = st.text(max_size=8).map(lambda s: b":" + s.encode("utf-8", "surrogatepass"))
LINE = st.one_of(FIELD_LINE, FIELD_LINE, st.just(b""), st.just(b""), COMMENT).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
)


@st.composite
def grammar_streams(draw: st.DrawFn) -> bytes:
    out = BOM if draw(st.booleans()) else b""
    for line in draw(st.lists(LINE, max_size=20)):
        out += line + draw(EOL)
    return out + draw(st.binary(max_size=4))  # maybe an unterminated tail


TOKEN_SOUP = st.lists(
    st.sampled_from(
        [
            b"\r",
            b"\n",
            b"\r\n",
            b"data",
            b"event",
            b"id",
            b"retry",
            b":",
            b" ",
            b"x",
            b"1",
            b"\x00",
            BOM,
            b"\xc3",
            b"\xa9",
            b"\xf0\x9f\x98\x80",
        ]
    ),
    max_size=40,
).map(b"".join)

STREAMS = st.one_of(grammar_streams(), grammar_streams(), TOKEN_SOUP, st.binary(max_size=64))
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


# ---- properties -----------------------------------------------------------------------


@SETTINGS
@given(stream=STREAMS)
def test_rust_parser_matches_reference(stream: bytes) -> None:
    assert run_rust([stream]) == reference(stream)


@SETTINGS
@given(stream=STREAMS, cuts=CUTS)
def test_any_split_gives_same_events(stream: bytes, cuts: list[int]) -> None:
    expected = reference(stream)
    assert run_rust(split(stream, cuts)) == expected
    # The cuts that matter most: between a CR and the LF that may follow it, and at
    # every byte of a multi-byte UTF-8 sequence (hard to hit by chance).
    after_each_cr = [i + 1 for i, b in enumerate(stream) if b == 0x0D]
    assert run_rust(split(stream, after_each_cr)) == expected
    inside_utf8 = [i for i, b in enumerate(stream) if b >= 0x80]
    assert run_rust(split(stream, inside_utf8)) == expected


@settings(max_examples=50, deadline=None)
@given(stream=grammar_streams())
def test_byte_at_a_time(stream: bytes) -> None:
    assert run_rust([stream[i : i + 1] for i in range(len(stream))]) == reference(stream)


NO_NEWLINE_TEXT = st.text(max_size=12).filter(lambda s: "\r" not in s and "\n" not in s)


@SETTINGS
@given(data=st.text(max_size=40), event=st.none() | st.text(max_size=12))
def test_encode_round_trip(data: str, event: str | None) -> None:
    encoded = encode_sse(data, event)
    assert isinstance(encoded, bytes)
    parser = SseParser()
    [ev] = parser.feed(encoded)
    expected_event = (event or "").replace("\r", "").replace("\n", "") or "message"
    assert ev.event == expected_event
    assert ev.data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert not parser.pending
    assert reference(encoded).events == [(ev.event, ev.data, "", None)]


@SETTINGS
@given(
    complete=st.lists(st.tuples(st.text(max_size=20), st.none() | NO_NEWLINE_TEXT), max_size=4),
    last_data=st.text(max_size=20),
    last_event=st.none() | NO_NEWLINE_TEXT.filter(bool),
    cut=st.integers(min_value=1),
    cuts=CUTS,
)
def test_unterminated_final_event_is_not_dispatched(
    complete: list[tuple[str, str | None]],
    last_data: str,
    last_event: str | None,
    cut: int,
    cuts: list[int],
) -> None:
    prefix = b"".join(encode_sse(d, e) for d, e in complete)
    last = encode_sse(last_data, last_event)
    truncated = prefix + last[: cut % len(last) or 1]  # 1 .. len-1 bytes of the last event
    result = run_rust(split(truncated, cuts))
    assert result.events == as_tuples(SseParser().feed(prefix))
    assert len(result.events) == len(complete)
    assert result.pending is True
    assert result == reference(truncated)
