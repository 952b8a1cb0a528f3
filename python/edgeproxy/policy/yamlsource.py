"""Read YAML into plain Python data while remembering where every key and value came from.

Validation errors are only useful to an SRE if they point at a line, so the loader keeps a map
from each path in the document (``("routes", "chat", "chain", 1)``) to its line and column.
``${ENV}`` references are expanded here, scalar by scalar, so an unset variable is reported at the
line that uses it.

The input may be hostile or simply not a policy (a wrong path, a symlink to another file), and a
reload must survive it: the text is capped in size (``MAX_POLICY_BYTES``) before it is parsed;
YAML aliases are expanded while the document is converted, counting every value produced, so an
alias bomb ("billion laughs": a few KiB that expand to 10^9 values) is refused once it reaches
``MAX_VALUES`` instead of being built; nesting is capped at ``MAX_DEPTH``; and problems quote the
document's keys only when they look like names (``shown.py``), never its lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from edgeproxy.errors import PolicyProblem
from edgeproxy.policy.files import MAX_POLICY_BYTES
from edgeproxy.policy.shown import path_part, quoted_key

Path = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; "$${" escapes a literal "${".
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# A large real policy has a few thousand values; aliases may repeat parts of it, within reason.
MAX_VALUES = 100_000
MAX_DEPTH = 32
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml parses ~15x faster than the pure-Python parser; both give the same nodes and marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    """``routes.chat.chain[1]``; a step that does not look like a name prints as ``<key>``."""
    out = ""
    parent: str | int | None = None
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = path_part(part, parent)
            out += f".{shown}" if out else shown
        parent = part
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


class _Refused(Exception):
    """The document is refused as a whole (too many values, too deep): one located problem."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's reason, with any quoted text that does not look like a name left out."""
    reason = getattr(exc, "problem", None) or getattr(exc, "context", None) or "cannot parse"
    return re.sub(r"'([^']*)'", lambda m: m.group(0) if len(m.group(1)) <= 32 else "'...'", reason)


def load_located_yaml(
    text: str,
    source: str,
    environ: Mapping[str, str] | None = None,
    missing_secrets: Literal["error", "warn"] = "error",
) -> LocatedDocument:
    env = os.environ if environ is None else environ
    doc = LocatedDocument(source=source, data=None, missing_secrets=missing_secrets)
    if len(text) > MAX_POLICY_BYTES or len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
        limit = f"{MAX_POLICY_BYTES // (1024 * 1024)} MiB"
        doc.problems.append(
            PolicyProblem(source, 0, 0, f"the policy is larger than {limit}, the limit: refused")
        )
        return doc
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        doc.problems.append(PolicyProblem(source, line, col, f"invalid YAML: {_yaml_problem(exc)}"))
        return doc
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked YAML errors are rare
        doc.problems.append(PolicyProblem(source, 0, 0, f"invalid YAML: {_yaml_problem(exc)}"))
        return doc
    except RecursionError:  # the pure-Python parser on deep nesting (libyaml caps it itself)
        doc.problems.append(
            PolicyProblem(source, 0, 0, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        )
        return doc
    if root is None:
        doc.problems.append(PolicyProblem(source, 1, 1, "the policy is empty"))
        return doc
    converter = _Converter(doc, env)
    try:
        doc.data = converter.convert(root, (), 0)
    except _Refused as exc:
        doc.data = None
        doc.marks.clear()
        doc.problems[:] = [PolicyProblem(source, exc.line, exc.column, str(exc))]
        doc.warnings.clear()
    return doc


class _Converter:
    """Nodes to plain data, counting every value produced (aliases included) as it goes."""

    def __init__(self, doc: LocatedDocument, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.constructor = yaml.SafeLoader("")
        self.values = 0

    def convert(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(
                node,
                f"the policy expands to more than {MAX_VALUES} values (YAML aliases repeating "
                "each other?): refused",
            )
        if depth > MAX_DEPTH:
            raise _Refused(node, f"the policy is nested deeper than {MAX_DEPTH} levels: refused")
        doc = self.doc
        doc.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        doc = self.doc
        out: dict[Any, Any] = {}
        for key_node, value_node in self._pairs(node, depth):
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                doc.problems.append(
                    PolicyProblem(
                        doc.source, *mark, "a key must be a plain value", format_path(path)
                    )
                )
                continue
            key = self._scalar_key(key_node)
            child: Path = (*path, key)
            if key in out:
                message = f"duplicate key {quoted_key(key, mark[0])}"
                doc.problems.append(PolicyProblem(doc.source, *mark, message, format_path(child)))
                continue
            doc.marks[child] = mark
            out[key] = self.convert(value_node, child, depth + 1)
        return out

    def _pairs(self, node: yaml.MappingNode, depth: int) -> list[tuple[Any, yaml.Node]]:
        """The mapping's pairs with YAML merge keys (``<<: *base``) resolved: merged pairs first,
        the mapping's own keys after them and winning, as PyYAML does."""
        if depth > MAX_DEPTH:
            raise _Refused(node, f"the policy is nested deeper than {MAX_DEPTH} levels: refused")
        merged: list[tuple[Any, yaml.Node]] = []
        own: list[tuple[Any, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise _Refused(source, "a merge key (<<) must name a mapping")
                self.values += len(source.value)
                merged.extend(self._pairs(source, depth + 1))
        own_keys = {self._scalar_key(k) for k, _ in own if isinstance(k, yaml.ScalarNode)}
        kept: dict[Any, tuple[Any, yaml.Node]] = {}
        for key_node, value_node in merged:
            if isinstance(key_node, yaml.ScalarNode):
                merged_key = self._scalar_key(key_node)
                if merged_key not in own_keys:
                    kept[merged_key] = (key_node, value_node)
        return [*kept.values(), *own]

    def _scalar_key(self, node: yaml.ScalarNode) -> str | int:
        key: object = self.constructor.construct_object(node, deep=True)
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        return str(key)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        doc = self.doc
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            doc.problems.append(doc.problem(path, f"invalid value: {_yaml_problem(exc)}"))
            return None
        if isinstance(value, str) and "$" in value:
            value, missing = expand_env(value, self.env)
            for name in missing:
                problem = doc.problem(
                    path,
                    f"environment variable {name} is not set (write ${{{name}:-default}} for a "
                    "default)",
                )
                (doc.problems if doc.missing_secrets == "error" else doc.warnings).append(problem)
        return value
