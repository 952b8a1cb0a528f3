"""Compaction's promises hold for any conversation, strategy order and limit (hypothesis): the
result is counted exactly and never over the limit; the system prompt is untouched; the last
user message survives; a tool call never loses its result nor a result its call; no user turn
follows another where the client had none; or it says it cannot, and by how much."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy import tokens
from edgeproxy.context.compact import TooLong, fit, floor
from edgeproxy.context.measure import measure
from edgeproxy.snapshot import ContextSettings

ENC = "cl100k_base"
words = st.lists(st.sampled_from(["alpha", "beta", "🚀", "x\ny", '"q"', "delta"]), max_size=300)


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[Any] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": " ".join(draw(words))})
    messages.append({"role": "user", "content": "task " + " ".join(draw(words))})
    n = 0
    for kind in draw(st.lists(st.sampled_from(["user", "assistant", "tools"]), max_size=12)):
        if kind == "tools":
            ids = [f"c{n + i}" for i in range(draw(st.integers(1, 3)))]
            n += len(ids)
            calls = [
                {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                for i in ids
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            for i in ids:
                size = draw(st.integers(0, 4000))
                messages.append({"role": "tool", "tool_call_id": i, "content": "w " * size})
        else:
            messages.append({"role": kind, "content": kind + " " + " ".join(draw(words))})
    messages.append({"role": "user", "content": "last question " + " ".join(draw(words))})
    return {"model": "m", "messages": messages}


strategy_orders = st.permutations(["trim_tool_results", "drop_middle"]).flatmap(
    lambda order: st.integers(1, 2).map(lambda k: tuple(order[:k]))
)


def _text(message: Any) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content)
    return content or ""


@settings(max_examples=80, deadline=None)
@given(
    conversations(),
    strategy_orders,
    st.integers(1, 4),
    st.integers(64, 512),
    st.floats(0.3, 1),
    st.integers(1, 8),
)
def test_compaction_keeps_its_promises(
    body: dict[str, Any],
    order: tuple[Any, ...],
    keep_last: int,
    trim_to: int,
    share: float,
    step: int,
) -> None:
    context = ContextSettings(
        overflow="compact",
        strategies=order,
        keep_last=keep_last,
        tool_result_max_tokens=trim_to,
        step=step,
    )
    m = measure(body, ENC)
    limit = max(int(m.total * share), 1)
    result = fit(body, m, context, limit)
    if isinstance(result, TooLong):
        assert result.over > 0 and result.limit == limit
        assert floor(m, context, limit).tokens > limit or result.tokens > limit
        return
    sent = result.body["messages"]
    assert result.tokens == tokens.count_chat(orjson.dumps(result.body), ENC).tokens <= limit
    original = body["messages"]
    if original[0]["role"] == "system":
        assert sent[0] == original[0]
    users = [m for m in sent if m["role"] == "user"]
    assert _text(users[-1]).endswith(original[-1]["content"])
    assert _text(users[0]).startswith(
        original[1 if original[0]["role"] == "system" else 0]["content"]
    )
    open_calls: set[str] = set()
    for message in sent:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls
            open_calls.discard(message["tool_call_id"])
            continue
        assert not open_calls
        open_calls = {c["id"] for c in message.get("tool_calls") or []}
    assert not open_calls
    # Compaction never puts two user turns side by side where the client had none.
    assert _user_pairs(sent) <= _user_pairs(original)


def _user_pairs(messages: list[Any]) -> int:
    roles = [m["role"] for m in messages]
    return sum(a == b == "user" for a, b in itertools.pairwise(roles))
