"""Summaries for compaction's ``summarize``: asked of the route's summariser, kept in a cache.

The cache is one per process (``context_state.SummaryStore``, in ``ProxyState.context``), a TTL
per entry (the route's ``summary_ttl``). Keys name a history (``context.summary.summary_key``: the prefix hash, the
summariser, the tenant), so the same history is summarised once, and a longer one starts from
the summary of the longest cached part of it.

The summariser is called like an attempt (its candidate's wire, the route's timeouts, the
request's deadline, its breaker consulted and told the outcome) but it is not one of the
request's attempts: it serves the request's compaction, and its cost is the request's
(``Ledger.summary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeproxy.context.summary import summary_key, summary_request
from edgeproxy.cost import Usage
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.server.attempt import UpstreamCall, attempt_once
from edgeproxy.server.context import ProxyState
from edgeproxy.server.ledger import Ledger
from edgeproxy.snapshot import Candidate, Route


@dataclass(frozen=True, slots=True)
class History:
    """The history to summarise: its prefix hashes at each block boundary (``hashes[i]`` names
    the first ``i`` blocks) and the messages of blocks ``[start, end)``."""

    hashes: Sequence[bytes]
    start: int
    end: int
    messages_of: Any  # (first block, end block) -> the messages of those blocks


async def summarise(
    *,
    state: ProxyState,
    route: Route,
    summarizer: Candidate,
    history: History,
    tenant: str,
    deadline: Deadline,
    rid: str,
    ledger: Ledger,
) -> str | None:
    """The summary of blocks ``[history.start, history.end)``: from the cache, or written by the
    summariser (from the longest cached shorter summary, when there is one). None when it
    cannot be had (the summariser failed, its breaker is open, or it said nothing)."""
    store = state.context.summaries
    clock = state.clock
    settings = route.context
    key = summary_key(history.hashes[history.end], summarizer.key, tenant)
    cached = store.get(key, clock.monotonic())
    if cached is not None:
        ledger.summary(summarizer, "cached", None, 0.0)
        return cached
    base, previous = history.start, None
    for j in range(history.end - 1, history.start, -1):
        found = store.get(summary_key(history.hashes[j], summarizer.key, tenant), clock.monotonic())
        if found is not None:
            base, previous = j, found
            break
    body = summary_request(
        summarizer.upstream_model,
        previous,
        history.messages_of(base, history.end),
        max_tokens=settings.summary_max_tokens,
        window=summarizer.context_window,
        encoding=summarizer.tokenizer,
    )
    started = clock.monotonic()
    permit = state.engine.acquire(summarizer.key)
    if permit is None:
        ledger.summary(summarizer, "breaker_open", None, 0.0)
        return None
    call = UpstreamCall(
        state, route, summarizer, summarizer.wire.request_body(body, summarizer), deadline, rid, {}
    )
    try:
        _, parsed = await attempt_once(call)
    except AttemptFailure as failure:
        permit.failure(failure.failure)
        ledger.summary(summarizer, str(failure.failure), None, clock.monotonic() - started)
        return None
    except Exception:
        permit.failure(FailureClass.INTERNAL)
        ledger.summary(summarizer, str(FailureClass.INTERNAL), None, clock.monotonic() - started)
        return None
    except BaseException:
        permit.release()
        raise
    permit.success()
    text = _text(parsed)
    usage = parsed.get("usage")
    ledger.summary(
        summarizer,
        "ok" if text else "empty",
        Usage.parse(usage if isinstance(usage, dict) else None),
        clock.monotonic() - started,
    )
    if not text:
        return None
    store.put(key, text, settings.summary_ttl, clock.monotonic())
    return text


def _text(parsed: dict[str, Any]) -> str:
    choices = parsed.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content.strip() if isinstance(content, str) else ""
