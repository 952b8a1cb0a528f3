"""Read a request body with a size limit and a content-type check, before anything parses it."""

from __future__ import annotations

from aiohttp import web

from edgeproxy.server.openai_wire import IngressError


async def read_json_body(request: web.Request, limit: int) -> bytes:
    content_type = request.content_type  # aiohttp strips parameters such as charset
    if content_type != "application/json":
        shown = content_type or "none"
        raise IngressError(
            415,
            f"Unsupported Content-Type {shown!r}: send the body as JSON with "
            "'Content-Type: application/json'.",
            code="unsupported_content_type",
        )
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    if declared is not None:
        # The usual case: the length is declared and within the limit, so one read is bounded.
        body = await request.read()
    else:
        chunks: list[bytes] = []
        size = 0
        # Read in pieces so a body without Content-Length (chunked) is stopped at the limit.
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    if not body:
        raise IngressError(400, "The request body is empty: send a JSON object.")
    return body


def _too_large(limit: int) -> IngressError:
    return IngressError(
        413,
        f"The request body is larger than this proxy accepts ({limit} bytes; "
        "see limits.max_body_bytes in the policy).",
        code="request_too_large",
    )
