"""The import graph of the repository's own modules: no cycle, counting imports inside functions too (a lazy import
that hides a cycle is still a cycle); script entry points (`if __name__ == "__main__":`) and type-only imports are
not imports of the module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "utils")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _skipped(node: ast.AST) -> bool:
    """An `if __name__ == "__main__":` or `if TYPE_CHECKING:` block."""
    if not isinstance(node, ast.If):
        return False
    text = ast.unparse(node.test)
    return "__main__" in text or "TYPE_CHECKING" in text


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The repository modules a file imports, anywhere in it (functions included)."""
    out: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if _skipped(node):
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n in modules:
                out.add(n)
        stack.extend(ast.iter_child_nodes(node))
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the repository modules it imports} over models/ and utils/."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    modules = set(files)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are documentation-only here: edges go to the
    # module named
    return {m: _imports(ast.parse(p.read_text(encoding="utf-8")), modules) - {m} for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_pairs_that_had_cycles_import_one_way():
    graph = import_graph()
    assert "models.yolo" in graph["models.multitask"] and "models.multitask" not in graph["models.yolo"]
    assert "utils.data.semantic_spec" in graph["utils.data.dataset_config"]
    assert "utils.data.dataset_config" not in graph["utils.data.semantic_spec"]


def test_layers_below_the_tasks_import_no_task():
    """The engine, export, checkpoint, models and data import no task; the registry (a leaf) they may ask."""
    lower = ("utils.engine", "utils.export", "utils.checkpoint", "models", "utils.data")
    for m, deps in import_graph().items():
        if m.startswith(lower):
            # the package utils.tasks itself is a docstring: `from utils.tasks import registry` imports the registry
            tasks = sorted(d for d in deps if d.startswith("utils.tasks.") and d != "utils.tasks.registry")
            assert not tasks, f"{m} imports {tasks}"
    assert not [d for d in import_graph()["utils.tasks.registry"] if not d.startswith(("utils.errors",))]


def test_the_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
