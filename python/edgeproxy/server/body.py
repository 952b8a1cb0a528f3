"""Read a request body before anything parses it: a content-type check, a size limit on the
*decoded* bytes, a time limit on the whole read, and ``Content-Encoding`` decoded here.

Every endpoint that takes a body reads it through ``read_json_body``, before it takes a
concurrency slot (a slow body holds a connection, never a slot). aiohttp's own decompression is
off (``connections.handler_options``): it would hand over a gzip body inflated without a bound,
checked only against its compressed length. ``gzip`` (``x-gzip``) and ``deflate`` are decoded
incrementally, never producing more than the limit plus one chunk; any other coding is refused
with 415 (docs/policies.md#request-bodies).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from edgeproxy.server.ingress.base import ClientError

READ_CHUNK = 64 * 1024
# Codings a request may use; RFC 9110 §8.4.1 names x-gzip an alias of gzip.
ACCEPTED_ENCODINGS = "gzip, deflate"
_CLOSE = {
    "Connection": "close"
}  # the rest of the body is not read: the connection cannot be reused


async def read_json_body(request: web.Request, limit: int, time_limit: float) -> bytes:
    """The decoded body, at most ``limit`` bytes (413), read within ``time_limit`` seconds (408).

    415 for another content type or an unknown coding, 400 for a body that is empty or whose
    coding is malformed."""
    content_type = request.content_type  # aiohttp strips parameters such as charset
    if content_type != "application/json":
        shown = content_type or "none"
        raise ClientError(
            415,
            f"Unsupported Content-Type {shown!r}: send the body as JSON with "
            "'Content-Type: application/json'.",
            code="unsupported_content_type",
        )
    decoder = _decoder(request.headers.get("Content-Encoding", ""))
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    content = request.content
    if decoder is None and content.is_eof():
        # The whole body came with the head (most requests): it is buffered already, within
        # the declared length just checked (aiohttp reads no more than Content-Length), so no
        # wait, no timer and no chunk loop are needed.
        body = content.read_nowait(-1)
        if len(body) > limit:
            raise _too_large(limit)
        if not body:
            raise ClientError(400, "The request body is empty: send a JSON object.")
        return body
    try:
        async with asyncio.timeout(time_limit):
            body = await _read(request, decoder, limit)
    except TimeoutError:
        raise ClientError(
            408,
            f"The request body did not arrive within {time_limit:g} s "
            "(see limits.body_read_timeout in the policy).",
            code="request_timeout",
            headers=_CLOSE,
        ) from None
    if not body:
        raise ClientError(400, "The request body is empty: send a JSON object.")
    return body


async def _read(request: web.Request, decoder: _Decoder | None, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0  # bytes as they will be parsed (decoded)
    wire = 0  # bytes as received
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        wire += len(chunk)
        if wire > limit:
            raise _too_large(limit)
        if decoder is not None:
            chunk = decoder.feed(chunk, limit - size)
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    if decoder is not None:
        decoder.finish()
    return b"".join(chunks)


def _decoder(header: str) -> _Decoder | None:
    if not header:
        return None  # no Content-Encoding: most requests
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Decoder(codings[0])
    raise ClientError(
        415,
        f"Unsupported Content-Encoding {header!r}: send the body uncompressed, or with one of "
        f"{ACCEPTED_ENCODINGS}.",
        code="unsupported_content_encoding",
        headers={"Accept-Encoding": ACCEPTED_ENCODINGS, **_CLOSE},
    )


class _Decoder:
    """Incremental gzip/deflate decoding that never produces more than asked for."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = coding != "deflate"
        self._inflate: zlib._Decompress | None = None

    def _start(self, first: int) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is meant to be zlib-wrapped (RFC 9110 §8.4.1.2); some clients send raw
        # deflate: the zlib header's low nibble is 8, as aiohttp's client also checks.
        return zlib.decompressobj(zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decoded bytes of ``data``: at most ``room + 1`` (one more than the limit allows tells
        the caller it is over, and input left undecoded then does not matter)."""
        out: list[bytes] = []
        produced = 0
        while data and produced <= room:
            if self._inflate is not None and self._inflate.eof:
                if not self._gzip:
                    raise self._malformed()  # bytes after the end of the deflate stream
                self._inflate = None  # the next member: a gzip body may hold several (RFC 1952)
            if self._inflate is None:
                self._inflate = self._start(data[0])
            try:
                piece = self._inflate.decompress(data, room + 1 - produced)
            except zlib.error:
                raise self._malformed() from None
            out.append(piece)
            produced += len(piece)
            inflate = self._inflate
            data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if self._inflate is None or not self._inflate.eof:
            raise self._malformed()

    def _malformed(self) -> ClientError:
        return ClientError(
            400,
            f"The request body is not valid {self.coding} data (Content-Encoding: {self.coding}).",
            code="invalid_content_encoding",
            headers=_CLOSE,
        )


def _too_large(limit: int) -> ClientError:
    return ClientError(
        413,
        f"The request body is larger than this proxy accepts ({limit} bytes once decoded; "
        "see limits.max_body_bytes in the policy).",
        code="request_too_large",
        headers=_CLOSE,
    )
