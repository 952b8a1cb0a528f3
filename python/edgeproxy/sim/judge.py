"""The simulated model as an LLM judge: a deterministic, documented verdict for a judge prompt.

A request whose last user message starts with the judge marker (``edgeproxy.evals.judge``
writes it: ``[edgeproxy-judge v1 mode=score]`` or ``mode=pairwise``) is answered with a JSON
verdict instead of prose. The simulated judge reads the prompt's tagged sections the way the
real judge is asked to (docs/evals.md, "The judge"):

- each criterion (``<criteria>``, a JSON list) gets a score from 1 to 10: with ``expect``
  phrases, ``1 + 9 x`` the share of them the answer contains (case-insensitive); otherwise,
  with a ``<reference>`` answer, ``1 + 9 x`` the share of the reference's content words (4+
  letters, not a stop word) the answer contains; without one, the right answer its answer book
  holds for the conversation's last user message stands in for it (a judge that knows the
  facts: how live requests, which carry no reference, are graded, e.g. ``auto``'s shadow
  traffic); with neither, ``1 + 9 x`` the share of the user's request's content words the
  answer uses (on topic or not: crude, but it tells an answer from a refusal). Scores are
  rounded to integers.
- ``mode=score``: ``{"scores": {criterion: score, ...}, "reason": ...}``.
- ``mode=pairwise``: the mean scores of ``<answer_a>`` and ``<answer_b>``; the higher wins, but
  when they are less than 1 point apart the judge prefers the answer shown first (``A``): a
  position bias on purpose, which judging in both orders cancels.
  ``{"winner": "A" | "B", "reason": ...}``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from edgeproxy.evals.judge import MARKER_PREFIX, section
from edgeproxy.sim.answers import AnswerBook

_WORD: Final = re.compile(r"[a-z0-9]+")
_STOP: Final = frozenset(
    [
        "about",
        "above",
        "after",
        "again",
        "also",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "from",
        "further",
        "have",
        "having",
        "here",
        "into",
        "itself",
        "just",
        "more",
        "most",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
        "yours",
    ]
)
# Mean scores closer than this are "about the same" to the simulated judge: it picks the first.
POSITION_BIAS_POINTS: Final = 1.0


def is_judge_prompt(text: str) -> bool:
    return text.lstrip().startswith(MARKER_PREFIX)


def verdict(prompt: str, book: AnswerBook | None = None) -> str:
    """The JSON the simulated judge answers ``prompt`` with (``book``: the right answers it
    knows, for prompts that carry no reference)."""
    mode = "pairwise" if "mode=pairwise" in prompt.split("\n", 1)[0] else "score"
    criteria = _criteria(section(prompt, "criteria"))
    # Without a reference: the book's right answer, else the request itself.
    conversation = section(prompt, "conversation")
    reference = (
        section(prompt, "reference") or _known_answer(conversation, book) or _request(conversation)
    )
    if mode == "score":
        answer = section(prompt, "answer") or ""
        scores = {name: _score(answer, expect, reference) for name, expect in criteria}
        return json.dumps({"scores": scores, "reason": "simulated judge: content overlap"})
    a = _mean(section(prompt, "answer_a") or "", criteria, reference)
    b = _mean(section(prompt, "answer_b") or "", criteria, reference)
    # Close calls go to the answer shown first: the bias that judging in both orders cancels.
    winner = "A" if abs(a - b) < POSITION_BIAS_POINTS or a > b else "B"
    return json.dumps(
        {"winner": winner, "reason": f"simulated judge: A scored {a:.1f}, B scored {b:.1f}"}
    )


def _known_answer(conversation: str | None, book: AnswerBook | None) -> str | None:
    """The book's right answer to the conversation's last user message (its text runs from the
    last ``user:`` line to the end: the judged request ends with it)."""
    if not conversation or book is None:
        return None
    lines = conversation.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("user:"):
            text = "\n".join([lines[i].removeprefix("user:"), *lines[i + 1 :]])
            entry = book.lookup(text)
            return entry.right if entry is not None else None
    return None


def _request(conversation: str | None) -> str | None:
    """The user's lines of the conversation section (``role: text`` lines)."""
    if not conversation:
        return None
    lines = [line for line in conversation.splitlines() if line.startswith("user:")]
    return " ".join(line.removeprefix("user:") for line in lines) or None


def _criteria(text: str | None) -> list[tuple[str, list[str]]]:
    try:
        data: Any = json.loads(text or "[]")
    except ValueError:
        data = []
    out: list[tuple[str, list[str]]] = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        expect = item.get("expect") or []
        out.append((item["name"], [str(e) for e in expect] if isinstance(expect, list) else []))
    return out or [("overall", [])]


def _mean(answer: str, criteria: list[tuple[str, list[str]]], reference: str | None) -> float:
    scores = [_score(answer, expect, reference) for _, expect in criteria]
    return sum(scores) / len(scores)


def _score(answer: str, expect: list[str], reference: str | None) -> int:
    lowered = answer.lower()
    if expect:
        share = sum(1 for phrase in expect if phrase.lower() in lowered) / len(expect)
    elif reference:
        wanted = _content_words(reference)
        share = len(wanted & _content_words(answer)) / len(wanted) if wanted else 1.0
    else:
        share = 1.0 if answer.strip() else 0.0  # nothing to compare with: any answer will do
    return round(1 + 9 * share)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in _STOP}
