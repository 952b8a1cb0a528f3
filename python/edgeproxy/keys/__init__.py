"""Virtual keys (docs/keys.md): made by ``edgeproxy keys create``, shown once, stored hashed;
the embedded store is SQLite (``keys.sqlite``), the fleet's is Redis (``fleet.keystore``);
``KeyRing`` holds a sidecar's copy of the table, so no request waits on a store."""

from edgeproxy.keys.model import (
    KEY_PREFIX,
    VirtualKey,
    digest_of,
    make_key,
    parse_expiry,
)
from edgeproxy.keys.ring import KeyRing, KeySource, Refused
from edgeproxy.keys.sqlite import SqliteStore

__all__ = [
    "KEY_PREFIX",
    "KeyRing",
    "KeySource",
    "Refused",
    "SqliteStore",
    "VirtualKey",
    "digest_of",
    "make_key",
    "parse_expiry",
]
