"""The Rust stream scanner behind ``UpstreamStream`` against the Python relay it replaced.

``LegacyStream`` is the former ``UpstreamStream.read``/``_check`` (SSE parsing in Rust, then
``orjson.loads`` and ``encode_sse`` per event in Python), kept here verbatim as the reference.
Both are fed the same recorded streams in the same (and in random) splits; the bytes for the
client, the progress and the failures must be the same.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy._core import ChatStreamScanner, SseError, SseEvent, SseParser, encode_sse
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.upstream_stream import (
    DONE,
    StreamOptions,
    StreamProgress,
    UpstreamErrorEvent,
    UpstreamStream,
    add_usage,
    usage_is_valid,
)

_SUBSTANCE = ("content", "tool_calls", "function_call", "refusal", "reasoning_content")


class LegacyStream:
    """The Python per-event checking that ``ChatStreamScanner`` replaced (reference only)."""

    def __init__(self, options: StreamOptions | None = None) -> None:
        self.parser = SseParser()
        self.progress = StreamProgress()
        self.options = options or StreamOptions()

    def feed(self, chunk: bytes) -> bytes:
        try:
            events = self.parser.feed(chunk)
        except SseError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad SSE from upstream: {exc}") from None
        # The relay drops a failing chunk whole (its good events are never written), so the
        # progress is as it was before the chunk (copy.deepcopy: the text list is mutable).
        before = copy.deepcopy(self.progress)
        try:
            return b"".join(self._check(event) for event in events)
        except AttemptFailure:
            self.progress = before
            raise

    def _check(self, event: SseEvent) -> bytes:
        progress = self.progress
        if progress.done:
            return b""
        if event.data == DONE:
            progress.done = progress.started = True
            if progress.usage is None and self.options.count_usage is not None:
                return self._counted_usage() + encode_sse(DONE)
            return encode_sse(DONE)
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise AttemptFailure(
                FailureClass.MALFORMED, "upstream sent an event that is not JSON"
            ) from None
        if not isinstance(chunk, dict):
            raise AttemptFailure(
                FailureClass.MALFORMED, "upstream sent an event that is not an object"
            )
        if "error" in chunk:
            raise UpstreamErrorEvent(event.data)
        substance = False
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                if choice.get("index", 0) != 0:
                    progress.multiple_choices = True
                if choice.get("finish_reason"):
                    progress.finished = progress.started = substance = True
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    if any(delta.get(k) for k in _SUBSTANCE):
                        progress.started = substance = True
                    if delta.get("tool_calls") or delta.get("function_call"):
                        progress.tool_calls = True
                    content = delta.get("content")
                    if isinstance(content, str) and content and choice.get("index", 0) == 0:
                        progress.text.append(content)
        usage = chunk.get("usage")
        rewrite = self.options.continues is not None
        if isinstance(usage, dict) and usage:
            progress.started = True
            if usage_is_valid(usage):  # since issue 15: a malformed usage is not taken
                progress.usage = usage
            if self.options.prior_usage:
                chunk["usage"] = add_usage(usage, self.options.prior_usage)
                rewrite = True
        if progress.model is None and isinstance(chunk.get("model"), str):
            progress.model = chunk["model"]
        if progress.id is None and isinstance(chunk.get("id"), str):
            progress.id = chunk["id"]
        progress.events += 1
        if not rewrite:
            return encode_sse(event.data)
        original = self.options.continues
        if original is not None:
            if not (substance or usage):
                return b""
            if original.id is not None:
                chunk["id"] = original.id
        return encode_sse(orjson.dumps(chunk).decode())

    def _counted_usage(self) -> bytes:
        assert self.options.count_usage is not None
        counted = asyncio.run(self.options.count_usage(self.progress.text.kept or ""))
        self.progress.usage = counted
        usage = add_usage(counted, self.options.prior_usage or {})
        original = self.options.continues or self.progress
        chunk: dict[str, Any] = {
            "id": original.id,
            "object": "chat.completion.chunk",
            "model": original.model,
            "choices": [],
            "usage": usage,
        }
        return encode_sse(orjson.dumps(chunk).decode())


class _Response:
    """The network chunks of an upstream response, as UpstreamResponse.readany hands them out."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


Outcome = tuple[bytes, StreamProgress, tuple[str, str, str] | None]


def _failure(exc: AttemptFailure) -> tuple[str, str, str]:
    data = exc.data if isinstance(exc, UpstreamErrorEvent) else ""
    return (type(exc).__name__, str(exc), data)


