"""Files packaged with edgeproxy (in the wheel as in the repository): the built-in policy."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def default_policy_path() -> Path:
    """The built-in default policy: two OpenAI-wire providers and one Anthropic-wire provider on
    loopback ports, the ones ``edgeproxy demo`` and ``edgeproxy sim`` simulate
    (``policies/default.yaml`` in the repository links to it)."""
    return Path(str(resources.files("edgeproxy").joinpath("data", "default.yaml")))
