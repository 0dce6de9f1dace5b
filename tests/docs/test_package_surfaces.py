"""stablenew.pipeline, stablenew.webui and stablenew.simulator each export their public names once, from private modules.

The modules behind a package are private (``_config.py``, ``_client.py``) and the names inside them plain; a
public name has one import path, the package. These tests pin that layout so it does not drift back into
modules importing each other's private names or code reaching past a package into its private modules.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "stablenew"
PACKAGES = ("stablenew.pipeline", "stablenew.webui", "stablenew.simulator")
LAYERED = sorted(p for package in ("pipeline", "webui", "simulator") for p in (SRC / package).glob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def _python_files() -> list[Path]:
    return sorted(p for top in ("src", "tests", "bench", "producer") for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_is_listed_once(package: str) -> None:
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_class_and_function_lives_in_the_package(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__.startswith(package + "._"), (
                f"{package}.{name} comes from {value.__module__}"
            )


def test_layered_modules_import_no_private_names() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {module} {name}"
        for path in LAYERED
        for module, names in _imports(path)
        if module.startswith("stablenew")
        for name in names
        if name.startswith("_")
    ]
    assert offenders == []


def test_nothing_outside_a_package_imports_its_private_modules() -> None:
    offenders = []
    for path in _python_files():
        for module, names in _imports(path):
            for package in PACKAGES:
                inside = path.is_relative_to(SRC / package.removeprefix("stablenew."))
                private = module.startswith(package + "._") or (
                    module == package and any(n.startswith("_") for n in names)
                )
                if private and not inside:
                    offenders.append(f"{path.relative_to(ROOT)}: {module} {names}")
    assert offenders == []


def test_the_config_models_do_not_import_the_normaliser() -> None:
    modules = {module for module, _ in _imports(SRC / "pipeline" / "_config.py")}
    assert "stablenew.pipeline._normalise" not in modules


def test_importing_webui_or_an_image_helper_loads_neither_requests_nor_pydantic() -> None:
    code = (
        "import sys; from stablenew.webui import image_size; "
        "print(sorted(m for m in ('requests', 'pydantic', 'rq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
