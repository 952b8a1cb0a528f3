"""Request translation: OpenAI Chat Completions body <-> Anthropic Messages body.

Both functions take the decoded client body and return a new dict for the upstream (the input
is never modified). Every top-level field is either translated, dropped on purpose (listed in
``DROPPED_OPENAI_FIELDS`` / ``DROPPED_ANTHROPIC_FIELDS``) or refused with ``TranslationError``;
a field neither function knows is refused too, so a new API feature is never silently lost.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from . import thinking
from .util import as_dict, as_list, as_str, refuse

# Anthropic's prompt-cache breakpoint. Kept in the proxy's inner OpenAI shape where Anthropic
# puts it (on content parts, tools, tool calls; a tool result's on its tool message), the way
# OpenRouter and LiteLLM carry it, so an Anthropic upstream gets it back; the OpenAI wire strips
# it (``cache_markers.without_cache_control``): OpenAI caches prefixes by itself.
CACHE_CONTROL: Final = "cache_control"


def _marker(source: Mapping[str, Any], out: dict[str, Any], param: str) -> dict[str, Any]:
    """``out`` with ``source``'s cache breakpoint copied onto it, if it has one."""
    value = source.get(CACHE_CONTROL)
    if value is not None:
        out[CACHE_CONTROL] = as_dict(value, f"{param}.{CACHE_CONTROL}")
    return out


# OpenAI fields dropped when the upstream speaks Anthropic (docs/anthropic.md says why).
DROPPED_OPENAI_FIELDS: Final = frozenset(
    {
        "stream_options",  # Anthropic streams always carry usage; the stream translator decides
        "seed",  # best-effort determinism; Anthropic has no equivalent
        "store",  # OpenAI-side storage of completions
        "metadata",  # OpenAI-side tags for stored completions (not Anthropic's metadata)
        "service_tier",  # provider-specific capacity tiers
        "safety_identifier",  # OpenAI abuse monitoring id
        "prompt_cache_key",  # OpenAI cache routing hint; Anthropic caches by cache_control
    }
)

# Anthropic fields dropped when the upstream speaks OpenAI.
DROPPED_ANTHROPIC_FIELDS: Final = frozenset(
    {
        "top_k",  # OpenAI has no top-k sampling
        "service_tier",  # provider-specific capacity tiers
    }
)

# Anthropic's accepted base64 image types.
_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL: Final = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.S)
_OPENAI_STOP_LIMIT: Final = 4


# -- OpenAI -> Anthropic --------------------------------------------------------------------------


