"""What an ingress wire is: the API an app speaks to the proxy (OpenAI Chat Completions,
Anthropic Messages), as one plug-in per wire.

Inside the proxy every exchange is OpenAI-shaped. An ingress wire is everything that differs at
the edge: the path it serves, how its requests are checked and turned into the inner shape,
how the proxy's refusals are rendered (its error format, with the request id), how an answer and
a stream go back out. The registry (``server.ingress``) maps paths to wires; nothing else in the
server branches on which wire the client speaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from edgeproxy.errors import EdgeProxyError
from edgeproxy.failure import AttemptFailure


class ClientError(EdgeProxyError):
    """A request the proxy refuses, or an answer it cannot give: rendered by the client's
    ingress wire in that wire's error format, with the request id.

    ``code`` and ``param`` are OpenAI's fields (a wire without them leaves them out); ``type`` is
    the error type in the client's wire when the raiser knows it (each wire falls back to the
    type its API uses for ``status``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class IngressRequest:
    """A client's request, checked, in the proxy's inner (OpenAI) shape."""

    body: dict[str, Any]
    raw: bytes  # ``body`` as JSON bytes: what the cache key and the token counts read
    model: str  # the model name the client asked for (routing; echoed in answers)
    # Fields of the client's own request that its wire echoes in answers (the Responses API's
    # ``instructions``, ``tools``, ...); empty for a wire that echoes nothing.
    echo: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class StreamEncoder(Protocol):
    """Turns the OpenAI SSE the relay produces into the client's stream."""

    def encode(self, sse: bytes) -> bytes: ...

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        """The in-band error that ends a committed stream (``upstream``: the upstream's own
        OpenAI error event data, when it sent one)."""
        ...

    def close(self) -> bytes:
        """Bytes that end a complete stream."""
        ...


class IngressWire(Protocol):
    """An API apps speak to the proxy."""

    @property
    def name(self) -> str:
        """Scopes cache entries (an answer stored for one wire is never replayed to another)."""
        ...

    @property
    def path(self) -> str:
        """The endpoint that serves this wire's chat requests (``POST``)."""
        ...

    @property
    def request_id_headers(self) -> tuple[str, ...]:
        """The headers that carry the request id on every answer of this wire (where its SDK
        reads it: ``x-request-id`` for OpenAI's, ``request-id`` for Anthropic's)."""
        ...

    def parse(self, raw: bytes) -> IngressRequest:
        """Check the body (its own rules, its own words) and turn it into the inner shape;
        ``ClientError`` when it cannot be served."""
        ...

    def not_served(self, model: str, served: Sequence[str]) -> ClientError:
        """The error for a model name no route serves."""
        ...

    def error_response(self, err: ClientError, request_id: str) -> web.Response:
        """``err`` in this wire's error format (the request id in the body and a header)."""
        ...

    def answer(self, response: web.Response, request: IngressRequest, rid: str) -> web.Response:
        """A finished (non-stream) inner answer, or an error passed through, in this wire."""
        ...

    def stream(self, request: IngressRequest) -> StreamEncoder:
        """The encoder of one stream to the client."""
        ...

    def local_endpoints(self) -> Sequence[tuple[str, LocalAnswer]]:
        """Other ``POST`` paths this wire answers itself, without an upstream."""
        ...


class LocalAnswer(Protocol):
    """An answer an ingress serves itself from the raw body (e.g. Anthropic's count_tokens)."""

    async def __call__(self, raw: bytes, request_id: str) -> web.Response: ...