def run_new(chunks: list[bytes], options: StreamOptions | None = None) -> Outcome:
    async def go() -> Outcome:
        stream = UpstreamStream(cast(Any, _Response(chunks)), options)
        out = b""
        try:
            while not stream.progress.done:
                data = await stream.read(5.0, FailureClass.IDLE_TIMEOUT)
                if data is None:
                    break
                out += data
        except AttemptFailure as exc:
            return out, stream.progress, _failure(exc)
        return out, stream.progress, None

    return asyncio.run(go())


def run_old(chunks: list[bytes], options: StreamOptions | None = None) -> Outcome:
    legacy = LegacyStream(options)
    out = b""
    try:
        for chunk in chunks:
            if legacy.progress.done:
                break
            out += legacy.feed(chunk)
    except AttemptFailure as exc:
        return out, legacy.progress, _failure(exc)
    return out, legacy.progress, None


def _summary(progress: StreamProgress) -> dict[str, Any]:
    # Text pieces are per event in the old code and per chunk now: compare the joined text.
    fields = dict(vars(progress))
    fields["text"] = progress.text.kept
    fields["resumable"] = progress.resumable
    return fields


def assert_same(chunks: list[bytes], options: StreamOptions | None = None) -> Outcome:
    new = run_new(chunks, options)
    old = run_old(chunks, options)
    assert new[0] == old[0]
    assert _summary(new[1]) == _summary(old[1])
    assert new[2] == old[2]
    return new


def splits(stream: bytes) -> list[list[bytes]]:
    """The stream whole, per event, and cut at a few awkward places."""
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    out = [[stream], events, [stream[i : i + 7] for i in range(0, len(stream), 7)]]
    mid = len(stream) // 2
    out.append([stream[:mid], stream[mid:]])
    return out


# ---- recorded streams (shaped like OpenAI's, as the simulator sends them) ----

CID, MODEL = "chatcmpl-abc", "gpt-sim"
SSE_DONE = b"data: [DONE]\n\n"
SSE_MALFORMED = b'data: {"choices": [ broken\n\n'


def _sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _usage_chunk(completion_id: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    }
    return _sse(
        {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 1,
            "model": MODEL,
            "choices": [],
            "usage": usage,
        }
    )


