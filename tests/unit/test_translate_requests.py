"""Request translation OpenAI <-> Anthropic: mappings, refusals naming the field, round trips."""

from __future__ import annotations

from typing import Any

import pytest

from edgeproxy.translate import (
    DROPPED_ANTHROPIC_FIELDS,
    DROPPED_OPENAI_FIELDS,
    TranslationError,
    anthropic_to_openai_request,
    error_to_anthropic,
    error_to_openai,
    openai_to_anthropic_request,
    refuse,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

OPENAI_CONVERSATION: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "21C"},
        {"role": "assistant", "content": "A cat. Paris: 18C."},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [WEATHER],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "max_completion_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["END"],
    "stream": True,
}


def to_anthropic(**body: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return openai_to_anthropic_request({**base, **body}, default_max_tokens=1024)


def to_openai(**body: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return anthropic_to_openai_request({**base, **body})


def test_openai_conversation_to_anthropic() -> None:
    out = openai_to_anthropic_request(
        OPENAI_CONVERSATION, default_max_tokens=1024, model="claude-x"
    )
    assert out["model"] == "claude-x"
    assert out["system"] == "You are terse."
    assert out["max_tokens"] == 300
    assert (out["temperature"], out["top_p"], out["stop_sequences"]) == (0.5, 0.9, ["END"])
    assert out["stream"] is True
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather"}
    user, assistant, results, final, thanks = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert user["content"][2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Lyon"}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
        ],
    }
    assert final == {"role": "assistant", "content": "A cat. Paris: 18C."}
    assert thanks == {"role": "user", "content": "Thanks"}


def test_round_trip_openai_anthropic_openai_keeps_messages_and_tools() -> None:
    there = openai_to_anthropic_request(OPENAI_CONVERSATION, default_max_tokens=1024)
    back = anthropic_to_openai_request(there, max_tokens_field="max_completion_tokens")
    assert back["messages"] == OPENAI_CONVERSATION["messages"]
    assert back["tools"] == OPENAI_CONVERSATION["tools"]
    assert back["tool_choice"] == OPENAI_CONVERSATION["tool_choice"]
    for key in ("model", "max_completion_tokens", "temperature", "top_p", "stop", "stream"):
        assert back[key] == OPENAI_CONVERSATION[key], key
    assert back["stream_options"] == {"include_usage": True}


def test_round_trip_anthropic_openai_anthropic() -> None:
    body: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["X", "Y"],
        "metadata": {"user_id": "u-1"},
    }
    openai_body = anthropic_to_openai_request(body)
    assert openai_body["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
    }
    assert openai_body["messages"][3] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "sunny",
    }
    assert openai_body["tool_choice"] == "required"
    assert openai_body["parallel_tool_calls"] is False
    assert (openai_body["user"], openai_body["stop"], openai_body["max_tokens"]) == (
        "u-1",
        ["X", "Y"],
        64,
    )
    back = openai_to_anthropic_request(openai_body, default_max_tokens=1)
    assert back["system"] == body["system"]
    assert back["tools"] == body["tools"]
    assert back["tool_choice"] == body["tool_choice"]
    assert back["metadata"] == body["metadata"]
    assert back["max_tokens"] == 64
    # The user turn with a tool result comes back as the same blocks, split into two turns
    # (Anthropic accepts consecutive user turns and merges them).
    assert back["messages"][2]["content"] == [body["messages"][2]["content"][0]]
    assert back["messages"][3]["content"] == [body["messages"][2]["content"][1]]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice_to_anthropic(choice: Any, parallel: Any, expected: Any) -> None:
    out = to_anthropic(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=parallel)
    assert out["tool_choice"] == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}),
    ],
)
def test_tool_choice_to_openai(choice: Any, expected: Any) -> None:
    tools = [{"name": "w", "input_schema": {"type": "object"}}]
    assert to_openai(tools=tools, tool_choice=choice)["tool_choice"] == expected


