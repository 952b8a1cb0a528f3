"""Scorecards: a frozen, versioned type; anything else is refused with a clear error."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeproxy.evals.scorecard import (
    Cell,
    Interval,
    PolicyInfo,
    Scorecard,
    ScorecardError,
    Spread,
    SuiteInfo,
    dumps,
    load_scorecard,
    now,
    parse_scorecard,
    save_scorecard,
)


def a_cell(candidate: str = "p/r/m", task: str = "qa") -> Cell:
    q = Interval(mean=0.8, low=0.6, high=0.9, method="wilson")
    return Cell(
        candidate=candidate,
        task=task,
        requests=10,
        graded=10,
        successes=8,
        failed=0,
        quality=q,
        success_rate=q,
        cost_usd=0.001,
        cost_total_usd=0.01,
        input_tokens=50.0,
        output_tokens=7.0,
        ttft_s=Spread(p50=0.1, p95=0.2, mean=0.12),
        latency_s=Spread(p50=0.3, p95=0.5, mean=0.33, mean_low=0.3, mean_high=0.36),
        attempts=11,
        error_rate=1 / 11,
        retry_rate=0.1,
    )


def a_card() -> Scorecard:
    return Scorecard(
        created=now(),
        suite=SuiteInfo(name="t", hash="abc", items=10, tasks=("qa",)),
        policy=PolicyInfo(source="p.yaml", version="v1"),
        spent_usd=0.01,
        cells=(a_cell(), a_cell("q/r/m")),
    )


def test_round_trip_and_frozen(tmp_path: Path) -> None:
    card = a_card()
    path = tmp_path / "deep" / "card.json"
    save_scorecard(card, path)
    loaded = load_scorecard(path)
    assert loaded == card
    assert loaded.cell("q/r/m", "qa") == a_cell("q/r/m")
    assert loaded.cell("q/r/m", "writing") is None
    assert loaded.candidates == ("p/r/m", "q/r/m") and loaded.tasks == ("qa",)
    with pytest.raises(ValidationError):
        loaded.cells[0].cost_usd = 0  # type: ignore[misc]
    assert not list(path.parent.glob(".card.json.*"))  # the temporary file is gone


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dumps(a_card()))
    return data


def _mutated(change: Any) -> bytes:
    data = _raw()
    change(data)
    return json.dumps(data).encode()


CORRUPT: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not JSON"),
    ("truncated", dumps(a_card())[:200], "not JSON"),
    ("binary", bytes(range(256)), "not JSON"),
    ("a list", b"[1, 2, 3]", "not an edgeproxy scorecard"),
    ("another program's JSON", b'{"version": 1, "providers": {}}', "not an edgeproxy scorecard"),
    ("a newer format", _mutated(lambda d: d.update(version=2)), "this edgeproxy reads version 1"),
    (
        "a negative cost",
        _mutated(lambda d: d["cells"][0].update(cost_usd=-1)),
        "cells.0.cost_usd",
    ),
    (
        "an interval upside down",
        _mutated(lambda d: d["cells"][0]["quality"].update(low=0.95)),
        "low <= mean <= high",
    ),
    (
        "more successes than requests",
        _mutated(lambda d: d["cells"][0].update(successes=11)),
        "successes <= graded <= requests",
    ),
    ("a cell twice", _mutated(lambda d: d["cells"].append(d["cells"][0])), "appears twice"),
    ("a missing field", _mutated(lambda d: d["cells"][0].pop("quality")), "Field required"),
    ("an unknown field", _mutated(lambda d: d["cells"][0].update(bonus=1)), "bonus"),
    ("a string for a number", _mutated(lambda d: d.update(spent_usd="lots")), "spent_usd"),
    ("NaN", dumps(a_card()).replace(b'"cost_usd": 0.001', b'"cost_usd": NaN'), "not JSON"),
]


@pytest.mark.parametrize(("name", "data", "message"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_or_foreign_files_are_refused_clearly(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / "card.json"
    path.write_bytes(data)
    with pytest.raises(ScorecardError) as info:
        load_scorecard(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unreadable_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScorecardError, match="cannot read it"):
        load_scorecard(tmp_path / "missing.json")
    with pytest.raises(ScorecardError, match="cannot read it"):
        load_scorecard(tmp_path)  # a directory


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cells", "suite", "policy", "created", "repeats", "complete"]),
            st.one_of(
                st.none(),
                st.integers(-5, 5),
                st.floats(allow_nan=False),
                st.text(max_size=5),
                st.lists(st.integers(-(2**40), 2**40), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2),
            ),
        ),
        max_size=3,
    ),
    st.integers(0, 3000),
)
def test_any_damage_is_a_scorecard_error_never_a_crash(
    changes: list[tuple[str, Any]], cut: int
) -> None:
    data = _raw()
    for name, replacement in changes:
        data[name] = replacement
    raw = orjson.dumps(data)
    for blob in (raw, raw[:cut]):
        with contextlib.suppress(ScorecardError):
            parse_scorecard(blob)
