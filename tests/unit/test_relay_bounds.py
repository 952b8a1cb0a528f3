"""The relay's bounds against hostile upstreams, on the building blocks: counting an answer in
pieces is exact, the text kept for a resume stops at its cap, a malformed event after the commit
is skipped whatever the read boundaries, and the followers' broadcast never holds more than its
bound."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy import tokens
from edgeproxy.cache.singleflight import FollowerTimeout, LeaderFailed, StreamBroadcast
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.answer_text import (
    COUNT_PIECE_CHARS,
    MAX_RESUME_CHARS,
    AnswerText,
    split_point,
)
from edgeproxy.server.upstream_stream import UpstreamStream

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text shaped like answers: words, punctuation, digits, whitespace runs, non-Latin letters.
pieces = st.sampled_from(
    [" ", "  ", "\n", "\n\n", " the", "The", " word", "s", "'s", "'ll", ",", ".", " 123", "4567",
     " ünïcode", " 日本語", " Ωmega", "--", " (x)", "\t", " a", "I", " ", "😀", " don't", "x"]
)  # fmt: skip
answers = st.lists(pieces, min_size=1, max_size=300).map("".join)


@SETTINGS
@given(text=answers, look_back=st.integers(1, 64))
@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_counting_in_pieces_is_exact(encoding: str, text: str, look_back: int) -> None:
    """Cut where ``split_point`` says, the two counts add up to the count of the whole."""
    cut = split_point(text, look_back)
    whole = tokens.count(text, encoding)
    if cut < len(text):
        assert tokens.count(text[:cut], encoding) + tokens.count(text[cut:], encoding) == whole


def test_answer_text_is_bounded() -> None:
    text = AnswerText()
    word = "lorem ipsum " * 1000  # 12 000 characters
    counted = 0
    for _ in range(100):  # 1.2 M characters
        text.append(word)
        piece = text.take_piece()
        while piece is not None:
            counted += len(piece)
            piece = text.take_piece()
        assert len(text.uncounted()) < COUNT_PIECE_CHARS
    assert counted + len(text.uncounted()) == 100 * len(word) == text.chars
    assert not text.keeping and text.kept is None  # past MAX_RESUME_CHARS: no resume
    short = AnswerText()
    short.append("x" * MAX_RESUME_CHARS)
    assert short.kept == "x" * MAX_RESUME_CHARS
    short.stop_keeping()
    assert short.kept is None and bool(short)


# ---- skipping malformed events --------------------------------------------------------------------


def _event(content: str) -> bytes:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ROLE = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
FINISH = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
BAD = [b"data: {broken\n\n", b"data: [1, 2]\n\n", b"data: keep-alive\r\n\r\n", b"data: \xff{\n\n"]


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def _relay(chunks: list[bytes], allowed: int) -> tuple[bytes, str]:
    async def go() -> tuple[bytes, str]:
        stream = UpstreamStream(cast(Any, _Response(chunks)))
        stream.skips_allowed = allowed
        out = b""
        while not stream.progress.done:
            data = await stream.read(5.0, FailureClass.IDLE_TIMEOUT)
            if data is None:
                break
            out += data
        return out, stream.progress.text.kept or ""

    return asyncio.run(go())


def _cuts(data: bytes, positions: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in positions})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


@SETTINGS
@given(
    words=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=12),
    bad=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(BAD)), max_size=3),
    positions=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_malformed_events_are_skipped_whatever_the_reads(
    words: list[str], bad: list[tuple[int, bytes]], positions: list[int]
) -> None:
    """Up to the allowance, the client gets exactly the good events (plus a comment per read
    that had bad ones), and the answer's text is whole, however the bytes are split in reads."""
    good = [ROLE, *(_event(w) for w in words), FINISH, b"data: [DONE]\n\n"]
    stream = list(good)
    for index, event in sorted(bad, reverse=True):
        stream.insert(1 + min(index, len(words)), event)
    out, text = _relay(_cuts(b"".join(stream), positions), allowed=3)
    expected, _ = _relay([b"".join(good)], allowed=0)
    events = [line for line in out.split(b"\n\n") if line and not line.startswith(b":")]
    assert events == [line for line in expected.split(b"\n\n") if line]
    assert text == "".join(words)
    assert out.count(b": edgeproxy skipped") <= len(bad)


def test_one_malformed_event_too_many_fails() -> None:
    data = ROLE + _event("a") + b"".join(BAD) + _event("b") + FINISH
    with pytest.raises(AttemptFailure) as info:
        _relay([data], allowed=3)
    assert info.value.failure is FailureClass.MALFORMED and "4 events" in info.value.detail
    with pytest.raises(AttemptFailure):  # before the commit point nothing is skipped
        _relay([ROLE + BAD[0] + FINISH], allowed=0)
    # Garbage after [DONE] is not part of the answer: not checked, not counted.
    after_done = ROLE + _event("a") + BAD[0] + FINISH + b"data: [DONE]\n\n" + b"".join(BAD)
    out, text = _relay([after_done], allowed=1)
    assert text == "a" and out.endswith(b"data: [DONE]\n\n")


# ---- the followers' broadcast ---------------------------------------------------------------------


async def test_a_broadcast_keeps_no_more_than_its_bound() -> None:
    broadcast = StreamBroadcast(max_bytes=100)
    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in broadcast.follow(5.0):
            got.append(chunk)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    for i in range(1000):
        broadcast.append(b"%04d......" % i)  # 10 bytes
        assert broadcast.held_bytes <= 100
        await asyncio.sleep(0)  # the follower keeps up
    broadcast.close()
    await follower
    assert got == [b"%04d......" % i for i in range(1000)]
    with pytest.raises(LeaderFailed):  # the start is gone: a newcomer makes its own call
        async for _ in broadcast.follow(1.0):
            pass


async def test_a_follower_that_falls_too_far_behind_is_dropped() -> None:
    broadcast = StreamBroadcast(max_bytes=100)
    broadcast.append(b"x" * 10)
    stalled = broadcast.follow(5.0)
    assert await stalled.__anext__() == b"x" * 10  # then its client stops reading
    for _ in range(50):
        broadcast.append(b"y" * 10)
        assert broadcast.held_bytes <= 100
    with pytest.raises(FollowerTimeout) as info:
        await stalled.__anext__()
    assert info.value.committed
    broadcast.close()
