"""Gemini's native wire (policy ``kind: gemini``): ``POST {base_url}/models/{model}:generateContent``
and ``:streamGenerateContent?alt=sse`` (https://ai.google.dev/api/generate-content), the key in
the ``x-goog-api-key`` header, never in the URL. Requests, answers and streams are translated
from and to the proxy's OpenAI shape (``translate/gemini.py``, docs/gemini.md); embeddings go to
``:batchEmbedContents``. Errors are classified from Gemini's ``error.status``
(https://ai.google.dev/gemini-api/docs/troubleshooting):

====================  ======  ====================================================
error.status          HTTP    failure class
====================  ======  ====================================================
INVALID_ARGUMENT      400     CLIENT_ERROR (CONTEXT_LENGTH when the input token
                              count exceeds the model's maximum; AUTH_REJECTED when
                              an ErrorInfo's reason is API_KEY_INVALID: a wrong key)
FAILED_PRECONDITION   400     QUOTA_EXHAUSTED (billing off, or a region the free tier
                              does not serve: the proxy's account, never the
                              request; fail over, eject for quota_ejection_time)
UNAUTHENTICATED       401     AUTH_REJECTED (the proxy's key: fail over, eject)
PERMISSION_DENIED     403     AUTH_REJECTED
NOT_FOUND             404     MODEL_NOT_FOUND (the policy's model or base URL: fail
                              over, eject)
RESOURCE_EXHAUSTED    429     RATE_LIMITED (``RetryInfo.retryDelay`` when there is no
                              Retry-After); QUOTA_EXHAUSTED for a per-day quota
INTERNAL              500     SERVER_ERROR
UNAVAILABLE           503     SERVER_ERROR (OVERLOADED when "the model is overloaded")
DEADLINE_EXCEEDED     504     SERVER_ERROR
====================  ======  ====================================================

The same ``error`` object inside a stream (after the 200) is never a client error nor a
misconfiguration (the key and the model were accepted): a server error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson

from edgeproxy.failure import (
    MAX_RETRY_AFTER,
    MISCONFIGURED,
    AttemptFailure,
    FailureClass,
    classify_status,
)
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import (
    EmbeddedBatch,
    EmbeddingInput,
    EmbeddingsOptions,
    ProbeRequest,
    Refusal,
    StreamTranslator,
)
from edgeproxy.telemetry.redact import redact
from edgeproxy.translate import TranslationError
from edgeproxy.translate.gemini import (
    GeminiStream,
    GeminiStreamError,
    error_fields,
    gemini_to_openai_response,
    model_path,
    openai_to_gemini_request,
)
from edgeproxy.wires import common

KEY_HEADER: Final = "x-goog-api-key"

_BY_STATUS: Final = {
    "RESOURCE_EXHAUSTED": FailureClass.RATE_LIMITED,
    "INTERNAL": FailureClass.SERVER_ERROR,
    "UNAVAILABLE": FailureClass.SERVER_ERROR,
    "DEADLINE_EXCEEDED": FailureClass.SERVER_ERROR,
    "CANCELLED": FailureClass.SERVER_ERROR,  # cancelled on Google's side, not by the proxy
    "INVALID_ARGUMENT": FailureClass.CLIENT_ERROR,
    "FAILED_PRECONDITION": FailureClass.CLIENT_ERROR,  # a 400 of it: ``classify``
    "UNAUTHENTICATED": FailureClass.AUTH_REJECTED,
    "PERMISSION_DENIED": FailureClass.AUTH_REJECTED,
    "NOT_FOUND": FailureClass.MODEL_NOT_FOUND,
}
# ErrorInfo reasons that say the key itself is refused, whatever the status (Gemini answers an
# unknown key 400 INVALID_ARGUMENT, reason API_KEY_INVALID).
_KEY_REASONS: Final = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
# "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
_TOO_LONG: Final = re.compile(r"input token count.*exceeds the maximum", re.I | re.S)
_DELAY: Final = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?)s")


def gemini_headers(static: Mapping[str, str]) -> dict[str, str]:
    """A provider's static headers as Gemini wants them: the key as ``x-goog-api-key`` (a policy
    that put it in ``Authorization: Bearer`` or Azure's ``api-key`` is converted)."""
    headers = {k: v for k, v in static.items() if k.lower() not in ("authorization", "api-key")}
    if any(k.lower() == KEY_HEADER for k in headers):
        return headers
    for name, value in static.items():
        lower = name.lower()
        if lower == "api-key" and value:
            headers[KEY_HEADER] = value
            break
        if lower == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                headers[KEY_HEADER] = token.strip()
                break
            headers[name] = value  # another scheme (OAuth on Vertex): as written
    return headers


