"""A request's prompt, counted in tokens once per encoding and shared by everything that needs it.

Context-window routing, hedged attempts, the usage the proxy fills in and telemetry's count at a
stream's end all ask for the same number; each encoding is counted once per request, in a worker
thread for a large body (``tokens.count_chat_async``), and shared as one task.
"""

from __future__ import annotations

import asyncio

from edgeproxy import tokens
from edgeproxy.errors import TokenizerError


class PromptTokens:
    """The prompt tokens of one request body (a Chat Completions body, as JSON bytes)."""

    __slots__ = ("_counts", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._counts: dict[str, asyncio.Future[int]] = {}

    @classmethod
    def counted(cls, raw: bytes, encoding: str, tokens: int) -> PromptTokens:
        """A prompt whose count in ``encoding`` is already known (a compacted conversation,
        counted whole when it was made). Call it on the event loop."""
        prompt = cls(raw)
        done = asyncio.get_running_loop().create_future()
        done.set_result(tokens)
        prompt._counts[encoding] = done
        return prompt

    async def count(self, encoding: str) -> int:
        """The count in ``encoding``; shielded, so a caller that is cancelled (a hedge that
        lost) leaves the count to the others."""
        return await asyncio.shield(self._task(encoding))

    def now(self, encoding: str) -> int:
        """``count`` without waiting, for a ``finally`` that must not be cancelled half way:
        the shared count if it is done (``start`` began a large one early), else counted inline."""
        task = self._counts.get(encoding)
        if task is not None and task.done() and not task.cancelled():
            return task.result()
        try:
            return tokens.count_chat(self.raw, encoding).tokens
        except TokenizerError:
            return self.estimate()

    def start(self, encoding: str) -> None:
        """Begins counting a large prompt off the loop now (e.g. when its answer starts to
        stream), so that ``now`` at the stream's end finds it done."""
        if len(self.raw) >= tokens.OFF_LOOP_BYTES:
            self._task(encoding)

    def estimate(self) -> int:
        """For a body the counter refuses although the proxy accepted it (JSON nested deeper
        than the counter goes, e.g. in a tool schema): ~4 bytes a token, rather than failing an
        answer the upstream gave."""
        return -(-len(self.raw) // 4)

    def _task(self, encoding: str) -> asyncio.Future[int]:
        task = self._counts.get(encoding)
        if task is None:
            task = self._counts[encoding] = asyncio.ensure_future(self._count(encoding))
        return task

    async def _count(self, encoding: str) -> int:
        try:
            return (await tokens.count_chat_async(self.raw, encoding)).tokens
        except TokenizerError:
            return self.estimate()
