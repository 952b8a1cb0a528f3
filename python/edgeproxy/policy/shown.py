"""What of a policy may be printed: in problems, logs, ``GET /admin/policy`` and ``policy diff``.

Two rules. Values that can hold a secret (header values, provider keys, URL credentials, query
parameters named like a credential) are never shown, only their names. And text taken from the
document is quoted only when it looks like a name: a policy path can point at any file (a
symlink, a mistake), and a problem message must not quote that file's lines back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from edgeproxy.snapshot.wire import UpstreamWire

# What a policy key looks like (``max_attempts``, a typo of one): quoted in "unknown key".
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
# What names SREs give providers, regions, models, routes, tags and headers look like
# (``gpt-4o-mini``, ``meta-llama/Llama-3.1-8B-Instruct``, ``llama3.1:8b``, ``api-version``).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+\-]{0,63}")
# Query parameters that carry credentials in the wild (``?key=`` for Gemini's native API,
# SAS signatures, OAuth codes): their values are not shown.
_SECRET_PARAM = re.compile(
    r"key|token|secret|sig|signature|password|passwd|auth|code|credential", re.I
)


def is_identifier(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and _IDENTIFIER.fullmatch(text) is not None


def is_name(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def quoted_key(key: object, line: int) -> str:
    """``'max_atempts'`` for a key that looks like one; ``a key at line N`` for anything else."""
    return repr(key) if is_identifier(key) else f"a key at line {line}"


def quoted_name(name: object) -> str:
    """``'gpt-4o'`` for a name; ``a name`` for text that does not look like one."""
    return repr(name) if is_name(name) else "a name"


# The mappings whose keys SREs name (everywhere else a key is one of the spec's field names):
# only under these is a name such as ``llama3.1:8b`` printed in a problem's path. A test checks
# this against the spec.
NAMED_MAPPINGS = frozenset(
    {
        "providers",
        "regions",
        "models",
        "routes",
        "tags",
        "teams",
        "headers",
        "query",
        "require_tags",
        "tasks",
    }
)


def path_part(part: str | int, parent: str | int | None) -> str:
    """One step of a problem's path, as printed: a field name; a name under a mapping SREs name
    (``providers.<name>``); else ``<key>``, so that a file that is not a policy never has a line
    printed as a path."""
    if isinstance(part, int) or is_identifier(part):
        return str(part)
    return part if parent in NAMED_MAPPINGS and is_name(part) else "<key>"


def without_userinfo(url: str | None) -> str | None:
    """The URL without ``user:password@`` (the loader refuses them; this is the second line)."""
    if not url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def header_names(headers: Mapping[str, str]) -> list[str]:
    """Headers as shown: their names, never their values (they carry provider keys)."""
    return sorted(headers)


def wire_name(wire: UpstreamWire) -> str:
    """A candidate's wire as a policy writes it (its ``kind``)."""
    return wire.name


def query_of(url: str) -> dict[str, str]:
    """The query parameters a URL carries (the real values: for comparing, not for showing)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def masked_query(query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters as shown: values of credential-like names replaced."""
    return {k: ("<not shown>" if _SECRET_PARAM.search(k) else v) for k, v in query.items()}


def plain(value: Any) -> Any:
    """Snapshot values as JSON-ready data (mappings become dicts, tuples lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [plain(v) for v in value]
    return value
