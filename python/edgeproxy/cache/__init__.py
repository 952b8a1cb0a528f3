"""Prompt-hash cache: Rust keys and store (``edgeproxy._core``) plus the request-path layer.

See docs/cache.md. The request path uses ``PromptCache`` (layer.py).
"""

from edgeproxy.cache.answers import chunks_to_completion, completion_to_chunks
from edgeproxy.cache.control import CacheControl, parse_cache_control, tenant_scope
from edgeproxy.cache.layer import (
    BYPASS,
    HEADER,
    HIT,
    MISS,
    CachedReply,
    CachePlan,
    PromptCache,
    StreamRecorder,
)
from edgeproxy.cache.singleflight import Flight, FollowerTimeout, LeaderFailed, StreamBroadcast
from edgeproxy.snapshot import CacheSettings

__all__ = [
    "BYPASS",
    "HEADER",
    "HIT",
    "MISS",
    "CacheControl",
    "CachePlan",
    "CacheSettings",
    "CachedReply",
    "Flight",
    "FollowerTimeout",
    "LeaderFailed",
    "PromptCache",
    "StreamBroadcast",
    "StreamRecorder",
    "chunks_to_completion",
    "completion_to_chunks",
    "parse_cache_control",
    "tenant_scope",
]
