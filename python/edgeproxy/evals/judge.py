"""LLM-as-judge: the prompt the judge gets and how its verdict is read (docs/evals.md).

The judge is a candidate the policy names (``evals.judge``). It gets a system prompt with the
instructions and the JSON it must answer with, and a user message that starts with a marker line
(``[edgeproxy-judge v1 mode=score]``) followed by tagged sections: ``<task>``, ``<conversation>``
(the item's messages), ``<criteria>`` (a JSON list of ``{name, description, expect}``),
``<reference>`` (when there is one) and ``<answer>`` (``mode=pairwise``: ``<answer_a>`` and
``<answer_b>``). Text put into a section cannot close it: tags in it are defused.

- ``score``: the judge answers ``{"scores": {criterion: 1..10}, "reason": "..."}``; the item's
  score is ``(mean - 1) / 9``, in 0..1.
- ``pairwise``: ``{"winner": "A" | "B" | "tie", "reason": "..."}``; the item is judged twice,
  the candidate's answer shown first, then second, so a judge that favours a position cancels
  out: the candidate wins (1.0) only if it wins both orders, loses (0.0) only if it loses both,
  and ties (0.5) otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from edgeproxy.evals.suite import Criterion

MARKER_PREFIX: Final = "[edgeproxy-judge v1"
_TAGS: Final = ("task", "conversation", "criteria", "reference", "answer", "answer_a", "answer_b")
_TAG_RE: Final = re.compile(r"<(/?)(" + "|".join(_TAGS) + r")>", re.IGNORECASE)

SYSTEM_SCORE: Final = (
    "You are an impartial evaluator of AI assistant answers. Score the answer in <answer> "
    "against each criterion in <criteria> (a JSON list; `expect` lists phrases a good answer "
    "contains), from 1 (fails it) to 10 (fully meets it). Use <reference>, when present, as a "
    "known-good answer. Reply with JSON only: "
    '{"scores": {"<criterion name>": <integer 1-10>, ...}, "reason": "<one sentence>"}'
)
SYSTEM_PAIRWISE: Final = (
    "You are an impartial evaluator of AI assistant answers. Compare <answer_a> and <answer_b> "
    "to the conversation, against the criteria in <criteria> (a JSON list; `expect` lists "
    "phrases a good answer contains). The order in which they are shown says nothing about "
    'their quality. Reply with JSON only: {"winner": "A" | "B" | "tie", "reason": '
    '"<one sentence>"}'
)

Winner = Literal["A", "B", "tie"]


class JudgeError(ValueError):
    """The judge's answer is not a verdict the prompt asked for."""


def defuse(text: str) -> str:
    """``text`` with the section tags made inert (``<answer>`` -> ``<answer >``)."""
    return _TAG_RE.sub(lambda m: f"<{m.group(1)}{m.group(2)} >", text)


def section(prompt: str, name: str) -> str | None:
    """The text of section ``name`` in a judge prompt (None when absent)."""
    match = re.search(rf"^<{name}>\n(.*?)\n</{name}>$", prompt, re.S | re.M)
    return match.group(1) if match else None


def _render(mode: str, task: str, conversation: str, criteria: Sequence[Criterion]) -> list[str]:
    criteria_json = json.dumps(
        [c.model_dump(exclude_defaults=False) for c in criteria], ensure_ascii=False
    )
    return [
        f"{MARKER_PREFIX} mode={mode}]",
        f"<task>\n{defuse(task)}\n</task>",
        f"<conversation>\n{defuse(conversation)}\n</conversation>",
        f"<criteria>\n{defuse(criteria_json)}\n</criteria>",
    ]


def conversation_text(messages: Sequence[dict[str, Any]]) -> str:
    """The item's messages as ``role: text`` lines (content parts' text joined)."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
        lines.append(f"{message.get('role', 'user')}: {content if content is not None else ''}")
    return "\n".join(lines)


def score_messages(
    task: str,
    conversation: str,
    criteria: Sequence[Criterion],
    answer: str,
    reference: str | None,
) -> list[dict[str, str]]:
    parts = _render("score", task, conversation, criteria)
    if reference is not None:
        parts.append(f"<reference>\n{defuse(reference)}\n</reference>")
    parts.append(f"<answer>\n{defuse(answer)}\n</answer>")
    return [
        {"role": "system", "content": SYSTEM_SCORE},
        {"role": "user", "content": "\n".join(parts)},
    ]


def pairwise_messages(
    task: str, conversation: str, criteria: Sequence[Criterion], first: str, second: str
) -> list[dict[str, str]]:
    parts = _render("pairwise", task, conversation, criteria)
    parts.append(f"<answer_a>\n{defuse(first)}\n</answer_a>")
    parts.append(f"<answer_b>\n{defuse(second)}\n</answer_b>")
    return [
        {"role": "system", "content": SYSTEM_PAIRWISE},
        {"role": "user", "content": "\n".join(parts)},
    ]


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object in the judge's answer (code fences and words around it are allowed)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise JudgeError("the judge's answer holds no JSON object")
    try:
        data = json.loads(text[start : end + 1])
    except ValueError:
        raise JudgeError("the judge's answer is not valid JSON") from None
    if not isinstance(data, dict):
        raise JudgeError("the judge's answer is not a JSON object")
    return data


def parse_scores(text: str, criteria: Sequence[Criterion]) -> dict[str, int]:
    """Each criterion's score (1..10) from a ``score`` verdict; JudgeError when one is missing
    or out of range."""
    scores = _json_object(text).get("scores")
    if not isinstance(scores, dict):
        raise JudgeError("the verdict has no 'scores' object")
    out: dict[str, int] = {}
    for criterion in criteria:
        value = scores.get(criterion.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JudgeError(f"the verdict has no score for {criterion.name!r}")
        if not 1 <= value <= 10:
            raise JudgeError(f"the score for {criterion.name!r} is {value}, not in 1..10")
        out[criterion.name] = round(value)
    return out


def normalised(scores: dict[str, int]) -> float:
    """Mean criterion score mapped from 1..10 to 0..1."""
    return (sum(scores.values()) / len(scores) - 1) / 9


def parse_winner(text: str) -> Winner:
    winner = _json_object(text).get("winner")
    if isinstance(winner, str) and winner.strip().upper() in ("A", "B"):
        return "A" if winner.strip().upper() == "A" else "B"
    if isinstance(winner, str) and winner.strip().lower() == "tie":
        return "tie"
    raise JudgeError("the verdict's 'winner' is not A, B or tie")


@dataclass(frozen=True, slots=True)
class PairwiseOutcome:
    """The candidate against the reference, judged in both orders."""

    candidate_first: Winner  # the verdict with the candidate's answer as A
    candidate_second: Winner  # the verdict with the candidate's answer as B

    @property
    def score(self) -> float:
        wins = (self.candidate_first == "A") + (self.candidate_second == "B")
        losses = (self.candidate_first == "B") + (self.candidate_second == "A")
        if wins == 2:
            return 1.0
        if losses == 2:
            return 0.0
        return 0.5

    @property
    def position_bias(self) -> bool:
        """Both verdicts preferred the same position (so the other order flipped the winner)."""
        return self.candidate_first == self.candidate_second != "tie"
