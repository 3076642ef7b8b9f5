"""No import circles among fakeface's modules.

Every ``import fakeface...`` / ``from fakeface... import ...`` in the package's
source counts, wherever it stands: at the top, inside a function (a lazy
import) or under ``if TYPE_CHECKING:``; a circle through any of them still
ties the two modules together. The source is parsed, never imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "fakeface"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file below ``package_dir``."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, source: str, modules: dict[str, Path], is_package: bool = False) -> set[str]:
    """The package's modules that ``source`` (the text of ``module``) imports, anywhere in it."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            # `from package import submodule` imports the submodule; `from module import name` the module.
            names = [f"{origin}.{alias.name}" for alias in node.names] or [origin]
        else:
            continue
        for name in names:
            target = _deepest_module(name, modules)
            if target is not None and target != module:
                targets.add(target)
    return targets


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(package_dir, package)
    return {name: imported_modules(name, path.read_text(encoding="utf-8"), modules, path.name == "__init__.py")
            for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted; sorted by first member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_package_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert len(graph) > 50 and graph["fakeface.modeling.fastpath.serving"], "the graph was not built"
    cycles = import_cycles(graph)
    details = [" <-> ".join(group) + "\n    " + "\n    ".join(f"{a} imports {sorted(graph[a] & set(group))}"
                                                             for a in group) for group in cycles]
    assert cycles == [], "import cycles:\n" + "\n".join(details)


def _graph_of(files: dict[str, str], tmp_path: Path) -> dict[str, set[str]]:
    root = tmp_path / "pkg"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(root, "pkg")


def test_a_cycle_through_a_function_level_or_type_checking_import_is_found(tmp_path):
    graph = _graph_of({
        "__init__.py": "",
        "a.py": "from pkg.b import thing\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import other\nthing = 1\n",
        "c.py": "def f():\n    import pkg.a\n",
        "d.py": "from pkg import a\n",
    }, tmp_path)
    assert graph["pkg.d"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_relative_imports_and_submodule_imports_resolve_to_modules(tmp_path):
    graph = _graph_of({
        "__init__.py": "from .sub import helper\n",
        "sub/__init__.py": "from . import helper\n",
        "sub/helper.py": "from ..other import value\nimport os\n",
        "other.py": "value = 1\n",
    }, tmp_path)
    assert graph == {"pkg": {"pkg.sub.helper"}, "pkg.sub": {"pkg.sub.helper"}, "pkg.sub.helper": {"pkg.other"},
                     "pkg.other": set()}
    assert import_cycles(graph) == []
    graph["pkg.other"] = {"pkg.sub"}
    assert import_cycles(graph) == [["pkg.other", "pkg.sub", "pkg.sub.helper"]]