def openai_to_anthropic_request(
    body: Mapping[str, Any], *, default_max_tokens: int, model: str | None = None
) -> dict[str, Any]:
    """An Anthropic Messages body for an OpenAI Chat Completions body.

    ``default_max_tokens`` is used when the client gave neither ``max_completion_tokens`` nor
    ``max_tokens`` (Anthropic requires it). ``model`` replaces the client's model name.
    Raises ``TranslationError`` for a field Anthropic cannot honour.
    """
    out: dict[str, Any] = {"model": model if model is not None else body.get("model")}
    system, messages = _openai_messages(as_list(body.get("messages"), "messages"))
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    max_tokens = default_max_tokens
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins, as at OpenAI
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise refuse(name, "expected an integer >= 1")
            max_tokens = value
    out["max_tokens"] = max_tokens

    for key, value in body.items():
        if key in ("model", "messages", "max_tokens", "max_completion_tokens"):
            continue
        if key in DROPPED_OPENAI_FIELDS or value is None:
            continue
        if key == "stream":
            out["stream"] = bool(value)
        elif key == "temperature":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise refuse(key, "expected a number")
            if value > 1:
                raise refuse(
                    key,
                    f"{value} is outside Anthropic's range 0..1 (OpenAI allows up to 2); "
                    "rescaling would change the sampling silently",
                )
            out["temperature"] = value
        elif key == "top_p":
            out["top_p"] = value
        elif key == "stop":
            stops = [value] if isinstance(value, str) else as_list(value, key)
            if stops:
                out["stop_sequences"] = [as_str(s, key) for s in stops]
        elif key == "n":
            if value != 1:
                raise refuse(key, "Anthropic returns exactly one message; n must be 1")
        elif key in ("logprobs", "top_logprobs"):
            if value:
                raise refuse(key, "Anthropic does not return token log probabilities")
        elif key in ("presence_penalty", "frequency_penalty"):
            if value != 0:
                raise refuse(key, "Anthropic has no presence or frequency penalty")
        elif key == "logit_bias":
            if value:
                raise refuse(key, "Anthropic has no logit bias")
        elif key == "response_format":
            kind = as_dict(value, key).get("type")
            if kind != "text":
                raise refuse(
                    key,
                    f"response_format {kind!r} is not translated: Anthropic has no JSON mode; "
                    "describe the format in the prompt or use a tool",
                )
        elif key == "user":
            out["metadata"] = {"user_id": as_str(value, key)}
        elif key == "tools":
            if value:
                out["tools"] = [_openai_tool(t, i) for i, t in enumerate(as_list(value, key))]
        elif key in ("tool_choice", "parallel_tool_calls"):
            continue  # below, together
        elif key in ("functions", "function_call"):
            raise refuse(key, "the deprecated functions API is not translated; use tools")
        elif key == thinking.X_ANTHROPIC:
            # Anthropic's own parameters, carried by the inner shape for this wire only.
            out.update(thinking.check_extension(value))
        elif key == "reasoning_effort":
            raise refuse(
                key, "not translated: Anthropic's extended thinking takes a token budget instead"
            )
        else:
            raise refuse(key, "this OpenAI field has no Anthropic equivalent")

    choice = _openai_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        if choice["type"] != "none" and "tools" not in out:
            raise refuse("tool_choice", "a tool choice needs tools")
        out["tool_choice"] = choice
    return out


def _openai_messages(messages: list[Any]) -> tuple[str | list[dict[str, Any]] | None, list[Any]]:
    if not messages:
        raise refuse("messages", "at least one message is required")
    system_parts: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        message = as_dict(message, param)
        role = message.get("role")
        if role in ("system", "developer"):
            if out:
                raise refuse(
                    f"{param}.role",
                    "a system message after the conversation started cannot be translated: "
                    "Anthropic takes one top-level system prompt",
                )
            system_parts.extend(_text_parts(message.get("content"), f"{param}.content"))
        elif role == "user":
            out.append({"role": "user", "content": _user_content(message.get("content"), param)})
        elif role == "assistant":
            out.append(_assistant_message(message, param))
        elif role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": as_str(message.get("tool_call_id"), f"{param}.tool_call_id"),
                "content": _tool_result_content(message.get("content"), f"{param}.content"),
            }
            _marker(message, block, param)
            # Consecutive tool results answer one assistant turn: one user message holds them.
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and _is_tool_results(last["content"]):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif role == "function":
            raise refuse(f"{param}.role", "the deprecated function role is not translated")
        else:
            raise refuse(f"{param}.role", f"unknown role {role!r}")
    system: str | list[dict[str, Any]] | None = None
    if len(system_parts) == 1 and CACHE_CONTROL not in system_parts[0]:
        system = system_parts[0]["text"]
    elif system_parts:
        system = system_parts
    return system, out


def _is_tool_results(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _text_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, param)):
        part = as_dict(part, f"{param}[{j}]")
        if part.get("type") != "text":
            raise refuse(f"{param}[{j}].type", "only text parts are allowed here")
        text = as_str(part.get("text"), f"{param}[{j}].text")
        parts.append(_marker(part, {"type": "text", "text": text}, f"{param}[{j}]"))
    return parts


