"""The lazy exports of ``stablenew`` and ``stablenew.webui`` (stablenew._lazy): a name is imported on first
use and kept, an unknown name is an AttributeError naming the package, and ``dir()`` is ``__all__``."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from stablenew._lazy import lazy_exports

PACKAGES = ("stablenew", "stablenew.webui")


def test_a_name_is_imported_on_first_use_and_kept_in_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    namespace = {"__name__": "pkg", "__all__": ["rgb_to_hsv"]}
    getattr_, _ = lazy_exports(namespace, {"rgb_to_hsv": "colorsys"})
    assert "colorsys" not in sys.modules

    value = getattr_("rgb_to_hsv")

    assert value is sys.modules["colorsys"].rgb_to_hsv
    assert namespace["rgb_to_hsv"] is value


def test_a_name_not_exported_is_an_attribute_error_naming_the_package() -> None:
    getattr_, _ = lazy_exports({"__name__": "pkg", "__all__": ["dumps"]}, {"dumps": "json"})

    with pytest.raises(AttributeError, match=r"^module 'pkg' has no attribute 'loads'$"):
        getattr_("loads")
    assert getattr_("dumps") is json.dumps


def test_dir_is_the_packages_all() -> None:
    _, dir_ = lazy_exports({"__name__": "pkg", "__all__": ["dumps", "loads"]}, {"dumps": "json"})

    assert dir_() == ["dumps", "loads"]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_answers_an_unknown_name_and_dir_as_a_module_would(package: str) -> None:
    module = importlib.import_module(package)

    with pytest.raises(AttributeError, match=rf"^module '{package}' has no attribute 'no_such_name'$"):
        module.no_such_name  # noqa: B018
    assert not hasattr(module, "no_such_name")
    assert dir(module) == sorted(module.__all__)


@pytest.mark.parametrize(("package", "name"), [("stablenew", "Producer"), ("stablenew.webui", "WebUIClient")])
def test_each_package_keeps_a_name_once_it_is_used(package: str, name: str) -> None:
    code = (
        f"import {package} as p; before = {name!r} in vars(p); value = p.{name}; "
        f"print(before, vars(p)[{name!r}] is value)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
