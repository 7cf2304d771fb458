"""The package layout holds: no import cycle at run time, no oversized module, and every
folder says what lives in it (README "Development")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streamapp", "bench", "reliability")
MAX_LINES = 420  # "about 400": split by concern beyond this


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of this project that `module` imports when it runs (anywhere in its code, in
    functions too), leaving out imports only a type checker sees."""
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {t for t in targets if t in known and t != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\nimport c\n"
    assert _imports(ast.parse(source), "a", False, {"b", "c"}) == {"c"}


def test_no_import_cycle_between_modules_at_run_time() -> None:
    graph = import_graph()
    assert graph.get("streamapp.pipeline.agents")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_oversized(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern"


def test_every_folder_says_what_lives_there() -> None:
    for path in _modules().values():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and len(doc) > 40, f"{path.relative_to(ROOT)} needs a docstring"


# What a package may not import, at run time (README "Development"): the model side knows
# nothing of Kafka or Faust, the edges nothing of the worker, the data path nothing of the
# programs around it.
FORBIDDEN = {
    "streamapp.serving": ("streamapp.pipeline", "streamapp.web", "streamapp.edges",
                          "streamapp.application", "faust", "aiokafka", "mode"),
    "streamapp.edges": ("streamapp.pipeline", "streamapp.web", "streamapp.serving",
                        "streamapp.application"),
    "streamapp.pipeline": ("streamapp.web", "streamapp.edges", "streamapp.cli"),
    "streamapp.web": ("streamapp.edges", "streamapp.cli"),
}


def _all_imports(path: Path) -> set[str]:
    """Every module name imported at run time (this project's and third parties')."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_allows(package: str) -> None:
    offences = []
    for name, path in _modules().items():
        if name == package or name.startswith(package + "."):
            for imported in _all_imports(path):
                bad = [f for f in FORBIDDEN[package]
                       if imported == f or imported.startswith(f + ".")]
                offences += [f"{name} imports {imported}" for _ in bad]
    assert not offences, "\n".join(offences)