def _user_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, f"{param}.content")):
        where = f"{param}.content[{j}]"
        part = as_dict(part, where)
        kind = part.get("type")
        if kind == "text":
            text = as_str(part.get("text"), f"{where}.text")
            blocks.append(_marker(part, {"type": "text", "text": text}, where))
        elif kind == "image_url":
            image = as_dict(part.get("image_url"), f"{where}.image_url")
            url = as_str(image.get("url"), f"{where}.image_url.url")
            blocks.append(_marker(part, _image_block(url, where), where))
        else:
            raise refuse(f"{where}.type", f"content part {kind!r} is not translated to Anthropic")
    return blocks


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise refuse(f"{param}.image_url.url", "expected an http(s) URL or a base64 data: URL")
    media_type = match["type"].lower()
    if media_type not in _IMAGE_TYPES:
        raise refuse(
            f"{param}.image_url.url",
            f"image type {media_type!r} is not accepted by Anthropic "
            "(image/jpeg, image/png, image/gif, image/webp)",
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": match["data"]},
    }


def _assistant_message(message: dict[str, Any], param: str) -> dict[str, Any]:
    for key in ("function_call", "audio"):
        if message.get(key) is not None:
            raise refuse(f"{param}.{key}", "not translated to Anthropic")
    content = message.get("content")
    calls = message.get("tool_calls") or []
    # Thinking blocks come back first, verbatim: Anthropic checks their signatures.
    blocks: list[dict[str, Any]] = thinking.message_blocks(message, param)
    if isinstance(content, str) and not calls and not blocks:
        return {"role": "assistant", "content": content}
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        for j, part in enumerate(as_list(content, f"{param}.content")):
            where = f"{param}.content[{j}]"
            part = as_dict(part, where)
            if part.get("type") == "text":
                text = as_str(part.get("text"), f"{where}.text")
                blocks.append(_marker(part, {"type": "text", "text": text}, where))
            elif part.get("type") == "refusal":
                blocks.append({"type": "text", "text": as_str(part.get("refusal"), where)})
            else:
                raise refuse(f"{where}.type", "only text and refusal parts are translated")
    for j, call in enumerate(as_list(calls, f"{param}.tool_calls")):
        where = f"{param}.tool_calls[{j}]"
        call = as_dict(call, where)
        if call.get("type", "function") != "function":
            raise refuse(f"{where}.type", "only function tool calls are translated")
        function = as_dict(call.get("function"), f"{where}.function")
        arguments = as_str(function.get("arguments", "{}") or "{}", f"{where}.function.arguments")
        try:
            tool_input = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise refuse(f"{where}.function.arguments", "not valid JSON") from None
        if not isinstance(tool_input, dict):
            raise refuse(f"{where}.function.arguments", "Anthropic tool input must be an object")
        use = {
            "type": "tool_use",
            "id": as_str(call.get("id"), f"{where}.id"),
            "name": as_str(function.get("name"), f"{where}.function.name"),
            "input": tool_input,
        }
        blocks.append(_marker(call, use, where))
    return {"role": "assistant", "content": blocks}


def _tool_result_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return _text_parts(content, param)


def _openai_tool(tool: Any, i: int) -> dict[str, Any]:
    param = f"tools[{i}]"
    tool = as_dict(tool, param)
    if tool.get("type") != "function":
        raise refuse(f"{param}.type", f"tool type {tool.get('type')!r} is not translated")
    function = as_dict(tool.get("function"), f"{param}.function")
    out: dict[str, Any] = {"name": as_str(function.get("name"), f"{param}.function.name")}
    if function.get("description") is not None:
        out["description"] = function["description"]
    schema = function.get("parameters")
    out["input_schema"] = (
        as_dict(schema, f"{param}.function.parameters")
        if schema is not None
        else {"type": "object", "properties": {}}
    )
    # "strict" is dropped: Anthropic validates tool input against the schema anyway.
    return _marker(tool, out, param)


