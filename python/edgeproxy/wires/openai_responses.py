"""OpenAI's Responses API as an upstream wire (policy ``kind: openai_responses``):
``POST {base_url}/responses``, stateless (``store: false``), for the models OpenAI serves only
there (o1-pro, o3-pro, the codex models) and any Responses-capable server.

Requests, answers and streams are translated from and to the proxy's inner Chat Completions
shape (``translate/openai_responses.py``, docs/responses.md "A Responses upstream"). The rest is
OpenAI's, so it is the OpenAI chat wire's: the auth and headers, the error JSON and its
classification table (``failure.classify_status`` on the status and ``error.code``), the
client error bodies, the ``GET {base_url}/models`` probe and the embeddings API
(``POST {base_url}/embeddings``). An in-stream ``error`` or ``response.failed`` event becomes
OpenAI's in-band error event, which the relay classifies as it does the chat wire's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import ProbeRequest, Refusal, StreamTranslator
from edgeproxy.telemetry.redact import redact
from edgeproxy.translate import TranslationError
from edgeproxy.translate.cache_markers import without_cache_control
from edgeproxy.translate.openai_responses import (
    MIN_OUTPUT_TOKENS,
    FailedResponse,
    ResponsesToChatStream,
    chat_to_responses_request,
    response_to_chat,
)
from edgeproxy.wires import common
from edgeproxy.wires.openai_chat import WIRE as CHAT


def _request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    # Anthropic's prompt-cache marks ride in the inner shape for Anthropic upstreams; OpenAI
    # caches prefixes by itself (``prompt_cache_key`` is carried).
    return chat_to_responses_request(without_cache_control(body), model)


class _Stream:
    """The Responses API's events in, chat chunks out (``ResponsesToChatStream``)."""

    __slots__ = ("_translator",)

    def __init__(self, include_usage: bool) -> None:
        self._translator = ResponsesToChatStream(include_usage=include_usage)

    def feed(self, chunk: bytes) -> bytes:
        try:
            return self._translator.feed(chunk)
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad Responses stream: {exc}") from None

    def finish(self) -> bytes:
        return self._translator.finish()

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._translator.usage


class OpenAIResponsesWire:
    name: Final = "openai_responses"
    embeddings: Final = CHAT.embeddings  # OpenAI's /embeddings, the same API

    def endpoint_url(self, base_url: str, query: Mapping[str, str]) -> str:
        url = base_url.rstrip("/") + "/responses"
        return f"{url}?{urlencode(query)}" if query else url

    def url(self, candidate: Candidate, *, stream: bool) -> str:
        return candidate.chat_url

    def refusal(self, body: Mapping[str, Any]) -> Refusal | None:
        try:
            _request(body, "m")
        except TranslationError as exc:
            return Refusal(f"the Responses wire cannot take it ({exc})", exc.param)
        return None

    def request_body(self, body: Mapping[str, Any], candidate: Candidate) -> bytes:
        return orjson.dumps(_request(body, candidate.upstream_model))

    def request_headers(
        self, candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str]
    ) -> dict[str, str]:
        return CHAT.request_headers(candidate, stream=stream, request_id=request_id, extra=extra)

    def failure(
        self, status: int, body: bytes, headers: Mapping[str, str], content_type: str
    ) -> AttemptFailure:
        return CHAT.failure(status, body, headers, content_type)

    def client_error_body(self, failure: AttemptFailure, request_id: str) -> tuple[bytes, str]:
        return CHAT.client_error_body(failure, request_id)

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        parsed = common.json_answer(data)
        if not isinstance(parsed, dict):
            raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not a JSON object")
        try:
            completion = response_to_chat(parsed)
        except FailedResponse as exc:
            # A 200 whose response failed: the request, the key and the model were accepted,
            # so it is the upstream's failure (the chat wire's in-band errors are the same).
            raise AttemptFailure(
                FailureClass.SERVER_ERROR,
                f"upstream response failed: {exc.code} ({redact(exc.message)})",
                code=exc.code,
            ) from None
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"untranslatable answer: {exc}") from None
        return orjson.dumps(completion), completion

    def stream(
        self, *, include_usage: bool, request: Mapping[str, Any] | None = None
    ) -> StreamTranslator | None:
        return _Stream(include_usage)

    def probe(self, candidate: Candidate, mode: ProbeMode, url: str | None) -> ProbeRequest:
        if mode == "completion":
            body = {
                "model": candidate.upstream_model,
                "input": "ping",
                "max_output_tokens": MIN_OUTPUT_TOKENS,
                "store": False,
            }
            headers = {**candidate.headers, "Content-Type": "application/json"}
            return ProbeRequest("POST", candidate.chat_url, headers, orjson.dumps(body))
        return CHAT.probe(candidate, mode, url)  # GET {base_url}/models, as OpenAI's

    def probe_verdict(self, mode: ProbeMode, status: int) -> bool | None:
        return common.probe_verdict(mode, status)


WIRE: Final = OpenAIResponsesWire()
