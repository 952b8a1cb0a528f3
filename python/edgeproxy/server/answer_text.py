"""A streamed answer's text: kept whole only while a resume may need it, counted for usage in
pieces as it grows, so that neither the text nor its final count grows with an endless stream."""

from __future__ import annotations

from typing import Final

from edgeproxy import tokens

# A committed answer longer than this is not resumed: its text would go to the next candidate as a
# prefill, and 256 Ki characters (~64 Ki tokens) fill most models' context windows on their own.
MAX_RESUME_CHARS: Final = 256 * 1024
# The answer's text is counted for usage in pieces of about this size, in a worker thread (the
# size at which ``tokens.count_async`` leaves the event loop); only the last, shorter piece is
# counted inline.
COUNT_PIECE_CHARS: Final = tokens.OFF_LOOP_BYTES
# Malformed events skipped after the commit point before the stream is ended as broken.
MAX_SKIPPED_EVENTS: Final = 3


class AnswerText:
    """Choice 0's text, kept only as far as it is needed: whole for a resume, while one is
    possible and the text is short enough (``MAX_RESUME_CHARS``); the part not yet counted for
    usage, until it is counted (``take_piece`` hands out pieces of ``COUNT_PIECE_CHARS`` cut at a
    point where the tokenizers split anyway, so the sum of the pieces' counts is the count of
    the whole, exactly, for the OpenAI encodings).
    """

    __slots__ = (
        "_kept",
        "_kept_chars",
        "_uncounted",
        "_uncounted_chars",
        "capture_chars",
        "captured",
        "chars",
        "counted",
    )

    def __init__(self) -> None:
        self._kept: list[str] | None = []  # None: not kept (too long, or no resume possible)
        self._kept_chars = 0
        self._uncounted: list[str] = []
        self._uncounted_chars = 0
        self.chars = 0  # all the text seen
        self.counted = 0  # completion tokens of the pieces counted so far
        # The answer's head, for a span when the policy captures content (0: not kept).
        self.capture_chars = 0
        self.captured: list[str] = []

    def append(self, text: str) -> None:
        if self.chars < self.capture_chars:
            self.captured.append(text[: self.capture_chars - self.chars])
        self.chars += len(text)
        if self._kept is not None:
            self._kept_chars += len(text)
            if self._kept_chars > MAX_RESUME_CHARS:
                self._kept = None
            else:
                self._kept.append(text)
        self._uncounted.append(text)
        self._uncounted_chars += len(text)

    def __bool__(self) -> bool:
        return self.chars > 0

    @property
    def keeping(self) -> bool:
        return self._kept is not None

    def stop_keeping(self) -> None:
        """No resume can use the text: keep none of it."""
        self._kept = None

    @property
    def kept(self) -> str | None:
        """The whole text, or None when it is not kept."""
        return "".join(self._kept) if self._kept is not None else None

    def uncounted(self) -> str:
        return "".join(self._uncounted)

    def take_piece(self) -> str | None:
        """A piece to count, once ``COUNT_PIECE_CHARS`` are waiting (None before); the rest
        waits for the next piece or ``uncounted``."""
        if self._uncounted_chars < COUNT_PIECE_CHARS:
            return None
        text = "".join(self._uncounted)
        cut = split_point(text)
        self._uncounted = [text[cut:]] if cut < len(text) else []
        self._uncounted_chars = len(text) - cut
        return text[:cut]


def split_point(text: str, look_back: int = 4096) -> int:
    """Where ``text`` may be cut so that counting the two parts apart gives the count of the
    whole: the last space in its final ``look_back`` characters that follows a non-space and
    precedes a letter (the OpenAI encodings' pre-tokenizers always start a piece there, and
    nothing before it depends on what follows); else its end (text without such a space, e.g. a
    base64 blob: counted apart, such a piece may be off by a token or two)."""
    stop = max(0, len(text) - look_back)
    i = text.rfind(" ", stop)
    while i > 0:
        if i + 1 < len(text) and text[i + 1].isalpha() and not text[i - 1].isspace():
            return i
        i = text.rfind(" ", stop, i)
    return len(text)