def _openai_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function"), "tool_choice.function").get("name")
        out = {"type": "tool", "name": as_str(name, "tool_choice.function.name")}
    else:
        raise refuse("tool_choice", f"{choice!r} is not translated to Anthropic")
    if parallel is False:
        if out is None:
            out = {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


# -- Anthropic -> OpenAI --------------------------------------------------------------------------


def anthropic_to_openai_request(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    max_tokens_field: str = "max_tokens",
    carry_thinking: bool = False,
) -> dict[str, Any]:
    """An OpenAI Chat Completions body for an Anthropic Messages body.

    ``max_tokens_field`` is ``max_tokens`` (every OpenAI-compatible server) or
    ``max_completion_tokens`` (OpenAI's reasoning models require it). A streamed request asks for
    ``stream_options.include_usage`` so the stream translator can report usage.
    Raises ``TranslationError`` for a field OpenAI cannot honour.

    ``carry_thinking`` (the proxy's ingress): extended thinking is carried in the inner shape's
    ``x_anthropic`` extension (``translate.thinking``) for an Anthropic upstream, instead of being
    refused; with thinking on, the assistant turns' thinking blocks are kept there too.
    """
    out: dict[str, Any] = {"model": model if model is not None else body.get("model")}
    carry = carry_thinking and thinking.requested(body.get("thinking"))
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _anthropic_system(system)})
    for i, message in enumerate(as_list(body.get("messages"), "messages")):
        where = f"messages[{i}]"
        messages.extend(_anthropic_message(as_dict(message, where), where, carry))
    out["messages"] = messages
    for key, value in body.items():
        if key in ("model", "messages", "system") or key in DROPPED_ANTHROPIC_FIELDS:
            continue
        if value is None:
            continue
        if key == "max_tokens":
            out[max_tokens_field] = value
        elif key == "stream":
            out["stream"] = bool(value)
            if value:
                out["stream_options"] = {"include_usage": True}
        elif key in ("temperature", "top_p"):
            out[key] = value
        elif key == "stop_sequences":
            stops = [as_str(s, key) for s in as_list(value, key)]
            if len(stops) > _OPENAI_STOP_LIMIT:
                raise refuse(key, f"OpenAI accepts at most {_OPENAI_STOP_LIMIT} stop sequences")
            if stops:
                out["stop"] = stops
        elif key == "metadata":
            user = as_dict(value, key).get("user_id")
            if user is not None:
                out["user"] = as_str(user, "metadata.user_id")
        elif key == "tools":
            if value:
                out["tools"] = [_anthropic_tool(t, i) for i, t in enumerate(as_list(value, key))]
        elif key == "tool_choice":
            choice = as_dict(value, key)
            kind = choice.get("type")
            if kind in ("auto", "none"):
                out["tool_choice"] = kind
            elif kind == "any":
                out["tool_choice"] = "required"
            elif kind == "tool":
                name = as_str(choice.get("name"), "tool_choice.name")
                out["tool_choice"] = {"type": "function", "function": {"name": name}}
            else:
                raise refuse("tool_choice.type", f"{kind!r} is not translated to OpenAI")
            if choice.get("disable_parallel_tool_use") and kind != "none":
                out["parallel_tool_calls"] = False
        elif key == "thinking":
            if carry:
                out[thinking.X_ANTHROPIC] = {"thinking": value}
            elif as_dict(value, key).get("type") != "disabled":
                raise refuse(
                    key, "extended thinking is not translated to the OpenAI Chat Completions wire"
                )
        else:
            raise refuse(key, "this Anthropic field has no OpenAI Chat Completions equivalent")
    if "tool_choice" in out and out["tool_choice"] != "none" and "tools" not in out:
        raise refuse("tool_choice", "a tool choice needs tools")
    return out


def _anthropic_system(system: Any) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(as_list(system, "system")):
        block = as_dict(block, f"system[{j}]")
        if block.get("type") != "text":
            raise refuse(f"system[{j}].type", "only text blocks are allowed in system")
        text = as_str(block.get("text"), f"system[{j}].text")
        parts.append(_marker(block, {"type": "text", "text": text}, f"system[{j}]"))
    return parts


