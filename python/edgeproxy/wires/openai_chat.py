"""The OpenAI Chat Completions wire (policy ``kind: openai``): OpenAI, Azure OpenAI, Gemini's
OpenAI-compatible endpoint, vLLM, Ollama, LocalAI. The proxy's own shape, so bodies, answers and
streams pass through; only the model name is replaced, and Anthropic's prompt-cache breakpoints
(``cache_control``, which the inner shape carries for Anthropic upstreams) are left out: OpenAI
caches prefixes by itself, and strict OpenAI-compatible servers refuse fields they do not know.

Its embeddings (``POST {base_url}/embeddings``, docs/embeddings.md) pass through the same way:
a batch of at most 2,048 inputs and 300,000 tokens (OpenAI's limits), the client's
``encoding_format``, ``dimensions``, ``user`` and any other field as sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass, classify_status
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import (
    EmbeddedBatch,
    EmbeddingInput,
    EmbeddingsOptions,
    ProbeRequest,
    Refusal,
    StreamTranslator,
)
from edgeproxy.translate import thinking
from edgeproxy.translate.cache_markers import without_cache_control
from edgeproxy.wires import common


class OpenAIEmbeddings:
    """``POST {base_url}/embeddings``: OpenAI's own shape, so only the model is set."""

    max_inputs: Final = 2048
    max_tokens: Final = 300_000

    def url(self, candidate: Candidate) -> str:
        return common.with_query_of(
            candidate.base_url.rstrip("/") + "/embeddings", candidate.chat_url
        )

    def refusal(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions
    ) -> Refusal | None:
        return None  # texts, tokens and the client's other fields all pass through

    def request_body(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions, candidate: Candidate
    ) -> bytes:
        body: dict[str, Any] = {**options.extra, "model": candidate.upstream_model}
        body["input"] = list(inputs)
        body["encoding_format"] = options.encoding_format
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        if options.user is not None:
            body["user"] = options.user
        return orjson.dumps(body)

    def answer(self, data: bytes, inputs: int) -> EmbeddedBatch:
        parsed = common.json_answer(data)
        if not isinstance(parsed, dict):
            raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not a JSON object")
        vectors = common.embedding_vectors(parsed.get("data"), inputs)
        usage = parsed.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        valid = isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens < 2**53
        model = parsed.get("model")
        return EmbeddedBatch(
            vectors, tokens if valid else None, model if isinstance(model, str) else None
        )


class OpenAIChatWire:
    name: Final = "openai"
    embeddings: Final = OpenAIEmbeddings()

    def endpoint_url(self, base_url: str, query: Mapping[str, str]) -> str:
        url = base_url.rstrip("/") + "/chat/completions"
        return f"{url}?{urlencode(query)}" if query else url

    def url(self, candidate: Candidate, *, stream: bool) -> str:
        return candidate.chat_url

    def refusal(self, body: Mapping[str, Any]) -> Refusal | None:
        # The proxy's own shape: anything the client sent can be carried, except Anthropic's
        # extended thinking (``translate.thinking``): OpenAI's reasoning takes an effort level,
        # and guessing one from a token budget would change the request silently.
        if thinking.X_ANTHROPIC in body:
            return Refusal("the OpenAI wire has no Anthropic extended thinking", "thinking")
        return None

    def request_body(self, body: Mapping[str, Any], candidate: Candidate) -> bytes:
        data = self._dumped(body, candidate)
        # The common case pays one byte search; a body with marks is serialised again without.
        if b'"cache_control"' in data:
            plain = without_cache_control(body)
            if plain is not body:
                data = self._dumped(plain, candidate)
        return data

    @staticmethod
    def _dumped(body: Mapping[str, Any], candidate: Candidate) -> bytes:
        if body.get("model") == candidate.upstream_model:
            return orjson.dumps(body)
        return orjson.dumps({**body, "model": candidate.upstream_model})

    def request_headers(
        self, candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str]
    ) -> dict[str, str]:
        return common.request_headers(
            candidate.headers, stream=stream, request_id=request_id, extra=extra
        )

    def failure(
        self, status: int, body: bytes, headers: Mapping[str, str], content_type: str
    ) -> AttemptFailure:
        code = common.error_code(body)
        failure = classify_status(status, code)
        assert failure is not None  # only non-2xx answers reach here
        return common.status_failure(failure, status, body, headers, content_type, code)

    def client_error_body(self, failure: AttemptFailure, request_id: str) -> tuple[bytes, str]:
        return failure.body, failure.content_type

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        parsed = common.json_answer(data)
        choices = parsed.get("choices") if isinstance(parsed, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise AttemptFailure(
                FailureClass.MALFORMED, "upstream answer has no 'choices' array of objects"
            )
        return data, parsed

    def stream(
        self, *, include_usage: bool, request: Mapping[str, Any] | None = None
    ) -> StreamTranslator | None:
        return None  # OpenAI SSE already: the relay's scanner checks it as it passes

    def probe(self, candidate: Candidate, mode: ProbeMode, url: str | None) -> ProbeRequest:
        if mode == "completion":
            body = {
                "model": candidate.upstream_model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            }
            headers = {**candidate.headers, "Content-Type": "application/json"}
            return ProbeRequest("POST", candidate.chat_url, headers, orjson.dumps(body))
        target = url if mode == "url" and url else candidate.base_url.rstrip("/") + "/models"
        return ProbeRequest(
            "GET", target, common.probe_headers(candidate.headers, candidate.base_url, target)
        )

    def probe_verdict(self, mode: ProbeMode, status: int) -> bool | None:
        return common.probe_verdict(mode, status)


WIRE: Final = OpenAIChatWire()
