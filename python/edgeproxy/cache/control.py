"""What the client asks of the cache: the ``Cache-Control`` request header and the tenant scope.

Request directives honoured (RFC 9111 §5.2.1, case-insensitive, comma-separated):

- ``no-cache``: do not answer from the cache; the fresh answer replaces the entry.
- ``no-store``: do not store this request's answer (a cached answer may still be served).
- ``max-age=N``: only accept a cached answer stored at most N seconds ago (``max-age=0`` acts
  like ``no-cache`` for the lookup); an older one is refreshed. N is ASCII digits
  (delta-seconds); a value that is not is ignored, and one above 2^31 counts as 2^31 (RFC 9111
  §1.2.2), so no header value can make the parse fail.

Unknown directives are ignored. The tenant scope keeps one client's cached answers from another:
it is a hash of the client's credential (``Authorization`` bearer token, else ``x-api-key``)
together with the optional ``x-edgeproxy-tenant`` header, which can only narrow the scope of a
credential, never widen it. The raw credential is never stored. Header bytes that are not
UTF-8 (aiohttp hands them over as surrogate escapes) still give each credential its own scope.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

TENANT_HEADER = "x-edgeproxy-tenant"
# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
MAX_DELTA_SECONDS = 2**31


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None


NO_DIRECTIVES = CacheControl()


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a ``Cache-Control`` request header value (None or empty: no directives)."""
    if not value:
        return NO_DIRECTIVES
    no_cache = no_store = False
    max_age: float | None = None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            age = _delta_seconds(arg)
            if age is not None:
                max_age = age if max_age is None else min(max_age, age)
    return CacheControl(no_cache=no_cache, no_store=no_store, max_age=max_age)


def _delta_seconds(arg: str) -> float | None:
    """``max-age``'s argument: ASCII digits only (``str.isdigit`` alone accepts ``²``), clamped
    to 2^31 before conversion (310 digits would overflow a float); None when malformed."""
    arg = arg.strip().strip('"')
    if not arg or not arg.isascii() or not arg.isdigit():
        return None
    digits = arg.lstrip("0") or "0"
    if len(digits) > len(str(MAX_DELTA_SECONDS)):
        return float(MAX_DELTA_SECONDS)
    return float(min(int(digits), MAX_DELTA_SECONDS))


def _header(headers: Mapping[str, str], name: str) -> str:
    # aiohttp's CIMultiDictProxy is case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None and not isinstance(headers, CIMultiDictProxy | CIMultiDict):
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or ""


def tenant_scope(headers: Mapping[str, str]) -> str:
    """The tenant scope of a request: a hex digest, never the credential itself."""
    auth = _header(headers, "authorization").strip()
    scheme, _, token = auth.partition(" ")
    credential = token.strip() if scheme.lower() == "bearer" and token else auth
    if not credential:
        credential = _header(headers, "x-api-key").strip()
    tenant = _header(headers, TENANT_HEADER).strip()
    digest = hashlib.sha256()
    for field in (b"edgeproxy-tenant-v1", _bytes(credential), _bytes(tenant)):
        digest.update(len(field).to_bytes(8, "little"))
        digest.update(field)
    return digest.hexdigest()[:32]


def _bytes(value: str) -> bytes:
    # "surrogatepass" encodes any str, one-to-one: a non-UTF-8 credential is still its own scope
    # (never a 500, never two clients sharing a scope because both sent invalid bytes).
    return value.encode("utf-8", "surrogatepass")