def _anthropic_message(
    message: dict[str, Any], param: str, carry_thinking: bool
) -> list[dict[str, Any]]:
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant"):
        raise refuse(f"{param}.role", f"expected 'user' or 'assistant', got {role!r}")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = as_list(content, f"{param}.content")
    if role == "assistant":
        return [_anthropic_assistant(blocks, param, carry_thinking)]
    # A user turn: tool results become tool messages (first, as OpenAI wants them right after
    # the assistant's tool calls), the rest one user message.
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{param}.content[{j}]"
        block = as_dict(block, where)
        kind = block.get("type")
        if kind == "text":
            text = as_str(block.get("text"), f"{where}.text")
            parts.append(_marker(block, {"type": "text", "text": text}, where))
        elif kind == "image":
            image = {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
            parts.append(_marker(block, image, where))
        elif kind == "tool_result":
            if parts:
                raise refuse(
                    where, "tool_result blocks must come before other content in a user turn"
                )
            result = {
                "role": "tool",
                "tool_call_id": as_str(block.get("tool_use_id"), f"{where}.tool_use_id"),
                "content": _tool_result_text(block.get("content", ""), f"{where}.content"),
            }
            tool_messages.append(_marker(block, result, where))
        else:
            raise refuse(f"{where}.type", f"content block {kind!r} is not translated to OpenAI")
    out = tool_messages
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _image_url(block: dict[str, Any], param: str) -> str:
    source = as_dict(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "url":
        return as_str(source.get("url"), f"{param}.source.url")
    if kind == "base64":
        media_type = as_str(source.get("media_type"), f"{param}.source.media_type")
        data = as_str(source.get("data"), f"{param}.source.data")
        try:
            base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise refuse(f"{param}.source.data", "not base64") from None
        return f"data:{media_type};base64,{data}"
    raise refuse(f"{param}.source.type", f"image source {kind!r} is not translated to OpenAI")


def _tool_result_text(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(as_list(content, param)):
        block = as_dict(block, f"{param}[{j}]")
        if block.get("type") != "text":
            raise refuse(
                f"{param}[{j}].type", "OpenAI tool messages hold text only (no images, documents)"
            )
        text = as_str(block.get("text"), f"{param}[{j}].text")
        parts.append(_marker(block, {"type": "text", "text": text}, f"{param}[{j}]"))
    return parts


def _anthropic_assistant(blocks: list[Any], param: str, carry_thinking: bool) -> dict[str, Any]:
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{param}.content[{j}]"
        block = as_dict(block, where)
        kind = block.get("type")
        if kind == "text":
            text = as_str(block.get("text"), f"{where}.text")
            texts.append(_marker(block, {"type": "text", "text": text}, where))
        elif kind == "tool_use":
            call = {
                "id": as_str(block.get("id"), f"{where}.id"),
                "type": "function",
                "function": {
                    "name": as_str(block.get("name"), f"{where}.name"),
                    "arguments": orjson.dumps(block.get("input", {})).decode(),
                },
            }
            calls.append(_marker(block, call, where))
        elif kind in thinking.THINKING_TYPES:
            if not carry_thinking:
                continue  # signed reasoning only Anthropic can read back: dropped
            if texts or calls:
                raise refuse(
                    where, "thinking blocks must come before the text and tool use of a turn"
                )
            thoughts.append(thinking.check_block(block, where))
        else:
            raise refuse(f"{where}.type", f"content block {kind!r} is not translated to OpenAI")
    message: dict[str, Any] = {"role": "assistant"}
    if len(texts) == 1 and CACHE_CONTROL not in texts[0]:
        message["content"] = texts[0]["text"]
    elif texts:
        message["content"] = texts
    else:
        message["content"] = None
    if calls:
        message["tool_calls"] = calls
    return thinking.with_blocks(message, thoughts)


def _anthropic_tool(tool: Any, i: int) -> dict[str, Any]:
    param = f"tools[{i}]"
    tool = as_dict(tool, param)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise refuse(
            f"{param}.type", f"Anthropic server tool {kind!r} has no OpenAI Chat equivalent"
        )
    function: dict[str, Any] = {"name": as_str(tool.get("name"), f"{param}.name")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = as_dict(tool.get("input_schema"), f"{param}.input_schema")
    return _marker(tool, {"type": "function", "function": function}, param)
