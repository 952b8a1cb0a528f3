"""The project's exception tree.

Its root, ``EdgeProxyError``, is defined by the Rust extension (``edgeproxy._core``) so that errors
raised in Rust and in Python share one ancestor: ``except EdgeProxyError`` catches both.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy._core import (
    CacheError,
    EdgeProxyError,
    SseError,
    TokenizerError,
    TranslationError,
)

__all__ = [
    "CacheError",
    "EdgeProxyError",
    "PolicyError",
    "PolicyProblem",
    "SseError",
    "TokenizerError",
    "TranslationError",
]


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One thing wrong with a policy file, located as precisely as the YAML allows."""

    source: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str
    path: str = ""  # dotted path into the document, e.g. "routes.chat.chain[1]"

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {what}"


class PolicyError(EdgeProxyError):
    """A policy could not be loaded; ``problems`` lists every reason, each with file:line."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
