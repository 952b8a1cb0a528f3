"""Cost accounting against a known price table."""

from __future__ import annotations

import math

import pytest

from edgeproxy.cost import Usage, cost_usd, parse_price
from edgeproxy.snapshot import Price

# USD per million tokens.
TABLE = {
    "gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4o": Price(input=2.50, output=10.00, cached_input=1.25),
    "claude-sonnet": Price(input=3.00, output=15.00, cached_input=0.30, cache_write=3.75),
    "llama-3.1-8b": Price(input=0.0, output=0.0),
}


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        ("gpt-4o-mini", {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}, 0.75),
        ("gpt-4o", {"prompt_tokens": 2000, "completion_tokens": 500}, 0.005 + 0.005),
        (
            "gpt-4o",
            {
                "prompt_tokens": 2000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 1000},
            },
            (1000 * 2.5 + 1000 * 1.25 + 500 * 10) / 1e6,
        ),
        (
            "claude-sonnet",
            {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
            },
            (100 * 3 + 1000 * 0.3 + 200 * 3.75 + 50 * 15) / 1e6,
        ),
        ("llama-3.1-8b", {"prompt_tokens": 5000, "completion_tokens": 5000}, 0.0),
    ],
)
def test_cost_against_price_table(model: str, usage: dict[str, object], expected: float) -> None:
    assert cost_usd(TABLE[model], usage) == pytest.approx(expected)


def test_unknown_price_or_usage_costs_nothing() -> None:
    assert cost_usd(None, {"prompt_tokens": 10}) == 0.0
    assert cost_usd(TABLE["gpt-4o"], None) == 0.0


def test_cached_defaults_to_input_price() -> None:
    price = Price(input=1.0, output=2.0)
    usage = {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 40}}
    assert cost_usd(price, usage) == pytest.approx(100 / 1e6)


def test_usage_parse_is_defensive() -> None:
    u = Usage.parse(
        {
            "prompt_tokens": "12",
            "completion_tokens": -3,
            "prompt_tokens_details": {"cached_tokens": 10**9},
        }
    )
    assert u == Usage(0, 0, 0)
    u = Usage.parse({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 99}})
    assert u.cached_input_tokens == 10 and u.input_tokens == 0 and u.total_input_tokens == 10
    assert Usage.parse({"prompt_tokens": True}) == Usage()
    assert (Usage(1, 2, 3) + Usage(1, 1, 1, estimated=True)) == Usage(2, 3, 4, 0, True)


def test_parse_price_yaml_shape() -> None:
    assert (
        parse_price({"input": 0.15, "output": 0.6, "cached_input": 0.075}) == TABLE["gpt-4o-mini"]
    )
    for bad in (
        {"input": 1},
        {"input": 1, "output": "cheap"},
        {"input": 1, "output": 1, "discount": 2},
        {"input": -1, "output": 1},
        {"input": True, "output": 1},
    ):
        with pytest.raises(ValueError):
            parse_price(bad)
    with pytest.raises(ValueError):
        Price(input=math.nan, output=1)
