"""No import cycle among vitkit's modules, found statically from the source (nothing is imported).

Every module under src/vitkit is parsed with `ast`. An edge A -> B is an `import vitkit.B` or
`from vitkit[.B] import name` (relative imports resolved; `from vitkit.pkg import name` counts as an edge to
`vitkit.pkg.name` when that is a module, else to the package `vitkit.pkg`) that runs when A is imported:
module-level statements, including those under `if TYPE_CHECKING:` and in `try`/`if` blocks. Imports inside
functions and methods run on call, after every module has loaded: they defer heavy dependencies (torch for
`vitkit --help`), and a second test checks that none of them hides a cycle either. A package's `__init__`
importing its own submodules is an edge as well; the implicit import of a module's parent packages is not
(every package that re-exports its submodules would otherwise be a cycle with each of them). The test fails
naming, for every group of modules that import each other, one cycle through them as a chain of modules and the
whole group.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names() -> dict[str, Path]:
    """Every vitkit module by dotted name ('vitkit.training' for its __init__)."""
    modules = {}
    for path in sorted((SRC / "vitkit").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def load_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (not those inside functions or classes' methods)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The vitkit modules that importing `name` imports directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in load_time_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else base)
    return {t for t in targets if t in modules and t != name}


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Per strongly connected component of more than one module (Tarjan): one closed chain, and its members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(chain(graph, component), component) for component in components]


def chain(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first), to name the cycle."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def import_graph() -> dict[str, set[str]]:
    """Module -> the vitkit modules it imports at load time."""
    modules = module_names()
    return {name: edges(name, path, modules) for name, path in modules.items()}


def test_src_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)} (modules in the cycle group: {', '.join(sorted(group))})" for cycle, group in cycles
    )


def every_import(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, those inside functions and methods included."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_no_import_inside_a_function_hides_a_cycle(monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "load_time_imports", every_import)
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles closed by imports inside functions:\n" + "\n".join(
        f"{' -> '.join(cycle)} (modules in the cycle group: {', '.join(sorted(group))})" for cycle, group in cycles
    )


def test_the_finder_sees_type_only_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "vitkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import a\n")
    (package / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vitkit.sub.b import B\n"
    )
    (package / "sub" / "b.py").write_text("def f():\n    from vitkit.sub import a\nfrom .c import C\n")
    (package / "sub" / "c.py").write_text("import vitkit.sub.a\n")
    modules = {
        name: tmp_path / path
        for name, path in {
            "vitkit": "vitkit/__init__.py",
            "vitkit.sub": "vitkit/sub/__init__.py",
            "vitkit.sub.a": "vitkit/sub/a.py",
            "vitkit.sub.b": "vitkit/sub/b.py",
            "vitkit.sub.c": "vitkit/sub/c.py",
        }.items()
    }
    graph = {name: edges(name, path, modules) for name, path in modules.items()}
    assert graph["vitkit.sub"] == {"vitkit.sub.a"}
    assert graph["vitkit.sub.a"] == {"vitkit.sub.b"}  # under TYPE_CHECKING: counted
    assert graph["vitkit.sub.b"] == {"vitkit.sub.c"}  # the import inside f() is not
    assert graph["vitkit.sub.c"] == {"vitkit.sub.a"}
    cycle = ["vitkit.sub.a", "vitkit.sub.b", "vitkit.sub.c"]
    assert find_cycles(graph) == [([*cycle, "vitkit.sub.a"], cycle)]
    assert find_cycles({"x": {"y"}, "y": set()}) == []