def classify(
    status: int, kind: str | None, message: str | None, details: list[Any]
) -> FailureClass:
    """The failure class of a Gemini error status, ``error.status`` and message."""
    if kind == "INVALID_ARGUMENT" and message and _TOO_LONG.search(message):
        return FailureClass.CONTEXT_LENGTH
    if status < 500 and _key_refused(details):
        return FailureClass.AUTH_REJECTED
    if kind == "FAILED_PRECONDITION" and status == 400:
        return FailureClass.QUOTA_EXHAUSTED  # billing off or a region not served: the account's
    if kind == "RESOURCE_EXHAUSTED" and _per_day(details):
        return FailureClass.QUOTA_EXHAUSTED
    if kind == "UNAVAILABLE" and message and "overloaded" in message.lower():
        return FailureClass.OVERLOADED
    by_status = classify_status(status) or FailureClass.SERVER_ERROR
    failure = _BY_STATUS.get(kind) if kind is not None else None
    passed_back = failure is FailureClass.CLIENT_ERROR or failure in MISCONFIGURED
    if failure is None or (passed_back and status >= 500):
        return by_status  # a 5xx is never the client's to answer, whatever its body says
    if failure is FailureClass.CLIENT_ERROR and by_status in MISCONFIGURED:
        return by_status  # a 401/403/404 is the proxy's key or model, whatever its body says
    return failure


def _key_refused(details: list[Any]) -> bool:
    """An ``ErrorInfo`` whose reason says the API key is refused (invalid or expired)."""
    return any(
        isinstance(detail, dict)
        and "ErrorInfo" in str(detail.get("@type", ""))
        and detail.get("reason") in _KEY_REASONS
        for detail in details
    )


def _per_day(details: list[Any]) -> bool:
    """A ``QuotaFailure`` whose violated quota is per day: no retry helps until tomorrow."""
    for detail in details:
        if not isinstance(detail, dict) or "QuotaFailure" not in str(detail.get("@type", "")):
            continue
        for violation in detail.get("violations") or []:
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def retry_delay(details: list[Any]) -> float | None:
    """``RetryInfo.retryDelay`` ("37s", "1.5s") in seconds, bounded like a Retry-After."""
    for detail in details:
        if isinstance(detail, dict) and "RetryInfo" in str(detail.get("@type", "")):
            match = _DELAY.fullmatch(str(detail.get("retryDelay", "")))
            if match is not None:
                seconds = float(match.group(1))
                return seconds if seconds <= MAX_RETRY_AFTER else None
    return None


def stream_failure(error: GeminiStreamError) -> AttemptFailure:
    """The failure an in-stream ``error`` stands for: never a client error after the 200."""
    failure = classify(error.code or 500, error.status, error.message, [])
    if failure is FailureClass.CLIENT_ERROR or failure in MISCONFIGURED:
        failure = FailureClass.SERVER_ERROR
    detail = f"upstream sent an in-stream error: {error.status}" + (
        f" ({redact(error.message)})" if error.message else ""
    )
    return AttemptFailure(failure, detail, code=error.status)


class _Stream:
    """Gemini's stream in, OpenAI chunks out (``translate.gemini.GeminiStream``)."""

    __slots__ = ("_translator",)

    def __init__(self, include_usage: bool) -> None:
        self._translator = GeminiStream(include_usage=include_usage)

    def feed(self, chunk: bytes) -> bytes:
        try:
            return self._translator.feed(chunk)
        except GeminiStreamError as exc:
            raise stream_failure(exc) from None
        except TranslationError as exc:
            raise AttemptFailure(FailureClass.MALFORMED, f"bad Gemini stream: {exc}") from None

    def finish(self) -> bytes:
        return self._translator.finish()

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._translator.usage


