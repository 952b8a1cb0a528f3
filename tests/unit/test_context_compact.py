"""Compaction's pure parts: blocks, the strategies' plan, the compacted messages, the exact fit
and the error that says by how much (docs/context.md)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from edgeproxy import tokens
from edgeproxy.context.compact import (
    Summarised,
    TooLong,
    assemble,
    cut_text,
    fit,
    floor,
    parts,
    plan,
)
from edgeproxy.context.measure import measure
from edgeproxy.context.summary import fitted_transcript, summary_key, summary_request
from edgeproxy.context.turns import block_prefix_hashes, prefix_hash, split_blocks
from edgeproxy.snapshot import ContextSettings

ENC = "cl100k_base"


def call(i: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def result(i: int, words: int) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"c{i}", "content": " ".join(["word"] * words)}


def agent(rounds: int, words: int) -> dict[str, Any]:
    messages: list[Any] = [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "Do the task."},
    ]
    for i in range(rounds):
        messages += [call(i), result(i, words)]
    messages.append({"role": "user", "content": "Done?"})
    return {"model": "m", "messages": messages}


def settings(**kw: Any) -> ContextSettings:
    return ContextSettings(overflow="compact", **kw)


def test_blocks_keep_a_tool_call_with_all_its_results() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "developer", "content": "d"},
        {"role": "user", "content": "u"},
        {**call(0), "tool_calls": [*call(0)["tool_calls"], *call(1)["tool_calls"]]},
        result(0, 1),
        result(1, 1),
        {"role": "assistant", "content": "a"},
        {"role": "system", "content": "late system: not a leading one"},
        "not a message",
    ]
    kinds = [(b.start, b.end, b.kind) for b in split_blocks(messages)]
    assert kinds == [
        (0, 1, "system"),
        (1, 2, "system"),
        (2, 3, "user"),
        (3, 6, "tool_calls"),
        (6, 7, "assistant"),
        (7, 8, "other"),
        (8, 9, "other"),
    ]


def test_what_is_never_dropped() -> None:
    body = agent(6, 10)
    m = measure(body, ENC)
    where = parts(m, keep_last=2)
    # blocks: system, user, 6 tool rounds, last user; the last 2 blocks and both users kept.
    assert where.droppable == (2, 3, 4, 5, 6)
    assert where.summarisable == (2, 3, 4, 5, 6)
    # The last user message in the middle (an agent working after it) is kept, and splits
    # what may be summarised in place (a summary never moves history past it).
    body["messages"][-1:] = []
    body["messages"].insert(6, {"role": "user", "content": "and also"})
    where = parts(measure(body, ENC), keep_last=1)
    assert where.droppable == (2, 3, 5, 6, 7) and where.summarisable == (2, 3)


def test_strategies_run_in_order_and_only_while_needed() -> None:
    body = agent(8, 600)
    m = measure(body, ENC)
    # Enough room after trimming a few results: drop_middle never runs.
    layout = plan(m, settings(tool_result_max_tokens=100), m.total - 1200)
    assert layout.strategies == ("trim_tool_results",) and not layout.dropped
    assert sorted(layout.trims) == [3, 5, 7]  # the oldest results first, and only three
    # The other order: whole rounds go first.
    drop_first = settings(strategies=("drop_middle", "trim_tool_results"), step=1)
    layout = plan(m, drop_first, m.total - 1200)
    assert layout.strategies == ("drop_middle",) and layout.dropped == {2, 3, 4}
    # Nothing to do when it fits.
    assert plan(m, settings(), m.total).strategies == ()


def test_whole_steps_go_so_the_next_turns_keep_the_same_prefix() -> None:
    context = settings(strategies=("drop_middle",), keep_last=2, step=4)
    turns = [agent(rounds, 400) for rounds in range(10, 14)]
    limit = measure(turns[0], ENC).total - 500
    compacted = []
    for body in turns:
        result = fit(body, measure(body, ENC), context, limit)
        assert not isinstance(result, TooLong)
        assert len(result.layout.dropped) % 4 == 0
        compacted.append(result.body["messages"])
    # Each turn's compacted conversation starts with the one before it (minus its tail): the
    # provider's prompt cache reads it back.
    same_prefix = sum(
        later[: len(earlier) - 2] == earlier[:-2]
        for earlier, later in itertools.pairwise(compacted)
    )
    assert same_prefix >= 2


def test_fit_is_exact_and_never_over_the_limit() -> None:
    body = agent(12, 500)
    m = measure(body, ENC)
    for limit in (m.total - 1, m.total // 2, 1500, 900):
        result = fit(body, m, settings(keep_last=1, tool_result_max_tokens=64), limit)
        assert not isinstance(result, TooLong), limit
        assert result.tokens == tokens.count_chat(orjson.dumps(result.body), ENC).tokens
        assert result.tokens <= limit
        sent = result.body["messages"]
        assert sent[0] == body["messages"][0] and sent[-1] == body["messages"][-1]


def test_too_long_says_by_how_much() -> None:
    body = agent(3, 2000)
    m = measure(body, ENC)
    # Only trimming, and the tail (keep_last 3 blocks) holds two long results.
    result = fit(body, m, settings(strategies=("trim_tool_results",), keep_last=3), 100)
    assert isinstance(result, TooLong)
    assert result.limit == 100 and result.over == result.tokens - 100 > 0
    assert result.strategies == ("trim_tool_results",)
    least = floor(m, settings(strategies=("trim_tool_results",), keep_last=3), 100)
    assert least.tokens > 100


def test_notes_keep_turns_alternating() -> None:
    # user, assistant, user, assistant, user: dropping the middle puts two users side by side.
    body = {
        "messages": [
            {"role": "user", "content": "first " * 300},
            {"role": "assistant", "content": "a1 " * 300},
            {"role": "user", "content": [{"type": "text", "text": "second " * 300}]},
            {"role": "assistant", "content": "a2 " * 300},
            {"role": "user", "content": "last"},
        ]
    }
    m = measure(body, ENC)
    layout = plan(m, settings(strategies=("drop_middle",), keep_last=2, step=1), m.total - 400)
    assert layout.dropped == {1}
    out = assemble(m, layout)
    roles = [x["role"] for x in out]
    assert roles == ["user", "assistant", "user"]
    # The note and the next user message joined the first user message, in order.
    joined = out[0]["content"]
    assert joined[0]["text"].startswith("first") and "left out" in joined[0]["text"]
    assert joined[1]["text"].startswith("second") and len(joined) == 2


def test_a_summary_takes_the_place_of_the_oldest_rounds() -> None:
    body = agent(6, 300)
    m = measure(body, ENC)
    layout = plan(
        m, settings(strategies=("summarize",), summarizer="p/r/m"), 1200, summary_tokens=50
    )
    assert layout.summarised is not None and layout.summarised.start == 2
    with pytest.raises(ValueError):
        assemble(m, layout)  # the text is needed
    chosen = Summarised(layout.summarised.start, layout.summarised.end, 5, "They read files.")
    result = fit(body, m, settings(strategies=("summarize",), summarizer="p/r/m"), 1200, chosen)
    assert not isinstance(result, TooLong)
    first_user = result.body["messages"][1]["content"]
    assert first_user.startswith("Do the task.") and "They read files." in first_user


def test_cut_text_keeps_head_and_tail_on_hostile_text() -> None:
    for text in ("a" * 50_000, '🚀"\\\n\u0000' * 5_000, "x " * 20_000, "\ud800" + "b" * 9_000):
        out = cut_text(text, 200, ENC)
        assert out.startswith(text[:5]) and out.endswith(text[-5:])
        assert "edgeproxy cut" in out
        assert tokens.count(out, ENC) <= 200 + 40
    assert cut_text("short", 200, ENC) == "short"


def test_prefix_hashes_ignore_cache_marks_and_chain_over_blocks() -> None:
    body = agent(3, 5)
    marked = orjson.loads(orjson.dumps(body))
    marked["messages"][1]["content"] = [
        {"type": "text", "text": "Do the task.", "cache_control": {"type": "ephemeral"}}
    ]
    plain = orjson.loads(orjson.dumps(body))
    plain["messages"][1]["content"] = [{"type": "text", "text": "Do the task."}]
    assert prefix_hash(marked, 2) == prefix_hash(plain, 2) != prefix_hash(body, 2)
    blocks = split_blocks(body["messages"])
    hashes = block_prefix_hashes(body, blocks)
    assert len(hashes) == len(blocks) + 1 and len(set(hashes)) == len(hashes)
    assert hashes[2] == prefix_hash(body, 2)  # two blocks = the first two messages
    # Different tools, different history.
    assert prefix_hash({**body, "tools": [{"type": "function"}]}, 2) != prefix_hash(body, 2)


def test_summary_keys_are_scoped_by_summariser_and_tenant() -> None:
    prefix = prefix_hash(agent(1, 1), 3)
    keys = {
        summary_key(prefix, "p/r/m", "t1"),
        summary_key(prefix, "p/r/m", "t2"),
        summary_key(prefix, "p/r/other", "t1"),
    }
    assert len(keys) == 3 and all(len(k) == 16 for k in keys)


def test_the_summarisers_transcript_fits_its_window() -> None:
    messages = agent(10, 3000)["messages"][2:-1]
    request = summary_request(
        "mini", "Earlier: they began.", messages, max_tokens=100, window=4000, encoding=ENC
    )
    counted = tokens.count_chat(orjson.dumps(request), ENC).tokens
    assert counted + 100 <= 4000
    transcript = request["messages"][1]["content"]
    assert "Earlier: they began." in transcript and "calls f({})" in transcript
    assert fitted_transcript(["a " * 100] * 5, 10_000, ENC).count("a") == 500
