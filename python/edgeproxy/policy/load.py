"""Load a policy file into a frozen snapshot, or raise ``PolicyError`` listing every problem."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path as FsPath
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edgeproxy.errors import PolicyError, PolicyProblem
from edgeproxy.policy.compile import compile_policy
from edgeproxy.policy.crossref import unknown_references
from edgeproxy.policy.files import FileRefused, read_policy_file
from edgeproxy.policy.schema import PolicySpec
from edgeproxy.policy.shown import is_identifier, quoted_key
from edgeproxy.policy.yamlsource import LocatedDocument, Path, load_located_yaml
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.redact import register_policy_secrets


def load_policy(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    missing_secrets: Literal["error", "warn"] = "error",
) -> Policy:
    fs_path = FsPath(path)
    text = read_policy_text(fs_path)
    return load_policy_text(text, str(fs_path), environ, fs_path.parent, missing_secrets)


def read_policy_text(path: FsPath) -> str:
    """The file's text, or PolicyError saying (without a traceback) why it cannot be read:
    only a regular file of at most 1 MiB, read within a timeout (``files.py``)."""
    try:
        return read_policy_file(path)
    except FileRefused as exc:
        raise PolicyError([PolicyProblem(str(path), 0, 0, str(exc))]) from None


# Beyond this many, the rest are counted, not listed: a file that is not a policy at all (a
# wrong path, a symlink to something else) would otherwise fill the log with one line per line.
MAX_PROBLEMS = 50


def _bounded(problems: list[PolicyProblem], source: str) -> list[PolicyProblem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], PolicyProblem(source, 0, 0, f"... and {more} more problems")]


def load_policy_text(
    text: str,
    source: str = "<policy>",
    environ: Mapping[str, str] | None = None,
    base_dir: FsPath | None = None,
    missing_secrets: Literal["error", "warn"] = "error",
) -> Policy:
    """Parse, validate and compile; raise PolicyError listing every problem found."""
    doc = load_located_yaml(text, source, environ, missing_secrets)
    if doc.data is None:
        raise PolicyError(_bounded(doc.problems, source))
    if not isinstance(doc.data, dict):
        raise PolicyError([doc.problem((), "the policy must be a mapping (key: value) at the top")])
    try:
        spec = PolicySpec.model_validate(doc.data)
    except ValidationError as exc:
        doc.problems.extend(_problems_from_validation(exc, doc))
        # compile_policy's reference checks cannot run on an invalid spec: the same checks on
        # the raw document, so every problem comes in one pass.
        doc.problems.extend(unknown_references(doc, doc.problems))
        raise PolicyError(_bounded(doc.problems, source)) from None
    policy = compile_policy(spec, doc, text, base_dir)
    if policy is None or doc.problems:
        raise PolicyError(_bounded(doc.problems, source))
    register_policy_secrets(policy)  # its keys are scrubbed from everything the proxy says
    return policy


def _problems_from_validation(exc: ValidationError, doc: LocatedDocument) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc: Path = tuple(err["loc"])
        if len(doc.problems) + len(problems) >= MAX_PROBLEMS:
            # Not listed (``_bounded`` counts them): skip the "did you mean" search for each.
            problems.append(PolicyProblem(doc.source, 0, 0, "(not listed)"))
            continue
        message = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        if kind == "extra_forbidden":
            message = _unknown_key_message(loc, doc.locate(loc)[0])
        elif kind == "missing":
            message = "this required key is missing"
        elif kind == "too_short":
            message = "must not be empty"
        elif loc == ("version",):
            message = "must be 1 (the only policy schema version this proxy reads)"
        elif kind == "literal_error":
            message = f"must be {err.get('ctx', {}).get('expected', 'one of the listed values')}"
        elif kind in _PLAIN:
            message = _plain(kind, err.get("ctx") or {}, message)
        problems.append(doc.problem(loc, message))
    return problems


# pydantic's messages for the common kinds of mistake, said the way the rest of the loader says
# things ("must be ..."), in the policy's own words (a mapping, not a "dictionary").
_PLAIN = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list ([a, b], or one '- item' a line)",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "too_long": "must have at most {max_length} items",
}


def _plain(kind: str, ctx: dict[str, Any], fallback: str) -> str:
    shown = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
    try:
        return _PLAIN[kind].format(**shown)
    except (KeyError, IndexError, ValueError):
        return fallback


def _unknown_key_message(loc: Path, line: int) -> str:
    """``unknown key 'max_atempts' (did you mean 'max_attempts'?)``. The key is quoted only
    when it looks like a key: the "policy" may be any file, and its lines stay unquoted."""
    key = loc[-1]
    known = _fields_at(loc[:-1])
    hint = difflib.get_close_matches(key, known, n=1) if is_identifier(key) else []
    message = f"unknown key {quoted_key(key, line)}"
    if hint:
        message += f" (did you mean {hint[0]!r}?)"
    elif known:
        message += f" (expected one of: {', '.join(sorted(known))})"
    return message


def _fields_at(loc: Path) -> list[str]:
    """The field names allowed at ``loc``, found by walking the schema's annotations."""
    current: Any = PolicySpec
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the model or container inside."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            inner = [a for a in get_args(annotation) if a is not type(None)]
            if len(inner) != 1:
                return annotation
            annotation = inner[0]
        else:
            return annotation
