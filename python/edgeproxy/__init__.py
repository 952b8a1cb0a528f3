"""edgeproxy: an LLM edge proxy sidecar that keeps AI features up when providers fail.

Apps keep the official OpenAI SDK and point its base URL at the sidecar; SREs describe providers,
regions and fallback chains in a YAML policy.
"""

from __future__ import annotations

__version__ = "0.1.0"
