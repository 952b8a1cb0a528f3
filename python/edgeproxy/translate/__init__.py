"""Translation between OpenAI Chat Completions and Anthropic Messages (docs/anthropic.md).

Requests and whole responses are translated here in Python (once per request); streams are
translated per network chunk in Rust (``OpenAIToAnthropicStream``, ``AnthropicToOpenAIStream``).

A field one wire has and the other lacks is either translated, dropped on purpose (each drop is
listed in docs/anthropic.md and in ``DROPPED_*``), or refused with ``TranslationError`` naming
the field: never silently changed.

    >>> body = openai_to_anthropic_request(
    ...     {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
    ...                                 {"role": "user", "content": "Hi"}]},
    ...     default_max_tokens=256)
    >>> body["system"], body["messages"], body["max_tokens"]
    ('Be brief.', [{'role': 'user', 'content': 'Hi'}], 256)
"""

from __future__ import annotations

from edgeproxy._core import AnthropicToOpenAIStream, OpenAIToAnthropicStream, TranslationError

from .requests import (
    DROPPED_ANTHROPIC_FIELDS,
    DROPPED_OPENAI_FIELDS,
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)
from .responses import (
    anthropic_error_type,
    anthropic_to_openai_response,
    error_to_anthropic,
    error_to_openai,
    finish_reason_for,
    openai_to_anthropic_response,
    stop_reason_for,
)
from .util import refuse

__all__ = [
    "DROPPED_ANTHROPIC_FIELDS",
    "DROPPED_OPENAI_FIELDS",
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_error_type",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "error_to_anthropic",
    "error_to_openai",
    "finish_reason_for",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "refuse",
    "stop_reason_for",
]
