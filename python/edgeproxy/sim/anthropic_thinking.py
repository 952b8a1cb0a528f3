"""Extended thinking on the simulator's Anthropic wire, checked the way Anthropic checks it.

A request with ``thinking: {"type": "enabled", "budget_tokens": N}`` (N >= 1024 and below
``max_tokens``, else 400) gets a ``thinking`` block before its text or tool use, signed: the
signature is an HMAC of the thinking under a key of this process, so the simulator can tell a
block it produced from one that was altered. A last user turn that says "redact" gets a
``redacted_thinking`` block too (its ``data`` is the thinking, sealed the same way).

A later request is refused (400 ``invalid_request_error``, Anthropic's wording) when a thinking
block sent back does not carry the signature its text was given, or when thinking is on, the
conversation is in a tool loop (the last user turn holds ``tool_result`` blocks) and the
assistant turn that called the tools does not start with its thinking block: the two mistakes a
proxy that drops or rewrites thinking blocks makes.

Faults ``bad_signature`` (a signature that is a number) and ``huge_signature`` (one of 1 MiB)
make the simulator a hostile upstream for the proxy's checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any, Final

_KEY: Final = secrets.token_bytes(32)
MIN_BUDGET: Final = 1024
HUGE_SIGNATURE_CHARS: Final = 1024 * 1024
PIECE_CHARS: Final = 12


def sign(text: str) -> str:
    return base64.b64encode(hmac.new(_KEY, text.encode(), hashlib.sha256).digest()).decode()


def seal(text: str) -> str:
    """A ``redacted_thinking`` block's data: the text and its signature, opaque to clients."""
    return base64.b64encode(text.encode()).decode() + "." + sign(text)


def _unsealed(data: str) -> str | None:
    head, _, signature = data.partition(".")
    try:
        text = base64.b64decode(head, validate=True).decode()
    except ValueError:
        return None
    return text if hmac.compare_digest(sign(text), signature) else None


def budget(body: dict[str, Any]) -> int | str | None:
    """The thinking budget asked for; None without thinking; a message (str) when refused."""
    value = body.get("thinking")
    if value is None:
        return None
    if not isinstance(value, dict):
        return "thinking: Input should be a valid dictionary"
    kind = value.get("type")
    if kind == "disabled":
        return None
    if kind != "enabled":
        return "thinking.type: Input should be 'enabled' or 'disabled'"
    tokens = value.get("budget_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < MIN_BUDGET:
        return (
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET}"
        )
    if tokens >= body["max_tokens"]:
        return "`max_tokens` must be greater than `thinking.budget_tokens`."
    return tokens


def check_history(body: dict[str, Any], enabled: bool) -> str | None:
    """Why Anthropic would refuse the conversation's thinking blocks, or None."""
    messages = body["messages"]
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"messages.{i}.content.{j}"
            if kind == "thinking":
                text, signature = block.get("thinking"), block.get("signature")
                if not isinstance(text, str) or not isinstance(signature, str):
                    return f"{where}: thinking and signature must be strings"
                if not hmac.compare_digest(sign(text), signature):
                    return f"{where}: Invalid `signature` in `thinking` block"
            elif kind == "redacted_thinking":
                data = block.get("data")
                if not isinstance(data, str) or _unsealed(data) is None:
                    return f"{where}: Invalid `data` in `redacted_thinking` block"
    if enabled and _in_tool_loop(messages):
        i = max(k for k, m in enumerate(messages) if m.get("role") == "assistant")
        content = messages[i].get("content")
        first = content[0].get("type") if isinstance(content, list) and content else "text"
        if first not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                f"found `{first}`. When `thinking` is enabled, a final `assistant` message must "
                "start with a thinking block (preceeding the lastmost set of `tool_use` and "
                "`tool_result` blocks). We recommend you include thinking blocks from previous "
                "turns. To avoid this requirement, disable `thinking`."
            )
    return None


def _in_tool_loop(messages: list[Any]) -> bool:
    last = messages[-1]
    content = last.get("content")
    return (
        last.get("role") == "user"
        and isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        and any(m.get("role") == "assistant" for m in messages)
    )


def thinking_text(last_user_text: str) -> str:
    words = " ".join(last_user_text.split()[:12]) or "nothing"
    return f"The user wrote: {words}. A short, direct answer fits; no need to hedge."


def blocks(last_user_text: str, fault_mode: str) -> list[dict[str, Any]]:
    """The thinking blocks of one answer (``fault_mode``: a hostile signature, if asked)."""
    text = thinking_text(last_user_text)
    signature: Any = sign(text)
    if fault_mode == "bad_signature":
        signature = 12345
    elif fault_mode == "huge_signature":
        signature = "A" * HUGE_SIGNATURE_CHARS
    out: list[dict[str, Any]] = [{"type": "thinking", "thinking": text, "signature": signature}]
    if "redact" in last_user_text.lower():
        out.append({"type": "redacted_thinking", "data": seal(text)})
    return out


def pieces(text: str) -> list[str]:
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]
