"""The library's shape, checked: ``core`` never imports Streamlit, its rooms import only rooms below them, and its
modules import each other without a circle, function-local imports included (a circle hidden inside a function still
means two modules that cannot be read, or changed, one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

# Each room of ``core`` and its floor: a module imports its own room, the plumbing at ``core``'s top level (floor 0),
# and rooms on lower floors; rooms on one floor never import each other. The README's Layout section says the same.
FLOORS = {
    "core.photo": 1, "core.text": 1,
    "core.catalog": 2,
    "core.model": 3,
    "core.embedding": 4,
    "core.search": 5,
    "core.training": 6,
    "core.bench": 7,
}
CLI = {"core.__main__"}  # the command line sits above everything


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The core modules ``path`` imports anywhere in it (``from core import x`` counts as importing core.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules and name != "core"}
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) - {module_name(f)} for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (a, b, …, a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_core_has_no_import_circle():
    graph = import_graph()
    assert {"core.catalog.registry", "core.catalog.prepare", "core.catalog.prepared_layout",
            "core.search.workspace", "core.training.trainer"} <= set(graph)
    assert "core.catalog.registry" in graph["core.search.workspace"]
    assert "core.catalog.prepared_layout" in graph["core.catalog.prepare"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_core_never_imports_streamlit():
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        assert not any(name.split(".")[0] == "streamlit" for name in names), path


def room_of(module: str) -> str:
    """``core.catalog.prepare`` -> ``core.catalog``; a top-level module is the plumbing, ``core``."""
    return next((room for room in FLOORS if module == room or module.startswith(room + ".")), "core")


def floor_of(module: str) -> int:
    return FLOORS.get(room_of(module), 0)


def test_every_module_lives_in_a_known_room():
    rooms = {path.parent.relative_to(ROOT).as_posix().replace("/", ".") for path in CORE.rglob("__init__.py")}
    assert rooms - {"core"} == set(FLOORS), "a new room needs its floor in FLOORS (and a line in the README)"


def test_rooms_import_only_rooms_below_them():
    wrong = [f"{module} -> {target}"
             for module, targets in import_graph().items() if module not in CLI
             for target in targets
             if room_of(target) != room_of(module) and floor_of(target) >= floor_of(module)]
    assert not wrong, "\n".join(wrong)


def test_the_floor_rule_catches_an_upward_import():
    assert floor_of("core.search.index") > floor_of("core.embedding.embedder") > floor_of("core.config")
    assert room_of("core.catalogue_like") == "core" and floor_of("core.text.tags") == floor_of("core.photo.domain")


def test_pages_and_ui_import_core_never_the_reverse():
    for path in [*ROOT.glob("app_pages/*.py"), ROOT / "ui.py", ROOT / "streamlit_app.py"]:
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(m.split(".")[0] == "app_pages" for m in modules if path.name == "ui.py"), path
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {m.split(".")[0] for m in modules} & {"ui", "app_pages", "streamlit_app"}, path
