"""Which of a route's candidates may take this request, and why the others may not.

Pure functions of the route, the request and its prompt's token counts: no I/O, no clock. The
exchange counts the prompt in the encodings ``encodings_to_count`` names, then asks
``plan_candidates`` for the chain to try. A candidate whose window is too small is skipped,
refuses the request, or is kept to get a compacted conversation, as the route's
``context.overflow`` says (``compact`` maps its key to the prompt tokens it may take; whether
compaction can get there is ``server.compaction``'s to check). Skips are typed (``events.SkipReason``) so the
``x-edgeproxy-skipped`` header, the trace and the error message all read the same value. Open
breakers are not the plan's business: the attempt loop checks them as it goes (a breaker can
close while earlier candidates are tried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeproxy.events import CandidateSkipped, SkipReason
from edgeproxy.snapshot import Candidate, Overflow


@dataclass(frozen=True, slots=True)
class Plan:
    chain: tuple[Candidate, ...]  # the candidates to try, in the route's order
    skipped: tuple[CandidateSkipped, ...]  # the others, each with its reason
    refused_param: str | None = None  # the request field no skipped wire could carry
    # Candidates of ``chain`` that get a compacted conversation: key -> prompt tokens allowed.
    compact: Mapping[str, int] = field(default_factory=dict)
    # ``context.overflow: error`` and a candidate's window is too small: refused, whatever fits.
    refused_overflow: bool = False

    def skipped_for(self, reason: SkipReason) -> tuple[CandidateSkipped, ...]:
        return tuple(s for s in self.skipped if s.reason is reason)


def max_output_tokens(body: Mapping[str, Any]) -> int:
    """The answer tokens the request reserves (``max_completion_tokens`` or ``max_tokens``)."""
    out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else 0


def encodings_to_count(chain: tuple[Candidate, ...], body_bytes: int, max_out: int) -> set[str]:
    """The encodings the plan needs a prompt count in: only for candidates whose window the
    request could exceed (a token is at least one byte, so a body shorter than the window
    always fits)."""
    return {
        c.tokenizer
        for c in chain
        if c.context_window is not None and body_bytes + max_out > c.context_window
    }


def answer_room(body: Mapping[str, Any], candidate: Candidate) -> int:
    """The tokens a compacted prompt leaves for the answer: ``max_tokens``, else what the
    candidate's answers may take (``max_output_tokens``)."""
    return max_output_tokens(body) or candidate.max_output_tokens


def plan_candidates(
    chain: tuple[Candidate, ...],
    body: Mapping[str, Any],
    body_bytes: int,
    prompt_tokens: Mapping[str, int],
    overflow: Overflow = "skip",
) -> Plan:
    """The route's ``chain`` without the candidates whose wire cannot carry the request or whose
    context window cannot hold the prompt plus ``max_tokens`` (``overflow``: skipped, refused,
    or kept for compaction). ``prompt_tokens`` holds the counts for ``encodings_to_count``."""
    skipped: list[CandidateSkipped] = []
    refused_param: str | None = None
    refusals = {}
    for wire in {c.wire for c in chain}:
        refusal = wire.refusal(body)
        if refusal is not None:
            refusals[wire] = refusal
            refused_param = refused_param or refusal.param
    max_out = max_output_tokens(body)
    kept: list[Candidate] = []
    compact: dict[str, int] = {}
    overflowed = False
    for candidate in chain:
        refusal = refusals.get(candidate.wire)
        if refusal is not None:
            skipped.append(CandidateSkipped(candidate, SkipReason.WIRE, refusal.reason))
            continue
        window = candidate.context_window
        if window is not None and body_bytes + max_out > window:
            prompt = prompt_tokens[candidate.tokenizer]
            if prompt + max_out > window:
                detail = f"context window {window} < prompt {prompt} + max_tokens {max_out}"
                if overflow == "compact":
                    compact[candidate.key] = window - answer_room(body, candidate)
                    kept.append(candidate)
                    continue
                overflowed = True
                skipped.append(CandidateSkipped(candidate, SkipReason.CONTEXT_WINDOW, detail))
                continue
        kept.append(candidate)
    if overflow == "error" and overflowed:
        return Plan((), tuple(skipped), refused_param, refused_overflow=True)
    return Plan(tuple(kept), tuple(skipped), refused_param, compact)
