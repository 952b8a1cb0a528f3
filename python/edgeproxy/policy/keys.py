"""How a policy key is declared, once: :func:`key` on a field of the policy spec (``schema.py``).

A key's name, type and bounds are its pydantic field; :func:`key` adds its doc line and
:class:`At`, the place its value lives in the compiled snapshot (``Policy``, ``Route`` or
``Candidate``). Everything else is derived from that one declaration (``catalog.py`` walks it):

- **the default** is read from the snapshot dataclass field the key sets (``snapshot/settings.py``,
  ``snapshot/policy.py``), where the proxy's code reads it. The settings are built without any
  policy too (tests, the simulator, benchmarks) and check themselves, so the number belongs there;
  the spec keeps ``None`` for "not written", which is what lets a route inherit from ``defaults``.
  A default with no dataclass field behind it (``max_attempts``) names the snapshot's constant;
- **the unit**, from the type (``Duration``: seconds, ``ByteSize``: bytes) or ``percent``
  (written as a percentage, held as a ratio);
- the JSON Schema's description and default, the reference tables in docs/policies.md
  (``edgeproxy policy docs``), ``describe`` (``GET /admin/policy``) and ``policy diff``.

The compiler reads ``At`` too, to build the process-wide settings without a table of its own.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union

from pydantic import Field

from edgeproxy.snapshot import Candidate, Policy, Route

Scope = Literal["policy", "route", "candidate"]
_SCOPES: dict[type[Any], Scope] = {Policy: "policy", Route: "route", Candidate: "candidate"}


class _Missing:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _Missing()


@dataclass(frozen=True)
class Prose:
    """A default said in words, where no single value is the default (e.g. "from the model name")."""

    text: str


@dataclass(frozen=True)
class At:
    """Where a key's value lives in the compiled snapshot: a dotted attribute path on a
    ``Policy``, a ``Route`` or a ``Candidate``; ``via`` derives the value from that attribute
    when the snapshot holds it inside something larger (e.g. the query inside the URL)."""

    root: type[Any]
    path: str
    via: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.root not in _SCOPES:
            raise TypeError(f"At: {self.root.__name__} is not a snapshot scope")
        _field_chain(self.root, self.path)  # a typo fails at import, not in a test run

    @property
    def scope(self) -> Scope:
        return _SCOPES[self.root]

    def read(self, obj: Any) -> Any:
        """The value on a compiled snapshot object; None where an optional part is absent."""
        for part in self.path.split("."):
            if obj is None:
                return None
            obj = getattr(obj, part)
        return self.via(obj) if self.via is not None else obj

    def default(self) -> Any:
        """The dataclass default along the path, or NOT_GIVEN when a field on it has none."""
        if self.via is not None:
            return NOT_GIVEN
        value: Any = NOT_GIVEN
        cls: Any = self.root
        for part in self.path.split("."):
            if value is not NOT_GIVEN:
                if value is None:
                    return None
                value = getattr(value, part)
                continue
            field = {f.name: f for f in dataclasses.fields(cls)}[part]
            if field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:  # a required field: its type's own defaults may still answer the rest
                cls = _dataclass_in(typing.get_type_hints(cls)[part])
                if cls is None:
                    return NOT_GIVEN
        return value


def _dataclass_in(hint: Any) -> type[Any] | None:
    """The dataclass in ``hint`` (``Timeouts``, ``Hedge | None``), if there is one."""
    if typing.get_origin(hint) in (Union, UnionType):
        found = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = found[0] if len(found) == 1 else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _field_chain(root: type[Any], path: str) -> None:
    cls: type[Any] | None = root
    for part in path.split("."):
        if cls is None:
            raise TypeError(f"At({root.__name__}, {path!r}): {part!r} is not inside a dataclass")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise TypeError(f"At({root.__name__}, {path!r}): {cls.__name__} has no {part!r}")
        cls = _dataclass_in(hints[part])


@dataclass(frozen=True, eq=False)
class Key:
    """A key's declaration beyond its pydantic field. Also the field's ``json_schema_extra``:
    called with the field's JSON Schema, it writes the documented default into it."""

    doc: str
    at: At | None = None
    # The name ``describe`` and ``diff`` give the value when several keys set one runtime value
    # (``api_key``, ``api_key_file``, ``auth_header`` and ``headers`` all become "headers").
    view: str | None = None
    percent: bool = False  # written as a percentage (0-100), held as a ratio (0-1)
    default: Any = NOT_GIVEN  # only when ``at`` cannot tell it: a snapshot constant, or Prose
    inherits: str | None = None  # unset: the value of this other key ("defaults.max_attempts")
    type_text: str | None = None  # for docs tables, when the type alone says too little
    # Plain, printable data for describe and diff. Never a secret: when two values differ only
    # in what ``show`` hides, diff says they changed without saying how.
    show: Callable[[Any], Any] | None = None
    schema: dict[str, Any] | None = None  # extra JSON Schema for editors (e.g. a pattern)

    def documented_default(self) -> Any:
        """The default users get when the key is not written (NOT_GIVEN when it inherits or has
        none of its own), in the key's own unit (a percentage stays a percentage)."""
        if self.inherits is not None:
            return NOT_GIVEN
        value = (
            self.default
            if self.default is not NOT_GIVEN
            else (self.at.default() if self.at is not None else NOT_GIVEN)
        )
        if self.percent and isinstance(value, int | float):
            return as_percent(value)
        return value

    def __call__(self, schema: dict[str, Any]) -> None:
        if self.schema:
            schema.update(self.schema)
        written = schema.get("default", NOT_GIVEN)
        if isinstance(written, dict) and written and _unset(written):
            del schema["default"]  # a block of unset keys: its keys' schemas say the defaults
            return
        if written is not None:
            return  # a written default (``auth_header: authorization``) or none at all
        value = self.documented_default()
        if value is NOT_GIVEN or isinstance(value, Prose) or value is None:
            schema.pop("default", None)
        else:
            schema["default"] = value