def _chunk(delta: dict[str, object], finish: str | None = None, usage: bool = False) -> bytes:
    chunk: dict[str, object] = {
        "id": CID,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "system_fingerprint": "fp_sim",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None  # OpenAI sends null on every chunk but the last
    return _sse(chunk)


def text_stream(words: list[str], usage: bool = False, done: bool = True) -> bytes:
    parts = [_chunk({"role": "assistant", "content": "", "refusal": None}, usage=usage)]
    parts += [_chunk({"content": w}, usage=usage) for w in words]
    parts.append(_chunk({}, "stop", usage=usage))
    if usage:
        parts.append(_usage_chunk(CID, 9, 4))
    if done:
        parts.append(SSE_DONE)
    return b"".join(parts)


def tool_stream() -> bytes:
    call = {"index": 0, "id": "call_1", "type": "function"}
    return b"".join(
        [
            _chunk({"role": "assistant", "content": None}),
            _chunk({"tool_calls": [{**call, "function": {"name": "get", "arguments": ""}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":1}'}}]}),
            _chunk({}, "tool_calls"),
            SSE_DONE,
        ]
    )


def n2_stream() -> bytes:
    def two(i: int, content: str, finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": CID,
                "object": "chat.completion.chunk",
                "model": MODEL,
                "choices": [{"index": i, "delta": {"content": content}, "finish_reason": finish}],
            }
        )

    return b"".join([two(0, "a"), two(1, "b"), two(0, "c", "stop"), two(1, "", "stop"), SSE_DONE])


WORDS = ["Hel", "lo", ", wor", "ld", " \u00e9\U0001f600", ' "q" \\ \n']
ERROR = b'data: {"error": {"message": "overloaded", "type": "server_error", "code": 529}}\n\n'

RECORDED = {
    "text": text_stream(WORDS),
    "text+usage": text_stream(WORDS, usage=True),
    "no-done": text_stream(WORDS, done=False),
    "tool-calls": tool_stream(),
    "n2": n2_stream(),
    "error-midstream": text_stream(WORDS[:2], done=False)[:-1] + b"\n" + ERROR,
    "malformed": _chunk({"content": "a"}) + SSE_MALFORMED + _chunk({"content": "b"}),
    "not-object": _chunk({"content": "a"}) + b"data: [1, 2]\n\n",
    "after-done": text_stream(WORDS) + b"data: not json\n\n" + _chunk({"content": "x"}),
    "crlf-comments": b": keepalive\r\nevent: x\r\n" + text_stream(WORDS).replace(b"\n", b"\r\n"),
    "role-only": _chunk({"role": "assistant", "content": ""}),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_streams_match_old_relay(name: str) -> None:
    for chunks in splits(RECORDED[name]):
        assert_same(chunks)


def test_recorded_stream_details() -> None:
    out, progress, failure = assert_same([RECORDED["text+usage"]])
    assert failure is None
    assert progress.done and progress.finished and progress.started and progress.resumable
    assert progress.text.kept == "".join(WORDS)
    assert progress.usage is not None and progress.usage["total_tokens"] == 13
    assert (progress.model, progress.id) == (MODEL, CID)
    assert out.endswith(b"data: [DONE]\n\n") and out.count(b"[DONE]") == 1
    _, progress, failure = assert_same([RECORDED["error-midstream"]])
    assert failure is not None and failure[0] == "UpstreamErrorEvent"
    assert failure[1] == "server_error: upstream sent an in-band error: 529"
    _, _, failure = assert_same([RECORDED["malformed"]])
    assert failure == ("AttemptFailure", "malformed: upstream sent an event that is not JSON", "")
    _, progress, _ = assert_same([RECORDED["tool-calls"]])
    assert progress.tool_calls and not progress.resumable
    _, progress, _ = assert_same([RECORDED["n2"]])
    assert progress.multiple_choices and progress.text.kept == "ac"


async def _counter(text: str) -> dict[str, int]:
    return {"prompt_tokens": 11, "completion_tokens": len(text)}


ORIGINAL = StreamProgress(id="chatcmpl-first", model="first-model", text=["Hel"])


@pytest.mark.parametrize(
    "options",
    [
        StreamOptions(count_usage=_counter),
        StreamOptions(continues=ORIGINAL),
        StreamOptions(continues=StreamProgress()),
        StreamOptions(
            continues=ORIGINAL, prior_usage={"prompt_tokens": 20, "completion_tokens": 3}
        ),
        StreamOptions(prior_usage={"prompt_tokens": 20, "completion_tokens": 3}),
        StreamOptions(prior_usage={"completion_tokens": 3}, count_usage=_counter),
        StreamOptions(continues=ORIGINAL, prior_usage={"prompt_tokens": 5}, count_usage=_counter),
        StreamOptions(prior_usage={}),
    ],
    ids=repr,
)
@pytest.mark.parametrize("name", ["text", "text+usage", "no-done", "tool-calls", "role-only"])
def test_options_match_old_relay(options: StreamOptions, name: str) -> None:
    for chunks in splits(RECORDED[name]):
        assert_same(chunks, options)


def test_continuation_rewrites_id_and_drops_role_chunk() -> None:
    options = StreamOptions(
        continues=ORIGINAL, prior_usage={"prompt_tokens": 20, "completion_tokens": 3}
    )
    out, progress, _ = assert_same([RECORDED["text+usage"]], options)
    events = [e.data for e in SseParser().feed(out)]
    assert events[-1] == DONE
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["id"] == "chatcmpl-first" for c in chunks)
    assert len(chunks) == len(WORDS) + 2  # words, finish, usage: no role chunk
    assert chunks[-1]["usage"]["prompt_tokens"] == 29
    assert chunks[-1]["usage"]["total_tokens"] == 29 + 7
    assert progress.id == CID  # this leg's own id, for telemetry
    assert progress.usage is not None and progress.usage["prompt_tokens"] == 9


def test_rewrite_keeps_json_meaning_for_odd_but_valid_events() -> None:
    # Whitespace, escapes and float spellings orjson would normalise: the same JSON, key order
    # kept, compact.
    data = '{ "id" : "x", "choices" : [ {"delta": {"content": "caf\\u00e9 \\/"}} ],\n "n": 1.50 }'
    event = b"data: " + data.replace("\n", "\ndata: ").encode() + b"\n\n"
    options = StreamOptions(continues=ORIGINAL)
    new = run_new([event], options)
    old = run_old([event], options)
    assert _summary(new[1]) == _summary(old[1])
    new_json = SseParser().feed(new[0])[0].data
    old_json = SseParser().feed(old[0])[0].data
    assert orjson.loads(new_json) == orjson.loads(old_json)
    assert list(orjson.loads(new_json)) == list(orjson.loads(old_json))
    assert "\n" not in new_json and " :" not in new_json


def test_python_truthiness_quirks() -> None:
    events = [
        {"choices": [{"index": False, "delta": {"content": "f"}}]},
        {"choices": [{"index": 0.0, "delta": {"content": "z"}}]},
        {"choices": [{"index": None, "delta": {"content": "n"}}]},
        {"choices": [{"delta": {"refusal": ""}, "finish_reason": 0}]},
        {"choices": "nope", "usage": []},
        {"choices": [1, None, {"delta": "x"}], "usage": {"prompt_tokens": True}},
        {"model": 5, "id": ["x"]},
        {"model": "m2", "id": "i2", "usage": 3},
    ]
    stream = b"".join(_sse(e) for e in events)
    for options in [
        None,
        StreamOptions(continues=ORIGINAL, prior_usage={"prompt_tokens": 1}),
        StreamOptions(continues=StreamProgress()),
    ]:
        for chunks in splits(stream):
            assert_same(chunks, options)


def test_sse_framing_error_is_malformed() -> None:
    huge = b"data: " + b"x" * (17 * 1024 * 1024)
    _, progress, failure = assert_same([_chunk({"content": "a"}) + huge])
    assert failure is not None and failure[1].startswith("malformed: bad SSE from upstream")
    assert progress.events == 0


def test_big_chunk_releases_the_gil_and_still_matches() -> None:
    words = [f"word{i} " for i in range(5000)]
    stream = text_stream(words, usage=True)
    assert len(stream) > 64 * 1024
    assert_same([stream])
    scan = ChatStreamScanner().feed(stream)
    assert scan.text == "".join(words) and scan.done and scan.events == len(words) + 3


def test_scanner_api() -> None:
    scanner = ChatStreamScanner(continuation=True, continuation_id="c", prior_usage=(1, 2))
    scan = scanner.feed(b'data: {"id": "x", "choices": [{"delta": {"content": "hi"}}]}\n\ndata: {')
    assert scan.out == b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert (scan.events, scan.text, scan.id, scan.model, scan.usage) == (1, "hi", "x", None, None)
    assert scanner.pending and not scanner.done
    scan = scanner.feed(b'"error": 1}\n\n')
    assert scan.error_event == '{"error": 1}' and scan.malformed is None
    assert "failure='error_event'" in repr(scan)
    # The failure sticks.
    assert scanner.feed(b"data: {}\n\n").error_event == '{"error": 1}'
    with pytest.raises(SseError):
        ChatStreamScanner(max_event_bytes=8).feed(b"data: 0123456789\n\n")


# ---- random streams, random splits ----

_EVENTS = st.one_of(
    st.builds(lambda t: _chunk({"content": t}), st.text(max_size=6)),
    st.builds(lambda t: _chunk({"role": "assistant", "content": t}), st.sampled_from(["", "x"])),
    st.just(_chunk({}, "stop")),
    st.just(_chunk({"tool_calls": [{"index": 0, "id": "t"}]})),
    st.builds(
        lambda i, t: _sse({"choices": [{"index": i, "delta": {"content": t}}]}),
        st.sampled_from([0, 1, None, False]),
        st.text(max_size=3),
    ),
    st.just(_usage_chunk("u", 2, 3)),
    st.sampled_from([SSE_DONE, SSE_MALFORMED, ERROR, b"data: 7\n\n", b": ping\n\n"]),
)

_OPTIONS = st.sampled_from(
    [
        None,
        StreamOptions(count_usage=_counter),
        StreamOptions(continues=ORIGINAL, prior_usage={"prompt_tokens": 4, "completion_tokens": 1}),
        StreamOptions(continues=StreamProgress(), count_usage=_counter),
        StreamOptions(prior_usage={"completion_tokens": 2}),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_EVENTS, max_size=12),
    cuts=st.lists(st.integers(min_value=0), max_size=5),
    options=_OPTIONS,
)
def test_random_streams_match_old_relay(
    events: list[bytes], cuts: list[int], options: StreamOptions | None
) -> None:
    stream = b"".join(events)
    points = sorted(c % (len(stream) + 1) for c in cuts)
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert_same([c for c in chunks if c], options)
