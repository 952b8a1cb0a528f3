"""Every policy key, found by walking the spec (``schema.py``): the one list the docs tables,
``describe``, ``diff``, the compiler and the tests enumerate.

A key's path uses ``<name>`` for an entry of a mapping the policy names (``providers.<name>``)
and ``[]`` for an item of a list (``routes.<name>.chain[]``).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edgeproxy.policy.keys import NOT_GIVEN, At, Key, Scope
from edgeproxy.policy.schema import PolicySpec
from edgeproxy.policy.units import ByteSize, Duration

Unit = Literal["seconds", "bytes", "percent", ""]
NAME = "<name>"
ITEM = "[]"


@dataclass(frozen=True)
class KeyInfo:
    """One field of the spec: a key (a value), a block (a mapping of keys) or a container."""

    path: tuple[str, ...]
    field: FieldInfo
    hint: Any  # the annotation, with its Annotated extras
    key: Key | None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def dotted(self) -> str:
        return ".".join(self.path).replace(f".{ITEM}", ITEM)

    @property
    def block(self) -> type[BaseModel] | None:
        """The spec class this field holds, directly or per entry of a mapping or list."""
        inner = strip(self.hint)
        if typing.get_origin(inner) in (dict, list):
            inner = strip(typing.get_args(inner)[-1])
        return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None

    @property
    def optional(self) -> bool:
        return _is_optional(self.hint)

    @property
    def required(self) -> bool:
        return self.field.is_required()

    @property
    def at(self) -> At | None:
        return self.key.at if self.key is not None else None

    @property
    def scope(self) -> Scope | None:
        return self.at.scope if self.at is not None else None

    @property
    def relative(self) -> str:
        """The path from the nearest named entry (``routes.<name>``, ``providers.<name>``, a
        region, a model), or from the top: how describe and diff name a value."""
        tail: list[str] = []
        for part in reversed(self.path):
            if part in (NAME, ITEM):
                break
            tail.append(part)
        if self.inherited:  # defaults.timeouts.connect is what each route's timeouts.connect is
            tail.pop()
        return ".".join(reversed(tail))

    @property
    def view(self) -> str:
        return self.key.view if self.key is not None and self.key.view else self.relative

    @property
    def inherited(self) -> bool:
        """A ``defaults`` key: it shows through every route that does not set its own."""
        return self.path[0] == "defaults"

    @property
    def unit(self) -> Unit:
        if self.key is not None and self.key.percent:
            return "percent"
        inner = _strip_optional(self.hint)
        if inner == Duration:
            return "seconds"
        if inner == ByteSize:
            return "bytes"
        return ""

    def bounds(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for item in self.field.metadata:
            for name in ("ge", "gt", "le", "lt", "min_length"):
                value = getattr(item, name, None)
                if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                    found[name] = value
        return found

    def documented_default(self) -> Any:
        """The default as the docs state it: a value (in the key's unit), a ``Prose``, or
        NOT_GIVEN when the key is required or inherits."""
        if self.required or (self.key is not None and self.key.inherits):
            return NOT_GIVEN
        written = self.field.default
        if written is not None and written is not PydanticUndefined:
            return None if self.block is not None else written
        if self.key is not None:
            return self.key.documented_default()
        return NOT_GIVEN


def strip(hint: Any) -> Any:
    """``Annotated[X, ...] | None`` -> ``X``."""
    hint = _strip_optional(hint)
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return hint


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, UnionType) and type(None) in typing.get_args(hint)


def fields_of(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[KeyInfo]:
    """The fields of one spec class (not what is inside them), their paths under ``path``."""
    hints = typing.get_type_hints(model, include_extras=True)
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        yield KeyInfo((*path, name), field, hints[name], extra if isinstance(extra, Key) else None)


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[KeyInfo]:
    for info in fields_of(model, path):
        yield info
        block = info.block
        if block is None:
            continue
        origin = typing.get_origin(strip(info.hint))
        step = (NAME,) if origin is dict else (ITEM,) if origin is list else ()
        yield from _walk(block, (*info.path, *step))


@functools.cache
def all_keys() -> tuple[KeyInfo, ...]:
    """Every field of the policy spec, in declaration order."""
    return tuple(_walk(PolicySpec, ()))


@functools.cache
def leaf_keys() -> tuple[KeyInfo, ...]:
    """The keys that hold values (not blocks of keys)."""
    return tuple(k for k in all_keys() if k.block is None)


@functools.cache
def views(scope: Scope) -> tuple[KeyInfo, ...]:
    """What ``describe`` shows and ``diff`` compares on a compiled policy, route or candidate:
    one key per view name (several keys may set one runtime value), ``defaults`` left out
    (they show through each route)."""
    seen: set[str] = set()
    out = []
    for info in leaf_keys():
        if info.scope != scope or info.inherited or info.view in seen:
            continue
        seen.add(info.view)
        out.append(info)
    return tuple(out)


def optional_blocks(scope: Scope) -> frozenset[str]:
    """Views of optional blocks (``hedge``, ``price``): shown as null when absent."""
    names = set()
    for info in all_keys():
        if info.block is not None and info.optional and not info.inherited:
            names.add(info.relative)
    prefixes = {v.view.rpartition(".")[0] for v in views(scope)}
    return frozenset(names & prefixes)