def test_defaults_and_documented_drops() -> None:
    out = to_anthropic(seed=3, store=True, stream_options={"include_usage": True}, n=1, user="u")
    assert out == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1024,
        "metadata": {"user_id": "u"},
    }
    assert "top_k" not in to_openai(top_k=5)
    assert {"seed", "store", "stream_options"} <= DROPPED_OPENAI_FIELDS
    assert "top_k" in DROPPED_ANTHROPIC_FIELDS
    assert to_anthropic(max_tokens=7)["max_tokens"] == 7
    assert to_anthropic(response_format={"type": "text"})["max_tokens"] == 1024
    assert to_anthropic(stop="END")["stop_sequences"] == ["END"]
    assert to_openai(thinking={"type": "disabled"})["max_tokens"] == 10
    dev = to_anthropic(
        messages=[
            {"role": "developer", "content": "A"},
            {"role": "system", "content": [{"type": "text", "text": "B"}]},
            {"role": "user", "content": "hi"},
        ]
    )
    assert dev["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("n", {"n": 2}),
        ("logprobs", {"logprobs": True}),
        ("top_logprobs", {"top_logprobs": 3}),
        ("presence_penalty", {"presence_penalty": 0.5}),
        ("frequency_penalty", {"frequency_penalty": 0.1}),
        ("logit_bias", {"logit_bias": {"50256": -100}}),
        ("response_format", {"response_format": {"type": "json_object"}}),
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": {}}}),
        ("temperature", {"temperature": 1.5}),
        ("functions", {"functions": [{"name": "f"}]}),
        ("function_call", {"function_call": "auto"}),
        ("reasoning_effort", {"reasoning_effort": "high"}),
        ("audio", {"audio": {"voice": "alloy"}}),
        ("modalities", {"modalities": ["text", "audio"]}),
        ("prediction", {"prediction": {"type": "content", "content": "x"}}),
        ("web_search_options", {"web_search_options": {}}),
        ("tools[0].type", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
        ("tool_choice", {"tool_choice": "required"}),
        ("tool_choice", {"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}),
        (
            "messages[1].role",
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]},
        ),
        ("messages[0].role", {"messages": [{"role": "function", "name": "f", "content": "x"}]}),
        (
            "messages[0].content[0].type",
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
        ),
        (
            "messages[0].content[0].image_url.url",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/tiff;base64,AAAA"},
                            }
                        ],
                    }
                ]
            },
        ),
        (
            "messages[0].tool_calls[0].function.arguments",
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    }
                ]
            },
        ),
        ("max_tokens", {"max_tokens": 0}),
    ],
)
def test_openai_fields_anthropic_lacks_are_refused(field: str, body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as info:
        to_anthropic(**body)
    assert info.value.param == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("thinking", {"thinking": {"type": "enabled", "budget_tokens": 2000}}),
        ("tools[0].type", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        ("stop_sequences", {"stop_sequences": ["a", "b", "c", "d", "e"]}),
        ("container", {"container": "c-1"}),
        ("mcp_servers", {"mcp_servers": []}),
        (
            "messages[0].content[0].type",
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        ),
        (
            "messages[0].content[0].content[0].type",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ],
                    }
                ]
            },
        ),
        (
            "messages[0].content[1]",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "tool_result", "tool_use_id": "t"},
                        ],
                    }
                ]
            },
        ),
        ("messages[0].role", {"messages": [{"role": "system", "content": "x"}]}),
        ("tool_choice", {"tool_choice": {"type": "any"}}),
    ],
)
def test_anthropic_fields_openai_lacks_are_refused(field: str, body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as info:
        to_openai(**body)
    assert info.value.param == field


def test_anthropic_images_and_thinking_to_openai() -> None:
    out = to_openai(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "A dot."},
                ],
            },
        ]
    )
    urls = [p["image_url"]["url"] for p in out["messages"][0]["content"]]
    assert urls == [f"data:image/png;base64,{PNG}", "https://x.test/a.png"]
    assert out["messages"][1] == {"role": "assistant", "content": "A dot."}


def test_refuse_builds_the_rust_exception_class() -> None:
    err = refuse("n", "only one")
    assert isinstance(err, TranslationError)
    assert (err.param, err.message, str(err)) == ("n", "only one", "n: only one")


def test_error_bodies_speak_the_clients_language() -> None:
    openai_429 = (
        b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
    )
    body = error_to_anthropic(429, openai_429, "req-1")
    assert body == (
        b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},'
        b'"request_id":"req-1"}'
    )
    assert b'"overloaded_error"' in error_to_anthropic(529, b"not json")
    anthropic_400 = b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens > 200000 maximum"}}'
    assert b'"code":"context_length_exceeded"' in error_to_openai(400, anthropic_400)
