"""The import graph between edgeproxy's packages, and the cycles in it.

``python tools/import_graph.py -v`` prints every package-level edge (``policy -> resilience``);
without ``-v`` it prints them only when it finds a cycle. It exits non-zero when a cycle exists among the packages (each subpackage of ``edgeproxy`` and each
top-level module counts as one node). Imports under ``if TYPE_CHECKING:`` count too: a type-only
cycle is still a knot a reader has to untie. ``make lint`` runs it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "python" / "edgeproxy"


def node_of(module: str) -> str | None:
    """``edgeproxy.policy.compile`` -> ``policy``; ``edgeproxy.tokens`` -> ``tokens``."""
    parts = module.split(".")
    if parts[0] != "edgeproxy" or len(parts) < 2:
        return None
    if parts[1] in ("_core", "__init__"):
        return None
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        source = node_of(module_name(path))
        if source is None:
            continue
        graph.setdefault(source, set())
        for target in imports_of(path):
            dest = node_of(target)
            if (
                dest is not None
                and dest != source
                and (ROOT / dest).exists() | (ROOT / f"{dest}.py").exists()
            ):
                graph[source].add(dest)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    graph = package_graph()
    found = cycles(graph)
    if found or "-v" in sys.argv[1:]:
        for source in sorted(graph):
            targets = ", ".join(sorted(graph[source])) or "-"
            print(f"{source} -> {targets}")
    for component in found:
        print(f"cycle: {' <-> '.join(component)}", file=sys.stderr)
    if found:
        return 1
    print(f"import graph: {len(graph)} packages and modules, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
