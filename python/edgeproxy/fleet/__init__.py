"""The fleet tier on Redis (docs/fleet.md): what N sidecars share through one Redis.

- ``link``: the one client, every call bounded by ``fleet.timeout``; Redis away means local
  state answers at once (``FleetUnavailable``), a ping finds it back, catch-up hooks run;
- ``counters``: limits and budgets in atomic Lua scripts (``scripts``), the local counters as
  the fallback and the spend settled meanwhile pushed when Redis returns;
- ``cache``: the prompt cache's shared second level (compressed, tenant scope unchanged);
- ``health``: ejections published and received (pub/sub, and a hash to catch up from);
- ``keystore``: the key table and usage rows for ``edgeproxy keys``;
- ``tier``: all of it for one sidecar, started and stopped with it.
"""

from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.fleet.tier import FleetTier

__all__ = ["FleetTier", "FleetUnavailable", "RedisLink"]
