"""Stream translation does not depend on how the upstream's bytes were split (both directions)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy._core import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from wirekit import ANTHROPIC_STREAMS, OPENAI_STREAMS, events, feed_chunks, fixture

CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


def _o2a(raw: bytes, cuts: list[int]) -> tuple[list[tuple[str, object]], bool]:
    t = OpenAIToAnthropicStream(model="claude-alias")
    out = feed_chunks(t.feed, raw, [c % (len(raw) + 1) for c in cuts])
    tail, complete = t.finish()
    return events(out + tail), complete


def _a2o(raw: bytes, cuts: list[int]) -> tuple[list[tuple[str, object]], bool]:
    t = AnthropicToOpenAIStream(include_usage=True, created=1)
    out = feed_chunks(t.feed, raw, [c % (len(raw) + 1) for c in cuts])
    tail, complete = t.finish()
    return events(out + tail), complete


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(OPENAI_STREAMS), cuts=CUTS)
def test_openai_to_anthropic_any_split(name: str, cuts: list[int]) -> None:
    raw = fixture(name)
    assert _o2a(raw, cuts) == _o2a(raw, [])


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ANTHROPIC_STREAMS), cuts=CUTS)
def test_anthropic_to_openai_any_split(name: str, cuts: list[int]) -> None:
    raw = fixture(name)
    assert _a2o(raw, cuts) == _a2o(raw, [])


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(OPENAI_STREAMS), cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_openai_stream_never_completes(name: str, cut: int) -> None:
    raw = fixture(name)
    finish = raw.index(b'"finish_reason":"')
    prefix = raw[: cut % finish]
    got, complete = _o2a(prefix, [])
    assert not complete
    assert all(name != "message_stop" for name, _ in got)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ANTHROPIC_STREAMS), cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_anthropic_stream_never_says_done(name: str, cut: int) -> None:
    raw = fixture(name)
    stop = raw.index(b"event: message_stop")
    got, complete = _a2o(raw[: cut % stop], [])
    assert not complete
    assert ("message", "[DONE]") not in got