def _unset(value: Any) -> bool:
    """True for None and for mappings of nothing but unset values (an empty spec block)."""
    if isinstance(value, dict):
        return all(_unset(v) for v in value.values())
    return value is None


def as_percent(ratio: float) -> float:
    return round(ratio * 100, 9)


FROM_SNAPSHOT: Any = (
    object()
)  # key(spec_default=FROM_SNAPSHOT): the spec's default is the snapshot's


def key(
    doc: str,
    *,
    at: At | None = None,
    required: bool = False,
    spec_default: Any = None,
    view: str | None = None,
    percent: bool = False,
    default: Any = NOT_GIVEN,
    inherits: str | None = None,
    type_text: str | None = None,
    show: Callable[[Any], Any] | None = None,
    schema: dict[str, Any] | None = None,
    **bounds: Any,
) -> Any:
    """A spec field declared as a policy key (see the module docstring).

    ``spec_default`` is what the *written* form defaults to: ``None`` ("not written": the snapshot
    default applies, or ``inherits``), a value of its own (``auth_header``'s ``authorization``,
    which no dataclass holds), or ``FROM_SNAPSHOT`` for a plain value the snapshot defaults (a
    bool, where "not written" and "false" would otherwise both need saying).
    """
    declared = Key(doc, at, view, percent, default, inherits, type_text, show, schema)
    if required:
        return Field(..., description=doc, json_schema_extra=declared, **bounds)
    if spec_default is FROM_SNAPSHOT and (
        at is None or (spec_default := at.default()) is NOT_GIVEN
    ):
        raise TypeError(f"key({doc!r}): FROM_SNAPSHOT needs an At with a default")
    return Field(spec_default, description=doc, json_schema_extra=declared, **bounds)