class GeminiEmbeddings:
    """``POST {base_url}/models/{model}:batchEmbedContents``: texts only, at most 100 a batch,
    ``outputDimensionality`` the length asked or declared (docs/embeddings.md)."""

    max_inputs: Final = 100
    max_tokens: Final = None

    def url(self, candidate: Candidate) -> str:
        path = candidate.chat_url.partition("?")[0]
        model = quote(model_path(candidate.upstream_model), safe="")
        return common.with_query_of(f"{path}/{model}:batchEmbedContents", candidate.chat_url)

    def refusal(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions
    ) -> Refusal | None:
        if any(not isinstance(item, str) for item in inputs):
            return Refusal("the Gemini wire embeds texts, not token arrays", "input")
        if options.extra:
            field = sorted(options.extra)[0]
            return Refusal(f"the Gemini wire has no {field!r}", field)
        return None

    def request_body(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingsOptions, candidate: Candidate
    ) -> bytes:
        model = "models/" + model_path(candidate.upstream_model)
        # Gemini shortens any embedding model's vectors: to the length asked, else to the
        # length the policy declares (gemini-embedding-001 gives 3,072 unless told).
        dimensions = options.dimensions or candidate.dimensions
        requests = []
        for text in inputs:
            request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                request["outputDimensionality"] = dimensions
            requests.append(request)
        return orjson.dumps({"requests": requests})

    def answer(self, data: bytes, inputs: int) -> EmbeddedBatch:
        parsed = common.json_answer(data)
        items = parsed.get("embeddings") if isinstance(parsed, dict) else None
        if not isinstance(items, list):
            raise AttemptFailure(FailureClass.MALFORMED, "upstream answer has no 'embeddings'")
        shaped = [
            {"index": i, "embedding": item.get("values") if isinstance(item, dict) else None}
            for i, item in enumerate(items)
        ]
        # Gemini reports no token count for embeddings: the proxy counts them.
        return EmbeddedBatch(common.embedding_vectors(shaped, inputs), None)


class GeminiWire:
    name: Final = "gemini"
    embeddings: Final = GeminiEmbeddings()

    def endpoint_url(self, base_url: str, query: Mapping[str, str]) -> str:
        # The model and the method follow in each attempt's URL (``url``).
        url = base_url.rstrip("/") + "/models"
        return f"{url}?{urlencode(query)}" if query else url

    def url(self, candidate: Candidate, *, stream: bool) -> str:
        path, _, query = candidate.chat_url.partition("?")
        model = quote(model_path(candidate.upstream_model), safe="")
        if stream:
            return f"{path}/{model}:streamGenerateContent?alt=sse" + (f"&{query}" if query else "")
        return f"{path}/{model}:generateContent" + (f"?{query}" if query else "")

    def refusal(self, body: Mapping[str, Any]) -> Refusal | None:
        try:
            openai_to_gemini_request(body)
        except TranslationError as exc:
            return Refusal(f"the Gemini wire cannot take it ({exc})", exc.param)
        return None

    def request_body(self, body: Mapping[str, Any], candidate: Candidate) -> bytes:
        return orjson.dumps(openai_to_gemini_request(body))

    def request_headers(
        self, candidate: Candidate, *, stream: bool, request_id: str, extra: Mapping[str, str]
    ) -> dict[str, str]:
        return common.request_headers(
            gemini_headers(candidate.headers), stream=stream, request_id=request_id, extra=extra
        )

    def failure(
        self, status: int, body: bytes, headers: Mapping[str, str], content_type: str
    ) -> AttemptFailure:
        kind, message, details = error_fields(body)
        failure = classify(status, kind, message, details)
        out = common.status_failure(failure, status, body, headers, content_type, kind)
        if out.retry_after is None and failure is FailureClass.RATE_LIMITED:
            out.retry_after = retry_delay(details)
        return out

    def client_error_body(self, failure: AttemptFailure, request_id: str) -> tuple[bytes, str]:
        kind, message, _ = error_fields(failure.body)
        status = failure.status or 400
        code = "context_length_exceeded" if failure.failure is FailureClass.CONTEXT_LENGTH else None
        error = {
            "message": redact(message) if message else f"Upstream error {status}.",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": code or (kind.lower() if kind else None),
            "request_id": request_id,
        }
        return orjson.dumps({"error": error}), "application/json"

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        parsed = common.json_answer(data)
        if not isinstance(parsed, dict):
            raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not a JSON object")
        try:
            completion = gemini_to_openai_response(parsed)
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
                "contents": [{"role": "user", "parts": [{"text": "ping"}]}],
                "generationConfig": {"maxOutputTokens": 1},
            }
            headers = {**gemini_headers(candidate.headers), "Content-Type": "application/json"}
            return ProbeRequest(
                "POST", self.url(candidate, stream=False), headers, orjson.dumps(body)
            )
        # Gemini lists models at GET {base_url}/models (free, needs the key).
        target = url if mode == "url" and url else candidate.chat_url
        headers = common.probe_headers(
            gemini_headers(candidate.headers), candidate.base_url, target
        )
        return ProbeRequest("GET", target, headers)

    def probe_verdict(self, mode: ProbeMode, status: int) -> bool | None:
        if mode == "models" and status == 400:
            # A GET without a body has nothing else to refuse: Gemini answers a key it does not
            # take 400 INVALID_ARGUMENT (API_KEY_INVALID), so this is a refused key, i.e. down.
            return False
        return common.probe_verdict(mode, status)


WIRE: Final = GeminiWire()
