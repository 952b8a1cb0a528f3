"""The APIs apps speak to the proxy, one plug-in per wire (``base.IngressWire``).

This registry is the only place that maps a path to the wire its client speaks: the handlers,
the errors middleware and the Host check all ask ``ingress_for_path``.
"""

from __future__ import annotations

from edgeproxy.server.ingress import anthropic_messages, openai_chat, openai_responses
from edgeproxy.server.ingress.base import ClientError, IngressRequest, IngressWire, StreamEncoder

INGRESS_WIRES: tuple[IngressWire, ...] = (
    openai_chat.INGRESS,
    anthropic_messages.INGRESS,
    openai_responses.INGRESS,
)

# Anything that is not one of a wire's paths (the admin API, /metrics, an unknown path) answers
# in OpenAI's error format.
DEFAULT: IngressWire = openai_chat.INGRESS


def ingress_for_path(path: str) -> IngressWire:
    """The wire whose client calls ``path`` (its chat path, or a path under it)."""
    for wire in INGRESS_WIRES:
        if path == wire.path or path.startswith(wire.path + "/"):
            return wire
    return DEFAULT


def served_paths() -> list[str]:
    """Every path the wires serve (for the 404 message)."""
    paths: list[str] = []
    for wire in INGRESS_WIRES:
        paths.append(wire.path)
        paths.extend(path for path, _ in wire.local_endpoints())
    return paths


__all__ = [
    "DEFAULT",
    "INGRESS_WIRES",
    "ClientError",
    "IngressRequest",
    "IngressWire",
    "StreamEncoder",
    "ingress_for_path",
    "served_paths",
]
