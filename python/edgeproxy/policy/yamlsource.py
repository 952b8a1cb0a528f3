"""Read YAML into plain Python data while remembering where every key and value came from.

Validation errors are only useful to an SRE if they point at a line, so the loader keeps a map
from each path in the document (``("routes", "chat", "chain", 1)``) to its line and column.
``${ENV}`` references are expanded here, scalar by scalar, so an unset variable is reported at the
line that uses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from edgeproxy.errors import PolicyProblem

Path = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; "$${" escapes a literal "${".
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LocatedDocument:
    """The parsed document plus a line/column for every path in it (1-based)."""

    source: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    problems: list[PolicyProblem] = field(default_factory=list)
    warnings: list[PolicyProblem] = field(default_factory=list)
    # Unset ${ENV} references and unreadable key files: "error" when serving; "warn" when linting
    # in CI, where the secrets are rightly absent.
    missing_secrets: Literal["error", "warn"] = "error"

    def locate(self, path: Path) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return (0, 0)

    def problem(self, path: Path, message: str) -> PolicyProblem:
        line, column = self.locate(path)
        return PolicyProblem(self.source, line, column, message, format_path(path))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def expand_env(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${NAME}`` / ``${NAME:-default}``; return the text and the names left unset."""
    missing: list[str] = []

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or value == "":
            if default is not None:
                return default
            missing.append(name)
            return ""
        return value

    return _ENV_REF.sub(repl, text), missing


def load_located_yaml(
    text: str,
    source: str,
    environ: Mapping[str, str] | None = None,
    missing_secrets: Literal["error", "warn"] = "error",
) -> LocatedDocument:
    env = os.environ if environ is None else environ
    doc = LocatedDocument(source=source, data=None, missing_secrets=missing_secrets)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        doc.problems.append(
            PolicyProblem(source, line, col, f"invalid YAML: {exc.problem or exc.context}")
        )
        return doc
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked YAML errors are rare
        doc.problems.append(PolicyProblem(source, 0, 0, f"invalid YAML: {exc}"))
        return doc
    if root is None:
        doc.problems.append(PolicyProblem(source, 1, 1, "the policy is empty"))
        return doc
    constructor = yaml.SafeLoader("")
    doc.data = _convert(root, (), doc, constructor, env)
    return doc


def _convert(
    node: yaml.Node,
    path: Path,
    doc: LocatedDocument,
    constructor: yaml.SafeLoader,
    env: Mapping[str, str],
) -> Any:
    doc.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                key = str(key)
            child: Path = (*path, key)
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                doc.problems.append(
                    PolicyProblem(doc.source, *mark, f"duplicate key {key!r}", format_path(child))
                )
                continue
            doc.marks[child] = mark
            out[key] = _convert(value_node, child, doc, constructor, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), doc, constructor, env) for i, item in enumerate(node.value)
        ]
    value = constructor.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        value, missing = expand_env(value, env)
        for name in missing:
            problem = doc.problem(
                path,
                f"environment variable {name} is not set (write ${{{name}:-default}} for a default)",
            )
            (doc.problems if doc.missing_secrets == "error" else doc.warnings).append(problem)
    return value
