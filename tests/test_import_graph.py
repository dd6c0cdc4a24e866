"""The packages' import graph: no import circle, no module reaching into another's private names.

The graph is read from the source with :mod:`ast`, so an import inside a function counts as much as
one at the top of a module (it is the same dependency, only later). For ``from a import b`` the
edge goes to ``a.b`` when that is a module, else to ``a``; importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``, so those are edges too, except for the packages that hold the
importing module itself (they are initialised before it runs, whatever it imports).

A private name is one that starts with one underscore (``_load``, not ``__version__``). A module
may not import another module's private name (``from .x import _helper``) nor reach it through an
imported module (``x._helper``).

Each package is checked on its own (``CHECKED``): ``conditions``, ``easeml_ci`` and
``automl_runner``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("conditions", "easeml_ci", "automl_runner")
#: easeml_ci's restructure is in flight on another branch; the integrator turns it on.
CHECKED = {"conditions": True, "easeml_ci": True, "automl_runner": True}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


class Imports:
    """What one module imports: modules (edges) and names taken from other modules."""

    def __init__(self, name: str, path: Path, modules: dict[str, Path]):
        self.name = name
        self.edges: set[str] = set()
        self.private: list[str] = []
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> project module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._edge(alias.name, modules)
                    if alias.name in modules:
                        aliases[alias.asname or alias.name.split(".")[0]] = (
                            alias.name if alias.asname else alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node.module, node.level)
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in modules:
                        self._edge(full, modules)
                        aliases[alias.asname or alias.name] = full
                        continue
                    self._edge(source, modules)
                    if source in modules and source != name and _is_private(alias.name):
                        self.private.append(f"{name} imports {alias.name} from {source} (line {node.lineno})")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != name and _is_private(node.attr)):
                self.private.append(f"{name} uses {aliases[node.value.id]}.{node.attr} (line {node.lineno})")

    def _edge(self, target: str, modules: dict[str, Path]) -> None:
        for mod in _with_parents(target):
            if mod in modules and mod != self.name and not _in(mod, self.name):
                self.edges.add(mod)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_graph() -> dict[str, Imports]:
    modules = project_modules()
    return {name: Imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in(pkg: str, module: str) -> bool:
    return module == pkg or module.startswith(pkg + ".")


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def _param(pkg):
    marks = () if CHECKED[pkg] else pytest.mark.skip(reason=f"{pkg} is mid-restructure; switch on in CHECKED")
    return pytest.param(pkg, marks=marks, id=pkg)


@pytest.mark.parametrize("pkg", [_param(p) for p in PACKAGES])
def test_no_import_circle(graph, pkg):
    edges = {name: imp.edges for name, imp in graph.items()}
    found = [c for c in cycles(edges) if any(_in(pkg, m) for m in c)]
    assert found == [], f"import circles in {pkg}: {found}"


@pytest.mark.parametrize("pkg", [_param(p) for p in PACKAGES])
def test_no_private_import_across_modules(graph, pkg):
    found = [line for name, imp in graph.items() if _in(pkg, name) for line in imp.private]
    assert found == [], "\n".join(found)


def test_the_checker_sees_function_level_circles_and_private_names(tmp_path):
    """The checker itself: a circle closed by an import inside a function, and a private name."""
    edges = {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    assert cycles(edges) == [["p.a", "p.b"]]
    src = tmp_path / "b.py"
    src.write_text("def f():\n    from .a import _helper\n    from . import a\n    return a._other\n")
    imp = Imports("p.b", src, {"p": tmp_path / "__init__.py", "p.a": tmp_path / "a.py", "p.b": src})
    assert imp.edges == {"p.a"}  # p holds p.b: initialised before it, not an edge
    assert len(imp.private) == 2
    # the real graph holds a known function-level edge, so the walk reaches inside functions
    graph = import_graph()
    assert any(graph[m].edges for m in graph if m.startswith("automl_runner"))
