"""The Host allow-list: a defence against DNS rebinding.

A web page can make a browser send requests to a name the attacker controls and then re-point
that name at 127.0.0.1: the browser treats the loopback sidecar as the attacker's own origin and
reaches its API and admin endpoints (without a token, admin endpoints trust loopback callers).
Such requests carry the attacker's name in ``Host``; a proxy that answers only to the names it is
really reached by stops them.

- Bound to a loopback address (the default): ``Host`` must be ``localhost``, a loopback address
  (``127.0.0.1``, ``[::1]``, ...) or the bound address, with any port.
- Bound to any other address (a pod reached by a service name, or ``0.0.0.0``): every ``Host``
  is accepted unless a list is given.
- ``--allowed-hosts`` / ``EDGEPROXY_ALLOWED_HOSTS``: a comma-separated list of names or addresses
  that are accepted on top of the loopback ones (e.g. ``edgeproxy,edgeproxy.llm.svc``); ``*``
  accepts every ``Host``.

A refused request gets a 421 (Misdirected Request) in the client's wire; a request without a
``Host`` header (HTTP/1.0; a browser always sends one) is accepted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ALLOWED_HOSTS_ENV = "EDGEPROXY_ALLOWED_HOSTS"
_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` is a loopback IP address (``::ffff:127.0.0.1`` included)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


def hostname(host_header: str) -> str | None:
    """The name or address in a ``Host`` value (port and IPv6 brackets removed), lower case;
    None when it is malformed."""
    value = host_header.strip()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "x"
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return _normal(value[1:end])
    name, colon, port = value.rpartition(":")
    if not colon:
        name = value
    elif ":" in name or (port and not port.isdigit()):
        return None  # an IPv6 address without brackets, or a port that is not a number
    name = _normal(name)
    return name or None


@dataclass(frozen=True)
class HostAllowList:
    names: frozenset[str] = frozenset()  # accepted besides the loopback names and addresses
    any_host: bool = False

    @classmethod
    def for_bind(cls, bind_host: str, spec: str | None = None) -> HostAllowList:
        """The list for a proxy bound to ``bind_host``: ``spec`` (comma-separated, ``*`` for any
        host) when given, else the default described in the module docstring."""
        bound = _normal(bind_host.strip("[]"))
        if spec is not None and spec.strip():
            names = {_normal(n.strip("[] ")) for n in spec.split(",") if n.strip()}
            return cls(frozenset(names | {bound}), any_host="*" in names)
        loopback_bind = bound in _LOOPBACK_NAMES or is_loopback(bound)
        return cls(frozenset({bound}), any_host=not loopback_bind)

    def allows(self, host_header: str | None) -> bool:
        if self.any_host or host_header is None:
            return True
        name = hostname(host_header)
        if name is None:
            return False
        return name in self.names or name in _LOOPBACK_NAMES or is_loopback(name)

    def describe(self) -> str:
        if self.any_host:
            return "any"
        return ", ".join(sorted(self.names | _LOOPBACK_NAMES)) + ", loopback addresses"
