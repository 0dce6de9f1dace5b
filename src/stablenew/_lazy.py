"""PEP 562 lazy exports: a package's public names, each imported from its module on first use.

``stablenew`` and ``stablenew.webui`` export their names this way, so that importing a package (or one
name of it) loads only what that name needs: ``import stablenew`` loads neither pydantic nor rq, and
``from stablenew.webui import image_size`` does not load requests. This module imports nothing of the
package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of the package whose globals are ``namespace``.

    ``exports`` maps each public name to the module it is imported from. A name is imported on first
    use and kept in ``namespace``, so that later uses find it there; any other name raises
    AttributeError, as it would without ``__getattr__``. ``__dir__`` lists the package's ``__all__``.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        names: list[str] = namespace["__all__"]
        return names

    return __getattr__, __dir__
