"""edgeproxy: an LLM edge proxy sidecar that keeps AI features up when providers fail.

Apps keep the official OpenAI or Anthropic SDK and point its base URL at the sidecar; SREs
describe providers, regions and fallback chains in a YAML policy. ``__version__`` comes from the
Rust extension, whose version is the one in Cargo.toml (the project's only version source).
"""

from __future__ import annotations

from edgeproxy._core import __version__

__all__ = ["__version__"]
