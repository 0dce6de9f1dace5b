"""The run layer stands on its own: no Redis, no RQ, no queue code; the package root imports no queue code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import stablenew.run

PACKAGE = Path(stablenew.run.__file__).resolve().parent.parent


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff keeps ``__all__`` in (RUF022)."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert stablenew.run.__all__ == sorted(stablenew.run.__all__, key=_isort_key)
    for name in stablenew.run.__all__:
        assert getattr(stablenew.run, name) is not None


def test_importing_the_run_layer_loads_neither_redis_rq_nor_the_queue_code() -> None:
    code = (
        "import sys, stablenew.run; "
        "print(sorted(m for m in sys.modules if m in ('redis', 'rq') or m.startswith('stablenew.jobs')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_module_at_the_package_root_or_in_the_run_layer_imports_the_queue_code() -> None:
    modules = [*PACKAGE.glob("*.py"), *(PACKAGE / "run").glob("*.py")]
    assert len(modules) > 5
    offenders = {
        path.relative_to(PACKAGE).as_posix(): sorted(
            m for m in _imported_modules(path) if m.startswith("stablenew.jobs")
        )
        for path in modules
        if path.name != "__init__.py" or path.parent.name == "run"
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
