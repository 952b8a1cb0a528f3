"""Suites (the format, its checks, its hash) and the graders that read answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeproxy.evals.graders import Grade, grade_text, last_number, normalise
from edgeproxy.evals.suite import (
    ContainsGrader,
    ExactGrader,
    JsonSchemaGrader,
    NumericGrader,
    RegexGrader,
    SuiteError,
    load_suite,
    parse_suite,
    reference_text,
    resolve_suite,
    shipped_suites,
)


def suite_bytes(*items: dict[str, object], **top: object) -> bytes:
    return yaml.safe_dump({"name": "t", **top, "items": list(items)}).encode()


def item(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "a",
        "task": "qa",
        "messages": [{"role": "user", "content": "q?"}],
        "grader": {"type": "exact", "expected": "x"},
    }
    return {**base, **over}


# -- graders ----------------------------------------------------------------------------------


def grade(grader: dict[str, object], answer: str) -> Grade:
    parsed = parse_suite(suite_bytes(item(grader=grader)), "t.yaml").items[0].grader
    assert not isinstance(parsed, dict)
    return grade_text(parsed, answer)  # type: ignore[arg-type]


def test_exact_normalises_what_does_not_change_the_answer() -> None:
    assert normalise("  “Paris.” ") == "paris"
    assert grade({"type": "exact", "expected": "Paris"}, "'paris.'\n").score == 1.0
    assert grade({"type": "exact", "expected": "Paris"}, "Paris, France").score == 0.0
    assert grade({"type": "exact", "expected": "Au", "case_sensitive": True}, "AU").score == 0.0


def test_contains_all_or_any() -> None:
    both = {"type": "contains", "expected": ["Jane", "Austen"]}
    assert grade(both, "It was jane AUSTEN.").score == 1.0
    missing = grade(both, "Jane Eyre")
    assert missing.score == 0.0 and "Austen" in missing.detail
    assert grade({"type": "contains", "expected": ["x", "y"], "any": True}, "only y").score == 1.0
    assert grade({"type": "contains", "expected": "one"}, "one needle").score == 1.0


def test_regex_search_fullmatch_and_flags() -> None:
    assert grade({"type": "regex", "pattern": r"\b11:05\b"}, "It ends at 11:05.").score == 1.0
    assert grade({"type": "regex", "pattern": "11:05", "fullmatch": True}, "at 11:05").score == 0.0
    assert grade({"type": "regex", "pattern": "^yes$", "flags": "im"}, "no\nYES").score == 1.0


def test_json_schema_validates_fenced_json_and_refuses_the_rest() -> None:
    schema = {
        "type": "object",
        "required": ["invoice", "total"],
        "properties": {"invoice": {"const": "INV-1"}, "total": {"type": "number"}},
    }
    g = {"type": "json_schema", "schema": schema}
    assert grade(g, '```json\n{"invoice": "INV-1", "total": 3}\n```').score == 1.0
    wrong = grade(g, '{"invoice": "INV-2", "total": 3}')
    assert wrong.score == 0.0 and "invoice" in wrong.detail
    assert grade(g, '{"total": 3}').detail.startswith("invalid at (root)")
    assert grade(g, "Sure! Here it is: {invoice").detail == "not JSON"
    assert grade(g, "[1, 2]").score == 0.0


def test_numeric_reads_the_last_number_within_tolerance() -> None:
    assert last_number("From 1,234.5 to -2e3") == -2000.0
    assert last_number("no digits") is None
    assert grade({"type": "numeric", "expected": 252}, "6 x 14 x 3 = 252").score == 1.0
    assert grade({"type": "numeric", "expected": 0.3, "tolerance": 0.001}, "0.3000").score == 1.0
    assert grade({"type": "numeric", "expected": 100, "relative": 0.05}, "about 104").score == 1.0
    assert grade({"type": "numeric", "expected": 100, "relative": 0.05}, "about 106").score == 0.0
    assert grade({"type": "numeric", "expected": 1}, "none").detail == "no number in the answer"


def test_graders_read_a_bounded_prefix_of_a_huge_answer() -> None:
    answer = "a" * 5_000_000 + "NEEDLE"
    assert grade({"type": "contains", "expected": "NEEDLE"}, answer).score == 0.0
    assert grade({"type": "regex", "pattern": "NEEDLE"}, answer).score == 0.0


# -- suites -----------------------------------------------------------------------------------


def test_the_shipped_market_suite_loads_with_three_tasks_and_references() -> None:
    assert "market" in shipped_suites()
    suite = load_suite(resolve_suite("market"))
    assert suite.tasks == ["extraction", "qa", "writing"]
    assert len(suite.items) == 30
    # The simulator plays each item's right answer: every item has one.
    assert all(reference_text(i) is not None for i in suite.items)
    body = suite.request_body(suite.item("ex-01"))
    assert body["max_tokens"] == 300 and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system"


@pytest.mark.parametrize(
    ("items", "top", "expected"),
    [
        ([item(grader={"type": "exatc", "expected": "x"})], {}, "items[0].grader"),
        ([item(), item()], {}, "items[1] (id a): the id is used twice"),
        ([item(grader={"type": "regex", "pattern": "("})], {}, "not a valid regex"),
        (
            [item(grader={"type": "json_schema", "schema": {"type": "nope"}})],
            {},
            "not a valid JSON Schema",
        ),
        ([item(grader={"type": "judge", "mode": "pairwise"})], {}, "compares with a reference"),
        ([item(request={"model": "x"})], {}, "the eval sets model itself"),
        ([item(messages=[])], {}, "items[0].messages (id a)"),
        ([item(grader={"type": "numeric"})], {}, "items[0].grader.expected (id a): Field required"),
        ([item(grader={"type": "regex", "pattern": "x", "flags": "g"})], {}, "unknown regex flag"),
    ],
)
def test_invalid_suites_are_refused_with_the_place(
    items: list[dict[str, object]], top: dict[str, object], expected: str
) -> None:
    with pytest.raises(SuiteError) as info:
        parse_suite(suite_bytes(*items, **top), "bad.yaml")
    assert expected in str(info.value), info.value.problems


def test_files_that_are_not_suites() -> None:
    for raw in (b"- just\n- a list\n", b"name: [unclosed\n", b"\xff\xfe binary"):
        with pytest.raises(SuiteError):
            parse_suite(raw, "x.yaml")
    with pytest.raises(SuiteError, match="line 2: not JSON"):
        parse_suite(b'{"id": "a"}\n{broken\n', "x.jsonl")
    with pytest.raises(SuiteError, match="no shipped suite"):
        resolve_suite("does-not-exist")


def test_jsonl_suites_hold_one_item_per_line() -> None:
    lines = [
        json.dumps(item(id=f"i{n}", grader={"type": "exact", "expected": str(n)})) for n in range(3)
    ]
    suite = parse_suite("\n".join(lines).encode(), "/tmp/three.jsonl")
    assert suite.name == "three" and [i.id for i in suite.items] == ["i0", "i1", "i2"]


def test_the_hash_follows_content_not_formatting() -> None:
    data = {"name": "t", "items": [item()]}
    a = parse_suite(yaml.safe_dump(data).encode(), "a.yaml")
    b = parse_suite(json.dumps(data, indent=4).encode(), "b.yaml")
    assert a.hash == b.hash
    data["items"][0]["grader"]["expected"] = "y"  # type: ignore[index]
    c = parse_suite(yaml.safe_dump(data).encode(), "c.yaml")
    assert c.hash != a.hash


def test_reference_text_is_implied_by_answer_graders() -> None:
    def ref(grader: dict[str, object], **over: object) -> str | None:
        return reference_text(parse_suite(suite_bytes(item(grader=grader, **over)), "t").items[0])

    assert ref({"type": "exact", "expected": "Paris"}) == "Paris"
    assert ref({"type": "numeric", "expected": 252}) == "252"
    assert ref({"type": "numeric", "expected": 0.3}) == "0.3"
    assert ref({"type": "contains", "expected": ["a", "b"]}) == "a b"
    assert ref({"type": "regex", "pattern": "x"}) is None
    assert ref({"type": "regex", "pattern": "x"}, reference="x") == "x"
    assert json.loads(ref({"type": "json_schema", "schema": {}}, reference={"a": 1}) or "") == {
        "a": 1
    }


def test_grader_types_are_the_documented_ones() -> None:
    names = {
        g.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        for g in (ExactGrader, ContainsGrader, RegexGrader, JsonSchemaGrader, NumericGrader)
    }
    assert names == {"exact", "contains", "regex", "json_schema", "numeric"}


def test_eval_without_policy_reads_the_built_in_one_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeproxy.cli import main

    monkeypatch.chdir(tmp_path)  # no policies/ here: an installed wheel's situation
    assert main(["eval", "run", "--out", str(tmp_path / "card.json")]) == 2
    err = capsys.readouterr().err
    # The built-in policy loaded (it names no suite); no "policies/default.yaml" was looked for.
    assert "no suite: pass --suite or set evals.suite in the policy" in err
    assert "default.yaml" not in err and not (tmp_path / "card.json").exists()
