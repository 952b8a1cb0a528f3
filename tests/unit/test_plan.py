"""The candidate plan: pure, typed skips (wire, context window), the route's order kept."""

from __future__ import annotations

from types import MappingProxyType

from edgeproxy.events import SkipReason
from edgeproxy.server.plan import encodings_to_count, max_output_tokens, plan_candidates
from edgeproxy.snapshot import Candidate
from edgeproxy.wires import upstream_wire


def candidate(name: str, wire: str = "openai", window: int | None = None) -> Candidate:
    return Candidate(
        provider=name,
        region="r",
        model="m",
        upstream_model="m",
        wire=upstream_wire(wire),
        base_url="http://127.0.0.1:1/v1",
        chat_url="http://127.0.0.1:1/v1/x",
        context_window=window,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
        tokenizer="cl100k_base" if wire == "openai" else "estimate",
    )


SMALL = candidate("small", window=1000)
BIG = candidate("big", window=200_000)
CLAUDE = candidate("claude", "anthropic", window=200_000)
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}


def test_everything_fits_and_keeps_the_route_order() -> None:
    plan = plan_candidates((SMALL, CLAUDE, BIG), BODY, body_bytes=80, prompt_tokens={})
    assert plan.chain == (SMALL, CLAUDE, BIG) and plan.skipped == ()


def test_only_windows_the_body_could_exceed_are_counted() -> None:
    assert encodings_to_count((SMALL, CLAUDE, BIG), 80, 500) == set()
    assert encodings_to_count((SMALL, CLAUDE, BIG), 600, 500) == {"cl100k_base"}
    assert encodings_to_count((SMALL, CLAUDE), 300_000, 0) == {"cl100k_base", "estimate"}


def test_a_prompt_too_long_for_a_window_skips_that_candidate() -> None:
    plan = plan_candidates((SMALL, BIG), BODY, body_bytes=4000, prompt_tokens={"cl100k_base": 700})
    assert plan.chain == (BIG,)
    (skip,) = plan.skipped
    assert (skip.candidate, skip.reason) == (SMALL, SkipReason.CONTEXT_WINDOW)
    assert skip.detail == "context window 1000 < prompt 700 + max_tokens 500"


def test_a_prompt_that_fits_in_tokens_is_kept_although_its_bytes_do_not() -> None:
    plan = plan_candidates((SMALL,), BODY, body_bytes=4000, prompt_tokens={"cl100k_base": 400})
    assert plan.chain == (SMALL,)


def test_a_wire_that_cannot_carry_the_request_is_skipped_with_the_field_named() -> None:
    body = {**BODY, "n": 3}  # Anthropic has no n > 1
    plan = plan_candidates((CLAUDE, BIG), body, body_bytes=80, prompt_tokens={})
    assert plan.chain == (BIG,)
    assert plan.skipped_for(SkipReason.WIRE)[0].candidate == CLAUDE
    assert plan.refused_param == "n"


def test_max_output_tokens_ignores_garbage() -> None:
    assert max_output_tokens({"max_completion_tokens": 7, "max_tokens": 3}) == 7
    assert max_output_tokens({"max_tokens": True}) == 0
    assert max_output_tokens({"max_tokens": "9"}) == 0
    assert max_output_tokens({"max_tokens": -1}) == 0
