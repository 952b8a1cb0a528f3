"""Compaction: a conversation made to fit a context window, strategy by strategy.

``plan`` decides, from the measured tokens alone, what each strategy does (in the route's order,
each only while the conversation is still over the limit); ``assemble`` builds the compacted
messages; ``fit`` does both and counts the result whole, exactly, tightening its own limit by
what the prediction missed until the result fits (or says by how much it cannot).

What is never touched: the leading system messages, the first user message, the last user
message and the last ``keep_last`` blocks; a tool call and its results are one block (dropped or
summarised together, never apart). What is said about a cut, in the conversation itself:

- ``trim_tool_results``: a tool result longer than ``tool_result_max_tokens`` keeps its head and
  tail, with ``[... edgeproxy cut N of M tokens from this tool result ...]`` between them;
- ``drop_middle`` / ``summarize``: the blocks after the first user message go, oldest first,
  ``step`` at a time (the turns that follow then share the compacted prefix, so the provider's
  prompt cache keeps serving it); a note (or the summary) takes their place, appended to the user message before them so that
  user and assistant turns still alternate (strict chat templates refuse two user turns in a
  row; a user message that would follow the note is joined to it for the same reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edgeproxy.context.measure import Measured, count_body, count_text
from edgeproxy.snapshot import ContextSettings, Strategy

# What a marker (or the summary's framing) costs at most, for planning; the result is counted.
MARKER_TOKENS: Final = 40
MAX_TIGHTENING: Final = 4  # re-plans with a tighter limit before giving up


def trim_note(cut: int, total: int) -> str:
    return (
        f"\n[... edgeproxy cut {cut} of {total} tokens from this tool result to fit the "
        "model's context window ...]\n"
    )


def drop_note(messages: int, tokens: int) -> str:
    return (
        f"[edgeproxy: {messages} earlier message(s) ({tokens} tokens) were left out here to fit "
        "this model's context window.]"
    )


def summary_note(messages: int, tokens: int, summary: str) -> str:
    return (
        f"[edgeproxy: a summary of {messages} earlier message(s) ({tokens} tokens), written to "
        f"fit this model's context window:]\n{summary}"
    )


@dataclass(frozen=True, slots=True)
class Summarised:
    """Blocks ``[start, end)`` replaced by a summary of ``tokens`` tokens (its text once known)."""

    start: int
    end: int
    tokens: int
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """What the strategies do to one conversation."""

    trims: Mapping[int, int] = field(default_factory=dict)  # message index -> tokens kept
    summarised: Summarised | None = None
    dropped: frozenset[int] = frozenset()  # block indexes
    tokens: int = 0  # the prompt's predicted tokens afterwards
    strategies: tuple[Strategy, ...] = ()  # the ones that changed something, in order


@dataclass(frozen=True, slots=True)
class Parts:
    """Where a conversation may be cut."""

    droppable: tuple[int, ...]  # block indexes, oldest first
    summarisable: tuple[int, ...]  # the contiguous run after the first user message


def parts(measured: Measured, keep_last: int) -> Parts:
    blocks = measured.blocks
    users = [i for i, b in enumerate(blocks) if b.kind == "user"]
    if not users:
        return Parts((), ())
    first, last = users[0], users[-1]
    tail = max(len(blocks) - keep_last, 0)
    droppable = tuple(i for i in range(first + 1, tail) if i != last)
    run: list[int] = []
    for i in droppable:
        if run and i != run[-1] + 1:
            break
        if not run and i != first + 1:
            break
        run.append(i)
    return Parts(droppable, tuple(run))


def _is_tool(message: Any) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "tool"


def plan(
    measured: Measured,
    settings: ContextSettings,
    limit: int,
    *,
    summary_tokens: int | None = None,
    summary: Summarised | None = None,
) -> Layout:
    """What the route's strategies do to fit ``limit`` prompt tokens. ``summary_tokens``: the
    summary's size when one can be asked for (None: ``summarize`` is skipped); ``summary``: one
    already written for a range (the range is kept as it is)."""
    tokens = list(measured.message_tokens)
    current = measured.total
    if current <= limit:
        return Layout(tokens=current)
    where = parts(measured, settings.keep_last)
    blocks, messages = measured.blocks, measured.messages
    trims: dict[int, int] = {}
    dropped: set[int] = set()
    summarised: Summarised | None = None
    ran: list[Strategy] = []

    def gone(bi: int) -> bool:
        return bi in dropped or (summarised is not None and summarised.start <= bi < summarised.end)

    def cost(bi: int) -> int:
        block = blocks[bi]
        return sum(tokens[block.start : block.end])

    for strategy in settings.strategies:
        if current <= limit:
            break
        before = current
        if strategy == "trim_tool_results":
            keep = settings.tool_result_max_tokens
            for bi, block in enumerate(blocks):
                if current <= limit:
                    break
                if gone(bi):
                    continue
                for mi in range(block.start, block.end):
                    if _is_tool(messages[mi]) and tokens[mi] > keep + MARKER_TOKENS:
                        current -= tokens[mi] - keep - MARKER_TOKENS
                        tokens[mi] = keep + MARKER_TOKENS
                        trims[mi] = keep
                        if current <= limit:
                            break
        elif strategy == "summarize":
            if summarised is not None:
                continue
            if summary is not None:
                span = range(summary.start, summary.end)
                saved = sum(cost(bi) for bi in span if not gone(bi))
                summarised = summary
                dropped.difference_update(span)
                current += summary.tokens + MARKER_TOKENS - saved
            elif summary_tokens is not None:
                run = [bi for bi in where.summarisable if not gone(bi)]
                framing = summary_tokens + MARKER_TOKENS
                saved, chosen = 0, 0
                for k, bi in enumerate(run):
                    if run[0] + k != bi:
                        break  # only a contiguous run can be summarised in place
                    saved += cost(bi)
                    chosen = k + 1
                    if current - saved + framing <= limit and chosen % settings.step == 0:
                        break
                if chosen and saved > framing:
                    summarised = Summarised(run[0], run[chosen - 1] + 1, summary_tokens)
                    current += framing - saved
        elif strategy == "drop_middle":
            taken = 0
            for bi in where.droppable:
                if current <= limit and taken % settings.step == 0:
                    break  # fits, and a whole number of steps went (a stable prefix)
                if gone(bi):
                    continue
                if bi - 1 not in dropped:
                    current += MARKER_TOKENS  # a new run of dropped blocks gets its note
                dropped.add(bi)
                taken += 1
                current -= cost(bi)
        if current < before:
            ran.append(strategy)
    return Layout(trims, summarised, frozenset(dropped), current, tuple(ran))


# -- building the compacted messages --------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def cut_text(text: str, keep: int, encoding: str) -> str:
    """``text`` cut to about ``keep`` tokens: its head and its tail, and a note between them
    saying how much was cut. Unchanged when it is not longer than ``keep``."""
    total = count_text(text, encoding)
    if total <= keep:
        return text
    per_token = len(text) / total
    head_chars = tail_chars = max(int(keep / 2 * per_token), 1)
    for _ in range(6):
        head, tail = text[:head_chars], text[len(text) - tail_chars :]
        kept = count_text(head, encoding) + count_text(tail, encoding)
        if kept <= keep:
            break
        shrink = keep / kept * 0.95
        head_chars = max(int(head_chars * shrink), 1)
        tail_chars = max(int(tail_chars * shrink), 1)
    return head + trim_note(total - kept, total) + tail


def trimmed(message: Mapping[str, Any], keep: int, encoding: str) -> dict[str, Any]:
    """A tool message whose content is cut to about ``keep`` tokens (head, note, tail)."""
    return {**message, "content": cut_text(_text_of(message.get("content")), keep, encoding)}


def _parts_of(content: Any) -> list[Any]:
    if isinstance(content, list):
        return list(content)
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return []


def _appended(message: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A copy of a user message with ``text`` after its content."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": f"{content}\n\n{text}"}
    return {**message, "content": [*_parts_of(content), {"type": "text", "text": text}]}


def _joined(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two user messages as one (so that turns alternate), contents in order."""
    a, b = first.get("content"), second.get("content")
    if isinstance(a, str) and isinstance(b, str):
        return {**first, "content": f"{a}\n\n{b}"}
    return {**first, "content": [*_parts_of(a), *_parts_of(b)]}


