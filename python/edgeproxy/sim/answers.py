"""What a simulated model knows: the task of a prompt and its right answer (an answer book).

An eval suite's item carries a right answer (``reference``, or what its grader's expected value
implies: ``edgeproxy.evals.suite.reference_text``). The simulated market is given the book of its
suites (``sim/market.py``): for each item, the text of its last user message, its task, a right
answer and a wrong one. A request whose last user message is in the book is answered right or
wrong (``sim/play.py`` draws which from the model's quality on that task); the grader then judges
the text it gets, exactly as it would judge a real model's.

Prompts are matched on the last user message's text with whitespace collapsed, so the same item
is recognised in both wires (the Anthropic wire moves the system prompt out of ``messages``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

# The wrong answer to a text question: plain prose that shares no content word with the reference
# answers of the shipped suites (a judge scoring by content overlap gives it the lowest score).
WRONG_TEXT: Final = "I am not certain about this one, sorry."
_NUMBER: Final = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")


@dataclass(frozen=True, slots=True)
class AnswerKey:
    task: str
    right: str
    wrong: str


def fingerprint(text: str) -> str:
    """The book's key for a prompt: its last user message, whitespace collapsed."""
    normal = " ".join(text.split())
    return hashlib.blake2b(normal.encode(), digest_size=12).hexdigest()


class AnswerBook:
    """Prompt fingerprint -> ``AnswerKey``. Immutable once built."""

    def __init__(self, entries: Iterable[tuple[str, AnswerKey]] = ()) -> None:
        book: dict[str, AnswerKey] = {}
        for prompt, key in entries:
            fp = fingerprint(prompt)
            if fp in book and book[fp] != key:
                raise ValueError(
                    f"two book entries for the same prompt with different answers: {prompt[:60]!r}"
                )
            book[fp] = key
        self._book: Mapping[str, AnswerKey] = MappingProxyType(book)

    def lookup(self, last_user_text: str) -> AnswerKey | None:
        return self._book.get(fingerprint(last_user_text))

    def __len__(self) -> int:
        return len(self._book)

    def merged(self, other: AnswerBook) -> AnswerBook:
        return AnswerBook._of({**self._book, **other._book})

    @classmethod
    def _of(cls, book: Mapping[str, AnswerKey]) -> AnswerBook:
        made = cls()
        made._book = MappingProxyType(dict(book))
        return made


def wrong_answer(right: str) -> str:
    """A plausible wrong answer for ``right``: a different number, a JSON value with one field
    wrong, or prose that answers nothing."""
    if _NUMBER.match(right):
        value = float(right)
        wrong = value * 1.5 + 7
        return str(int(wrong)) if wrong.is_integer() else f"{wrong:.2f}"
    try:
        parsed = json.loads(right)
    except ValueError:
        return WRONG_TEXT
    if isinstance(parsed, dict) and parsed:
        return json.dumps(_spoiled(parsed))
    if isinstance(parsed, list) and parsed:
        return json.dumps(parsed[:-1])
    return WRONG_TEXT


def _spoiled(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its first field dropped: a near miss that schema checks and exact
    comparisons both catch."""
    first = next(iter(obj))
    return {k: v for k, v in obj.items() if k != first}
