"""What a provider wire is: the one protocol every upstream wire plug-in implements.

Inside the proxy every exchange is OpenAI-shaped (a Chat Completions body in, a
``chat.completion`` or OpenAI SSE chunks out). A wire is everything that differs between a
provider's API and that shape: where to POST, the body and headers it wants, how its errors are
classified, how its answer and stream become OpenAI-shaped, and how it is probed for health.

A policy names a wire per provider (``kind``); the compiler resolves it once from the registry
(``edgeproxy.wires``) into ``Candidate.wire``, so the request path calls the candidate's wire and
never branches on its name. Adding a wire = one module implementing this protocol, one line in the
registry, its docs and its contract tests (CONTRIBUTING.md, "Adding a wire").

A wire whose provider also embeds text offers an ``EmbeddingsWire`` (``UpstreamWire.embeddings``):
the embeddings exchange (``server/embeddings.py``) sends through it, with the same headers,
failure classes and client error bodies as the wire's chat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgeproxy.failure import AttemptFailure

if TYPE_CHECKING:
    from edgeproxy.snapshot.policy import Candidate
    from edgeproxy.snapshot.settings import ProbeMode


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a wire cannot carry a request without changing its meaning (a field it lacks)."""

    reason: str
    param: str | None = None  # the request field to blame, for the client's error


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """One health probe over HTTP: never followed to another origin, its answer read capped."""

    method: str
    url: str
    # Provider auth included: kept out of repr so a probe is never printed with its key.
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = b""


class StreamTranslator(Protocol):
    """An upstream's own stream, turned into OpenAI chat SSE one network chunk at a time.

    ``feed`` and ``finish`` raise ``AttemptFailure`` for an in-stream error event (classified
    the wire's way) or bytes that are not a valid stream of the wire.
    """

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """The last bytes once the upstream closed the stream."""
        ...

    @property
    def usage(self) -> dict[str, Any] | None:
        """The upstream's usage, once it has been reported (OpenAI's field names, cached and
        cache-write tokens in ``prompt_tokens_details``)."""
        ...


class UpstreamWire(Protocol):
    """A provider API the proxy can send an OpenAI-shaped exchange to."""

    @property
    def name(self) -> str:
        """The policy's ``kind`` for this wire."""
        ...

    def endpoint_url(self, base_url: str, query: Mapping[str, str]) -> str:
        """The candidate's ``chat_url`` for a region's ``base_url`` (built once per policy)."""
        ...

    def url(self, candidate: Candidate, *, stream: bool) -> str:
        """Where one attempt is POSTed: ``candidate.chat_url`` for a wire with one endpoint;
        a wire whose path names the model or the mode (Gemini's) builds it from there."""
        ...

    def refusal(self, body: Mapping[str, Any]) -> Refusal | None:
        """None when this wire can carry the request as asked, else what it cannot carry."""
        ...

    def request_body(self, body: Mapping[str, Any], candidate: Candidate) -> bytes:
        """The OpenAI-shaped request as this candidate's API and model name want it."""
        ...

    def request_headers(
        self, candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str]
    ) -> dict[str, str]:
        """Every header of one attempt: the provider's auth and static headers, content
        negotiation, the request id and ``extra`` (trace context)."""
        ...

    def failure(
        self, status: int, body: bytes, headers: Mapping[str, str], content_type: str
    ) -> AttemptFailure:
        """A non-2xx answer, classified (``body`` is at most 64 KiB of it)."""
        ...

    def client_error_body(self, failure: AttemptFailure, request_id: str) -> tuple[bytes, str]:
        """A client error this upstream returned, as an OpenAI error body and its content type
        (the client's own wire re-shapes it again when it is not OpenAI)."""
        ...

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        """A 200 non-stream answer as an OpenAI ``chat.completion``: its bytes and parsed form.
        Raises ``AttemptFailure`` (malformed) when the answer is not what the wire promises."""
        ...

    def stream(
        self, *, include_usage: bool, request: Mapping[str, Any] | None = None
    ) -> StreamTranslator | None:
        """A translator for this wire's stream, or None when it already speaks OpenAI SSE
        (``request``: the inner body of the attempt, when the translator depends on it)."""
        ...

    def probe(self, candidate: Candidate, mode: ProbeMode, url: str | None) -> ProbeRequest:
        """The health probe of this candidate's region (``mode`` models, completion or url;
        ``tcp`` never reaches a wire)."""
        ...

    def probe_verdict(self, mode: ProbeMode, status: int) -> bool | None:
        """True healthy, False down, None inconclusive (busy) for a probe's HTTP status."""
        ...

    @property
    def embeddings(self) -> EmbeddingsWire | None:
        """The provider's embeddings API, or None when it has none (Anthropic)."""
        ...


# An input to embed: a text, or the tokens of one (OpenAI's wire takes both).
EmbeddingInput = str | list[int]


@dataclass(frozen=True, slots=True)
class EmbeddingsOptions:
    """What an embeddings request asks besides its inputs (OpenAI's fields)."""

    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None  # shortened vectors, when the client asks for them
    user: str | None = None
    # Fields the proxy does not know, for a wire that can pass them on (OpenAI-compatible
    # servers have their own); any other wire refuses them.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbeddedBatch:
    """One upstream call's answer: a vector per input, in input order."""

    # Floats, or base64 of little-endian float32 (OpenAI's ``encoding_format: base64``).
    vectors: list[list[float] | str]
    prompt_tokens: int | None  # the upstream's count, when it reports one
    model: str | None = None  # the model the upstream says answered


class EmbeddingsWire(Protocol):
    """A provider's embeddings API, in the wire's own URL, body and answer."""

    @property
    def max_inputs(self) -> int:
        """Inputs one request may carry (the provider's limit; a model may set a lower one)."""
        ...

    @property
    def max_tokens(self) -> int | None:
        """Tokens one request may carry, all inputs together (None: no such limit)."""
        ...

    def url(self, candidate: Candidate) -> str:
        """Where one batch is POSTed."""
        ...

    def refusal(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions
    ) -> Refusal | None:
        """None when the wire can carry the request, else what it cannot."""
        ...

    def request_body(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions, candidate: Candidate
    ) -> bytes:
        """One batch as the candidate's API and model name want it."""
        ...

    def answer(self, data: bytes, inputs: int) -> EmbeddedBatch:
        """A 200 answer holding ``inputs`` vectors; ``AttemptFailure`` (malformed) when not."""
        ...
