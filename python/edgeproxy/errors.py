"""The project's exception tree.

Its root, ``EdgeProxyError``, is defined by the Rust extension (``edgeproxy._core``) so that errors
raised in Rust and in Python share one ancestor: ``except EdgeProxyError`` catches both. Every
exception the proxy defines derives from it (a test walks the package to keep it so); where a
standard meaning fits, it is a second base (``except TimeoutError`` still catches
``FollowerTimeout``)::

    EdgeProxyError
    ├── SseError, CacheError, TokenizerError, TranslationError, TaskError   (Rust: _core)
    ├── PolicyError                  a policy that cannot load; .problems, each with file:line
    ├── ClientError                  a request refused, in the client's wire (server.ingress)
    ├── AttemptFailure               one upstream attempt failed, classified (failure)
    │   └── UpstreamErrorEvent       an in-band error event from the upstream's stream
    ├── PassThrough                  an upstream client error handed back as is (attempt loop)
    ├── Overloaded                   shed by the concurrency limit
    ├── UpstreamConnectionError      (also ConnectionError) a connection lost or not made
    │   └── ConnectFailed
    ├── ClientWriteTimeout           a client did not read a stream before the deadline
    ├── LeaderFailed, FollowerTimeout (also TimeoutError)   coalesced identical requests
    ├── FileRefused                  a policy or key file that may not be read
    ├── Refused                      key auth failed: missing, unknown, revoked or expired (keys)
    ├── StoreAway                    the key store cannot be asked now: the ring keeps its table
    ├── LimitsMisconfigured (also ValueError)   keys/limits/fleet settings serve cannot start with
    │   └── KeyStoreMissing          key auth on without a key store (serve refuses)
    ├── GeminiStreamError            an error inside a Gemini stream (translate.gemini)
    ├── FailedResponse               a Responses API answer that failed (translate.openai_responses)
    ├── FleetUnavailable             Redis away or slower than its bound: serve on local state
    ├── TracingConfigError, MetricsConfigError (also ValueError)   OTEL_* settings
    ├── ExamplesError (also ValueError)   edgeproxy tasks train/eval: a bad example file
    └── SuiteError, ScorecardError, JudgeError, ProgressError (also ValueError), CapReached
                                     edgeproxy eval
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
