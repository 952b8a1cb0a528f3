"""Every exception the proxy defines derives from ``EdgeProxyError`` (``errors.py`` promises it):
``except EdgeProxyError`` catches whatever the proxy raises of its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import edgeproxy
from edgeproxy.errors import EdgeProxyError

# Control flow inside one module, never seen outside it.
INTERNAL = {"edgeproxy.resilience.attempts._Stop", "edgeproxy.policy.yamlsource._Refused"}


def test_every_exception_class_is_rooted_at_edgeproxy_error() -> None:
    found: list[str] = []
    for module_info in pkgutil.walk_packages(edgeproxy.__path__, "edgeproxy."):
        if module_info.name.startswith("edgeproxy.sim"):
            continue  # the simulator is a fake provider, not the proxy
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                continue
            qualified = f"{cls.__module__}.{name}"
            found.append(qualified)
            if qualified not in INTERNAL:
                assert issubclass(cls, EdgeProxyError), qualified
    assert len(found) >= 15  # the walk saw the package's exceptions
