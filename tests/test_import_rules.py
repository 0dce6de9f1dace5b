"""The rooms of ``src/stablenew`` and which may import which (docs/architecture.md draws the same).

Read from the source with ``ast``, so a lazy import inside a function counts as much as one at the top of a
module; imports under ``if TYPE_CHECKING:`` never run and are left out. The rules:

- ``pipeline/`` is pure: it imports no other room (only the root ``errors``);
- ``webui/`` (the HTTP client) imports no ``jobs``, ``run``, ``cli``, ``api`` or simulator;
- the simulator imports nothing of the client, ``jobs``, ``run``, ``cli`` or ``api``: it is a program of its own;
- ``run/`` (running a plan on a WebUI, recording it, writing outputs) imports no ``jobs``, ``cli`` or ``api``;
- ``jobs/`` (Redis and RQ) imports no ``cli`` or ``api``; ``api`` imports no ``cli``;
- the root modules (``errors``, ``settings``, ``config_files``, ``embedded``) import no room but ``pipeline``;
- no import circle between modules, nor between rooms (each root module counts as a room of its own: ``errors``
  sits below every room, ``config_files`` above ``pipeline``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "stablenew"
ROOMS = ("pipeline", "webui", "simulator", "run", "jobs", "cli", "api")
ROOT = "root"  # the modules directly in the package (errors, settings, ...), and its __init__

# room -> the rooms it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "pipeline": frozenset({"webui", "simulator", "run", "jobs", "cli", "api"}),
    "webui": frozenset({"simulator", "run", "jobs", "cli", "api"}),
    "simulator": frozenset({"webui", "run", "jobs", "cli", "api"}),
    "run": frozenset({"simulator", "jobs", "cli", "api"}),
    "jobs": frozenset({"simulator", "cli", "api"}),
    "api": frozenset({"cli"}),
    ROOT: frozenset({"webui", "simulator", "run", "jobs", "cli", "api"}),
}
# The package's own __init__ is its public surface (it names every room, lazily) and ``__main__`` is the
# ``python -m stablenew`` entry point: both stand above every room.
EXEMPT = frozenset({PACKAGE, f"{PACKAGE}.__main__"})


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    return ROOT


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports_of(source: str, module: str, known: set[str]) -> set[str]:
    """The ``stablenew`` modules that ``module`` imports at run time (``known``: every module of the package).

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``.
    """
    is_package = module in known and any(k.startswith(module + ".") for k in known)
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    found.add(name)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in (src / PACKAGE).rglob("*.py")}
    known = set(files)
    return {mod: imports_of(path.read_text(encoding="utf-8"), mod, known) for mod, path in files.items()}


def room_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        if module in EXEMPT:
            continue
        room = room_of(module)
        for target in sorted(targets):
            if target in EXEMPT:
                continue  # ``from stablenew import __version__``
            if room_of(target) in FORBIDDEN.get(room, frozenset()):
                problems.append(f"{module} ({room}) imports {target} ({room_of(target)})")
    return problems


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = itertools.count()

    def visit(node: str) -> None:
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def node_of(module: str) -> str:
    """A module's node in the graph of rooms: its room, or itself for a module at the package root."""
    room = room_of(module)
    return module.rsplit(".", 1)[-1] if room == ROOT else room


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module in EXEMPT:
            continue
        node = node_of(module)
        rooms.setdefault(node, set()).update(
            node_of(t) for t in targets if t not in EXEMPT and node_of(t) != node
        )
    return rooms


# ------------------------------------------------------------------------------------------ the rules
def test_no_room_imports_a_room_it_must_not() -> None:
    assert room_violations(import_graph()) == []


def test_no_import_circle_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_circle_between_rooms() -> None:
    assert cycles(room_graph(import_graph())) == []


def test_every_room_is_a_package_of_the_source_tree() -> None:
    present = {p.name for p in (SRC / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    assert present <= set(ROOMS), f"a room not covered by the rules: {sorted(present - set(ROOMS))}"


# ------------------------------------------------------------------------------------------ the checker itself
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"stablenew/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("importer", "line"),
    [
        ("stablenew/pipeline/plan.py", "from stablenew.jobs.queue import enqueue"),
        ("stablenew/pipeline/plan.py", "def f():\n    import stablenew.webui.client\n"),
        ("stablenew/webui/client.py", "from stablenew.jobs import queue"),
        ("stablenew/simulator/server.py", "from stablenew.webui import WebUIClient"),
        ("stablenew/jobs/queue.py", "from stablenew.cli import main"),
        ("stablenew/settings.py", "from stablenew.run.webhooks import allowed"),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path: Path, importer: str, line: str) -> None:
    """Given a tree that breaks one rule, the checker names the importing module."""
    src = _tree(
        tmp_path,
        {
            "stablenew/pipeline/__init__.py": "",
            "stablenew/webui/__init__.py": "",
            "stablenew/webui/client.py": "",
            "stablenew/simulator/__init__.py": "",
            "stablenew/jobs/__init__.py": "",
            "stablenew/jobs/queue.py": "",
            "stablenew/cli/__init__.py": "",
            "stablenew/run/__init__.py": "",
            "stablenew/run/webhooks.py": "",
            importer: line,
        },
    )
    problems = room_violations(import_graph(src))
    assert len(problems) == 1
    assert problems[0].startswith(module_name(src / importer, src))


def test_a_circle_is_reported_and_type_checking_imports_are_not(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "stablenew/pipeline/__init__.py": "",
            "stablenew/pipeline/a.py": "from stablenew.pipeline import b\n",
            "stablenew/pipeline/b.py": "def f():\n    from stablenew.pipeline.a import x\n",
            "stablenew/pipeline/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from stablenew.pipeline.d import y\n",
            "stablenew/pipeline/d.py": "from stablenew.pipeline.c import z\n",
        },
    )
    assert cycles(import_graph(src)) == [["stablenew.pipeline.a", "stablenew.pipeline.b"]]


def test_a_circle_between_rooms_is_reported(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "stablenew/jobs/__init__.py": "from stablenew.errors import E\n",
            "stablenew/errors.py": "def f():\n    from stablenew.jobs import x\n",
        },
    )
    graph = import_graph(src)
    assert cycles(room_graph(graph)) == [["errors", "jobs"]]
    assert room_violations(graph) == ["stablenew.errors (root) imports stablenew.jobs (jobs)"]
