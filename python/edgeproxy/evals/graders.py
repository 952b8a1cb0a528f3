"""Grading an answer's text without a judge: exact, contains, regex, json_schema, numeric.

Each grader gives a score in 0..1 (these are pass/fail: 1 or 0) and a short detail saying why;
the judge (``judge.py``, run by the runner since it is a model call) gives graded scores.
Answers are graded as the text the model wrote; a tool call is graded as its arguments' JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

import jsonschema

from edgeproxy.evals.suite import (
    ContainsGrader,
    ExactGrader,
    JsonSchemaGrader,
    NumericGrader,
    RegexGrader,
)

# Graders read at most this much of an answer (a regex on an endless answer could take long).
MAX_GRADED_CHARS: Final = 64 * 1024
_NUMBER: Final = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FENCE: Final = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.S)
_QUOTES: Final = "\"'`\u201c\u201d\u2018\u2019"  # straight, back and curly quotes

TextGrader = ExactGrader | ContainsGrader | RegexGrader | JsonSchemaGrader | NumericGrader


@dataclass(frozen=True, slots=True)
class Grade:
    score: float  # 0..1
    detail: str


def normalise(text: str, case_sensitive: bool = False) -> str:
    """Trimmed, surrounding quotes and a final period dropped, whitespace collapsed, case-folded
    (unless ``case_sensitive``): "  'Paris.' " and "paris" are the same answer."""
    text = " ".join(text.split()).strip(_QUOTES).strip()
    text = text.removesuffix(".").strip(_QUOTES).strip()
    return text if case_sensitive else text.casefold()


def grade_text(grader: TextGrader, answer: str) -> Grade:
    answer = answer[:MAX_GRADED_CHARS]
    if isinstance(grader, ExactGrader):
        ok = normalise(answer, grader.case_sensitive) == normalise(
            grader.expected, grader.case_sensitive
        )
        return Grade(float(ok), "equal" if ok else "differs from the expected answer")
    if isinstance(grader, ContainsGrader):
        return _contains(grader, answer)
    if isinstance(grader, RegexGrader):
        pattern = grader.compiled()
        found = pattern.fullmatch(answer.strip()) if grader.fullmatch else pattern.search(answer)
        return Grade(float(found is not None), "matches" if found else "no match")
    if isinstance(grader, JsonSchemaGrader):
        return _json_schema(grader, answer)
    return _numeric(grader, answer)


def _contains(grader: ContainsGrader, answer: str) -> Grade:
    haystack = answer if grader.case_sensitive else answer.casefold()
    missing = [
        needle
        for needle in grader.expected
        if (needle if grader.case_sensitive else needle.casefold()) not in haystack
    ]
    found = len(grader.expected) - len(missing)
    ok = found > 0 if grader.any else not missing
    detail = "contains it" if ok else f"missing {', '.join(repr(m) for m in missing[:3])}"
    return Grade(float(ok), detail)


def json_answer(answer: str) -> Any:
    """The JSON value an answer holds (a Markdown code fence around it is allowed); ValueError
    when it holds none."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return json.loads(text)


def _json_schema(grader: JsonSchemaGrader, answer: str) -> Grade:
    try:
        value = json_answer(answer)
    except ValueError:
        return Grade(0.0, "not JSON")
    validator = jsonschema.Draft202012Validator(grader.schema_)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return Grade(1.0, "valid")
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return Grade(0.0, f"invalid at {where}: {error.message[:200]}")


def last_number(answer: str) -> float | None:
    """The last number written in the answer ("1,234.5" reads as 1234.5)."""
    found = _NUMBER.findall(answer)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _numeric(grader: NumericGrader, answer: str) -> Grade:
    value = last_number(answer)
    if value is None:
        return Grade(0.0, "no number in the answer")
    allowed = max(grader.tolerance, grader.relative * abs(grader.expected))
    ok = abs(value - grader.expected) <= allowed
    return Grade(float(ok), f"{value:g} {'within' if ok else 'outside'} {allowed:g} of expected")