def _is_user(message: Any) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "user"


def assemble(measured: Measured, layout: Layout) -> list[Any]:
    """The compacted messages. A summarised range needs its text (``Summarised.text``)."""
    messages, blocks = measured.messages, measured.blocks
    out: list[Any] = []
    pending: list[int] = [0, 0]  # messages and tokens of the dropped run being passed over
    join_next = False
    summarised = layout.summarised

    def note(text: str) -> None:
        nonlocal join_next
        if out and _is_user(out[-1]):
            out[-1] = _appended(out[-1], text)
        else:
            out.append({"role": "user", "content": text})
        join_next = True

    def flush() -> None:
        if pending[0]:
            note(drop_note(pending[0], pending[1]))
            pending[0] = pending[1] = 0

    for bi, block in enumerate(blocks):
        size = block.end - block.start
        if summarised is not None and summarised.start <= bi < summarised.end:
            if bi == summarised.start:
                flush()
                if summarised.text is None:
                    raise ValueError("a summarised range needs its summary's text")
                count = sum(blocks[i].end - blocks[i].start for i in range(bi, summarised.end))
                original = sum(measured.block_tokens(i) for i in range(bi, summarised.end))
                note(summary_note(count, original, summarised.text))
            continue
        if bi in layout.dropped:
            pending[0] += size
            pending[1] += measured.block_tokens(bi)
            continue
        flush()
        for mi in range(block.start, block.end):
            message = messages[mi]
            keep = layout.trims.get(mi)
            if keep is not None:
                message = trimmed(message, keep, measured.encoding)
            if join_next and _is_user(message) and out and _is_user(out[-1]):
                out[-1] = _joined(out[-1], message)
            else:
                out.append(message)
            join_next = False
    flush()
    return out


