"""What the simulated model answers: text pieces, finish reason and token counts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import SimConfig
from .request import ChatRequest
from .text import completion_pieces, estimate_prompt_tokens
from .tools import ToolCall, last_user_text, plan_tool_call
from .wire import new_completion_id


@dataclass(frozen=True, slots=True)
class Completion:
    completion_id: str
    created: int
    model: str
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    # A tool call instead of text (pieces is empty then; finish_reason "tool_calls").
    tool_call: ToolCall | None = None
    # Hidden reasoning tokens (a verbose model of the market): billed as output, never shown.
    reasoning_tokens: int = 0
    # Of prompt_tokens: read from the sim's prompt cache, and written to it (sim/prompt_cache.py).
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def content(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        visible = len(self.pieces) + (len(self.tool_call.pieces) if self.tool_call else 0)
        return visible + self.reasoning_tokens


def plan_completion(config: SimConfig, request: ChatRequest) -> Completion:
    n_tokens = config.default_completion_tokens
    finish_reason = "stop"
    if request.max_tokens is not None and request.max_tokens < n_tokens:
        n_tokens, finish_reason = request.max_tokens, "length"
    tool_call = plan_tool_call(
        config.seed,
        request.tools,
        forced=request.tool_forced,
        forced_name=request.tool_forced_name,
        last_user_text=last_user_text(request.messages),
        trigger=config.tool_trigger,
    )
    return Completion(
        completion_id=new_completion_id(),
        created=int(time.time()),
        model=request.model,
        pieces=[] if tool_call else completion_pieces(config.seed, request.messages, n_tokens),
        finish_reason="tool_calls" if tool_call else finish_reason,
        prompt_tokens=estimate_prompt_tokens(request.messages),
        tool_call=tool_call,
    )
