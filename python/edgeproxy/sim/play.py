"""How a simulated model with a profile answers one request (the market; docs/simulator.md).

1. The task: the answer book's entry for the last user message (``sim/answers.py``), else the
   body's ``metadata.task`` (OpenAI wire), else none (the profile's ``default``).
2. Right or wrong: a seeded draw against the task's ``quality``. The draw is a hash of (seed,
   model, prompt, how many times this model saw this prompt), so a run is reproducible whatever
   the order in which concurrent requests arrive, and repeats of one prompt draw afresh.
3. The text: the book's right or wrong answer; a judge prompt gets the simulated judge's verdict
   (``sim/judge.py``); a prompt the book does not know gets the usual filler text.
4. Hidden reasoning tokens: ``(verbosity - 1) x`` the visible ones, billed as output and
   generated before the first visible token. ``max_tokens`` caps hidden and visible together
   (reasoning first, as real reasoning models do: a tight cap leaves an empty, ``length`` answer).
5. The pace: ``ttft + reasoning / tokens_per_second`` to the first visible token, then one
   token every ``1 / tokens_per_second``; all times multiplied by ``SimConfig.time_scale``.
6. A failure: with probability ``error_rate`` the answer breaks half-way (fault ``overloaded``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from .answers import AnswerBook, fingerprint
from .completion import Completion, plan_completion
from .config import SimConfig
from .faults import Fault
from .judge import is_judge_prompt, verdict
from .profiles import ModelProfile
from .request import ChatRequest
from .tools import last_user_text

PIECE: Final = re.compile(r"\s*\S+")
_MAX_SEEN: Final = 100_000


@dataclass(frozen=True, slots=True)
class Play:
    completion: Completion
    ttft: float  # seconds to the first visible token, time scale applied
    interval: float  # seconds per visible token, time scale applied
    fault: Fault | None  # the profile's failure for this request, if drawn
    task: str | None
    right: bool | None  # None: the book does not know the prompt (or a judge prompt)


class Player:
    """The per-provider state of the market's models: their profiles (replaceable live through
    the control API) and how often each model has seen each prompt."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.profiles: dict[str, ModelProfile] = dict(config.profiles)
        self.book: AnswerBook = config.answers or AnswerBook()
        # (model, prompt fingerprint, salt) -> draws so far; bounded, as live traffic has no end.
        self._seen: Counter[tuple[str, str, str]] = Counter()

    def play(self, chat: ChatRequest, body: bytes = b"") -> Play | None:
        """The answer of a profiled model, or None when ``chat.model`` has no profile. ``body``
        is the raw request (its ``metadata.task`` names the task of a prompt not in the book)."""
        profile = self.profiles.get(chat.model)
        if profile is None:
            return None
        prompt = last_user_text(chat.messages)
        entry = self.book.lookup(prompt)
        task = entry.task if entry is not None else _metadata_task(body)
        task_profile = profile.for_task(task)
        right: bool | None = None
        base = plan_completion(self.config, chat)
        text: str | None = None
        if base.tool_call is None and is_judge_prompt(prompt):
            text = verdict(prompt, self.book)
        elif base.tool_call is None and entry is not None:
            right = self._draw(chat.model, prompt, "right") < task_profile.quality
            text = entry.right if right else entry.wrong
        pieces = PIECE.findall(text) if text is not None else list(base.pieces)
        finish = "stop" if text is not None else base.finish_reason
        visible_count = len(base.tool_call.pieces) if base.tool_call is not None else len(pieces)
        reasoning = round(visible_count * (task_profile.verbosity - 1))
        if chat.max_tokens is not None and reasoning + visible_count > chat.max_tokens:
            reasoning = min(reasoning, chat.max_tokens)
            if base.tool_call is None:
                pieces = pieces[: chat.max_tokens - reasoning]
                finish = "length"
        completion = replace(base, pieces=pieces, finish_reason=finish, reasoning_tokens=reasoning)
        scale = self.config.time_scale
        interval = task_profile.token_interval
        fault = None
        if self._draw(chat.model, prompt, "error") < task_profile.error_rate:
            fault = Fault(mode="overloaded", after_tokens=max(1, visible_count // 2))
        return Play(
            completion=completion,
            ttft=(task_profile.ttft + reasoning * interval) * scale,
            interval=interval * scale,
            fault=fault,
            task=task,
            right=right,
        )

    def _draw(self, model: str, prompt: str, salt: str) -> float:
        """A uniform number in [0, 1), from (seed, model, prompt, salt, times drawn so far)."""
        key = (model, fingerprint(prompt), salt)
        if len(self._seen) >= _MAX_SEEN and key not in self._seen:
            self._seen.clear()
        n = self._seen[key]
        self._seen[key] = n + 1
        digest = hashlib.blake2b(
            f"{self.config.seed}\0{model}\0{salt}\0{n}\0{key[1]}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2**64


def _metadata_task(body: bytes) -> str | None:
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    task = metadata.get("task") if isinstance(metadata, dict) else None
    return task if isinstance(task, str) and task else None