# -- the whole: plan, build, count, tighten ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fitted:
    """The compacted body and its exact count."""

    body: dict[str, Any]
    tokens: int
    layout: Layout


@dataclass(frozen=True, slots=True)
class TooLong:
    """Nothing the strategies do gets under the limit: by how much, after which ones."""

    tokens: int  # the least the strategies got to
    limit: int
    strategies: tuple[Strategy, ...]

    @property
    def over(self) -> int:
        return self.tokens - self.limit


def fit(
    body: Mapping[str, Any],
    measured: Measured,
    settings: ContextSettings,
    limit: int,
    summary: Summarised | None = None,
) -> Fitted | TooLong:
    """The body compacted to at most ``limit`` prompt tokens, counted whole in the measured
    encoding. ``summary``: a summary already written for its range (else ``summarize`` is
    skipped). The plan's prediction misses by the markers and framing; each miss tightens the
    plan's own limit by that much and it plans again (``MAX_TIGHTENING`` times)."""
    inner = limit
    layout = plan(measured, settings, inner, summary=summary)
    counted: int | None = None
    for _ in range(MAX_TIGHTENING + 1):
        if layout.tokens > inner:
            break  # the strategies cannot get there
        compacted = {**body, "messages": assemble(measured, layout)}
        counted = count_body(compacted, measured.encoding)
        if counted <= limit:
            return Fitted(compacted, counted, layout)
        inner -= counted - limit + 1
        tighter = plan(measured, settings, inner, summary=summary)
        if tighter == layout:
            break
        layout = tighter
    least = layout.tokens if counted is None else min(counted, max(layout.tokens, limit + 1))
    return TooLong(least, limit, layout.strategies)


def floor(measured: Measured, settings: ContextSettings, limit: int) -> Layout:
    """The plan for ``limit`` with a summary at its largest: ``tokens > limit`` means that every
    strategy ran to its end and the conversation is still too long (``tokens`` is then the least
    they get to), so the candidate cannot take the request."""
    summary_tokens = settings.summary_max_tokens if "summarize" in settings.strategies else None
    return plan(measured, settings, limit, summary_tokens=summary_tokens)


def messages_of(body: Mapping[str, Any]) -> Sequence[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []
