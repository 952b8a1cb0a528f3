"""The provider wires the proxy speaks, by the name a policy gives them (``kind``).

Each wire is one module implementing ``edgeproxy.snapshot.wire.UpstreamWire``; this registry is
the only place that maps a name to a wire. The policy compiler resolves each provider's wire here
once, into ``Candidate.wire``; nothing else looks a wire up by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from edgeproxy.snapshot.wire import UpstreamWire
from edgeproxy.wires import anthropic_messages, gemini, openai_chat, openai_responses

UPSTREAM_WIRES: Mapping[str, UpstreamWire] = MappingProxyType(
    {
        openai_chat.WIRE.name: openai_chat.WIRE,
        anthropic_messages.WIRE.name: anthropic_messages.WIRE,
        gemini.WIRE.name: gemini.WIRE,
        openai_responses.WIRE.name: openai_responses.WIRE,
    }
)


def upstream_wire(name: str) -> UpstreamWire:
    """The wire registered under ``name``; KeyError names the known ones."""
    try:
        return UPSTREAM_WIRES[name]
    except KeyError:
        known = ", ".join(UPSTREAM_WIRES)
        raise KeyError(f"unknown wire {name!r} (known: {known})") from None


__all__ = ["UPSTREAM_WIRES", "upstream_wire"]
