"""What the provider wires share: reading an error's code, probe verdicts, probe headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass, classify_status, parse_retry_after
from edgeproxy.snapshot import ProbeMode


def request_headers(
    auth: Mapping[str, str], *, stream: bool, request_id: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """An attempt's headers: the wire's ``auth`` (its key headers and the policy's static
    ones), JSON in, SSE or JSON out, the request id, and ``extra`` (trace context) last."""
    return {
        **auth,
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "X-Request-Id": request_id,
        **extra,
    }


def error_code(body: bytes) -> str | None:
    """The error's own code (or type) from an ``{"error": {...}}`` body, OpenAI's shape."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        if isinstance(code, str) and code:
            return code[:128]
    return None


def status_failure(
    failure: FailureClass,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    content_type: str,
    code: str | None,
) -> AttemptFailure:
    """A non-2xx answer as a classified failure: what every wire keeps of it (the body for a
    pass-through, its ``Retry-After``, the upstream's own error code)."""
    return AttemptFailure(
        failure,
        f"HTTP {status} from upstream" + (f" ({code})" if code else ""),
        status=status,
        body=body,
        content_type=content_type,
        retry_after=parse_retry_after(headers.get("retry-after")),
        code=code,
    )


def json_answer(data: bytes) -> Any:
    """A 200 answer's JSON, or a MALFORMED failure."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not valid JSON") from None


def probe_verdict(mode: ProbeMode, status: int) -> bool | None:
    """True healthy, False down, None inconclusive.

    A 401 or 403 says the provider refuses the proxy's key: down in the ``models`` and
    ``completion`` modes, which send it to the provider's own URL (every request would be
    refused the same way, and an ``auth_rejected`` ejection must not be ended early by a probe
    that was refused too). A free probe's 404 only says there is no model list at that URL
    (Azure's deployment URLs have none): reachable. A ``url`` probe may point anywhere, and gets
    the key only on the provider's own origin, so any 4xx there still means "reachable". A
    billed ``completion`` probe asks "does it answer": only a 2xx passes, since a 404 there
    means the model or the endpoint is wrong. A 429 says "busy", not "down", in every mode.
    """
    failure = classify_status(status)
    if failure is None:
        return True
    if failure is FailureClass.RATE_LIMITED:
        return None
    if mode == "completion":
        return False
    if failure is FailureClass.AUTH_REJECTED:
        return mode == "url"
    return failure in (FailureClass.CLIENT_ERROR, FailureClass.MODEL_NOT_FOUND)


def with_query_of(url: str, endpoint: str) -> str:
    """``url`` with the query string of ``endpoint`` (a provider's ``query`` keys, which the
    compiled ``chat_url`` carries), for a wire's other endpoints."""
    _, mark, query = endpoint.partition("?")
    return f"{url}?{query}" if mark and query else url


def embedding_vectors(items: object, inputs: int) -> list[list[float] | str]:
    """The vectors of an OpenAI-shaped ``data`` array (``[{"index", "embedding"}, ...]``), in
    input order; MALFORMED unless it holds exactly one vector (a list, or a base64 string) for
    each of the ``inputs``."""
    if not isinstance(items, list) or len(items) != inputs:
        raise AttemptFailure(
            FailureClass.MALFORMED, f"upstream answer does not hold {inputs} embeddings"
        )
    vectors: list[list[float] | str | None] = [None] * inputs
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < inputs
            or vectors[index] is not None
            or not isinstance(vector, list | str)
        ):
            raise AttemptFailure(
                FailureClass.MALFORMED,
                f"upstream embedding {position} is not a vector of the batch",
            )
        vectors[index] = vector
    return vectors  # type: ignore[return-value]  # every slot was filled exactly once


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def probe_headers(headers: Mapping[str, str], base_url: str, url: str) -> dict[str, str]:
    """The provider's headers (its key among them) only for a URL on the provider's own origin:
    a ``health_check.url`` elsewhere gets none."""
    return dict(headers) if same_origin(base_url, url) else {}
