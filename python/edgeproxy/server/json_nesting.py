"""The bound on how deeply a request body may nest, checked by both ingress parsers.

orjson parses up to 1,024 levels but serialises only 254: a tool schema nested 255 deep parsed
fine and then failed with a 500 when the proxy re-serialised it for the upstream. Bodies nested
deeper than ``MAX_JSON_DEPTH`` (250) are refused with a 400 before routing
(docs/policies.md#request-bodies). The bound leaves room for translation between wires, which
can add a level (an Anthropic tool's ``input_schema`` becomes ``function.parameters``). Bodies
between 129 and 250 levels are served as before: the cache key and the token counter stop at
128, so such a body bypasses the cache and its prompt tokens are estimated.

The check costs one C-speed serialisation instead of a Python walk of every node (which an
adversarial 4 MiB body of a million small arrays stretches to half a second): the parsed body is
wrapped in enough extra arrays that orjson's own recursion limit trips exactly when the body is
deeper than the bound. This module imports nothing from the ingress wires (they import it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

# The deepest nesting a request may have (``{"a": [1]}`` is 2 deep): orjson's 254, less room for
# the level a translation between wires can add.
MAX_JSON_DEPTH = 250


def _orjson_dump_depth() -> int:
    """The deepest array orjson serialises (254 in the orjson releases this was written for)."""
    nested: list[Any] = []
    depth = 1
    while depth <= 4096:
        try:
            orjson.dumps(nested)
        except orjson.JSONEncodeError:
            return depth - 1
        nested = [nested]
        depth += 1
    return depth


_PADDING = _orjson_dump_depth() - MAX_JSON_DEPTH
if _PADDING < 0:  # pragma: no cover - an orjson that serialises less deeply than the bound
    raise ImportError(f"orjson serialises fewer than {MAX_JSON_DEPTH} levels of nesting")


def check_nesting(body: Any, error: Callable[[int, str], Exception]) -> None:
    """Raise ``error(400, message)`` when ``body`` (parsed JSON) nests deeper than the bound."""
    wrapped = body
    for _ in range(_PADDING):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        raise error(
            400,
            f"The request body nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects.",
        ) from None
