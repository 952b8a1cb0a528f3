"""Upstream URLs (``base_url``, a health check's ``url``) checked when the policy loads.

A URL that cannot work is refused with a reason, before it can fail a request: the HTTP client
writes the host as IDNA and the path as ASCII, and connects to the port as written. Messages
never quote the URL: it may carry credentials (refused, but the refusal must not print them).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_UNBALANCED = "has an unbalanced [ or ] (write an IPv6 address as http://[2001:db8::1]:8000/v1)"
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an upstream URL, or None. Never quotes the URL."""
    if _CONTROL_OR_SPACE.search(url):
        return "must not contain spaces or control characters"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": unbalanced brackets, or no address inside them
        netloc = rest.partition("/")[0]
        if netloc.startswith("[") and netloc.count("[") == 1 and netloc.count("]") == 1:
            return "has an IPv6 host that is not an IPv6 address"
        return _UNBALANCED
    if "@" in parts.netloc:
        return (
            "must not carry credentials (user:password@): put the key in the provider's "
            "api_key, api_key_file or headers"
        )
    if "?" in url:
        return "must not have a query (?...): put query parameters in the provider's query"
    if "#" in url:
        return "must not have a fragment (#...)"
    problem = _host_problem(parts.netloc)
    if problem is not None:
        return problem
    if not parts.path.isascii():
        return "has non-ASCII characters in its path: percent-encode them (e.g. %C3%A9 for é)"
    return None


def _host_problem(netloc: str) -> str | None:
    if netloc.startswith("["):
        address, _, port = netloc[1:].partition("]")
        if port and not port.startswith(":"):
            return "has text between the IPv6 address's ] and its port"
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return "has an IPv6 host that is not an IPv6 address"
        return _port_problem(port[1:] if port else None)
    host, colon, port = netloc.partition(":")
    if "[" in netloc or "]" in netloc:
        return _UNBALANCED
    if not host:
        return "has no host"
    problem = _port_problem(port if colon else None)
    if problem is not None:
        return problem
    return _name_problem(host)


def _port_problem(port: str | None) -> str | None:
    if port is None or port == "":  # "host:" means the scheme's port, as in browsers
        return None
    if not (port.isascii() and port.isdigit()):
        return "has a port that is not a number"
    if not 1 <= int(port) <= 65535:
        return f"has port {int(port)}, outside 1-65535"
    return None


def _name_problem(host: str) -> str | None:
    if not host.isascii():
        try:
            # The HTTP client sends the host as IDNA (Python's codec): it must encode.
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "has a host that is not a valid internationalised domain name"
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        return "has a host name longer than 253 characters"
    for label in name.split("."):
        if not label:
            return "has an empty label in its host name (two dots in a row?)"
        if len(label) > 63:
            return "has a host name label longer than 63 characters (DNS allows 63)"
        if not _LABEL.fullmatch(label):
            return "has characters a host name cannot hold (letters, digits, - and _ only)"
    return None
