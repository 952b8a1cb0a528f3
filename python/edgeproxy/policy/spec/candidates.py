"""A candidate as a route's chain (or an auto pool) names it, in the policy spec."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
)

from edgeproxy.policy.keys import Prose, key
from edgeproxy.policy.shown import (
    quoted_name,
)
from edgeproxy.policy.spec.base import _AlsoAccepts, _Spec

# -- routes -----------------------------------------------------------------------------------


def _candidate_from_string(value: Any) -> Any:
    # "provider/region/model"; region "*" means every region in the order written. The model may
    # itself contain slashes (e.g. meta-llama/Llama-3.1-8B-Instruct on vLLM).
    if isinstance(value, str):
        parts = value.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"write a candidate as provider/region/model (region may be *), got "
                f"{quoted_name(value)}"
            )
        provider, region, model = parts
        return {"provider": provider, "region": None if region == "*" else region, "model": model}
    return value


class CandidateSpec(_Spec):
    """A chain entry, when written as a mapping rather than provider/region/model."""

    provider: str = key("A provider's name.", required=True)
    region: str | None = key(
        "A region of it; omitted or `*`: every region, in the order the provider lists them.",
        default=Prose("every region"),
    )
    model: str = key("A model of that provider.", required=True)


# A chain entry: ``provider/region/model`` (region ``*``: every region), or a mapping.
ChainEntry = Annotated[
    CandidateSpec,
    BeforeValidator(_candidate_from_string),
    _AlsoAccepts(
        {
            "type": "string",
            "pattern": "^[^/\\s]+/[^/\\s]+/\\S+$",
            "description": "provider/region/model; region * means every region.",
        }
    ),
]
