"""The drawing at the top of errors.py shows every error class it defines, each under its parent."""

from __future__ import annotations

import inspect
import re

from stablenew import errors


def _defined_errors() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, errors.StableNewError)
        and cls.__module__ == errors.__name__
    }


def _drawn_tree() -> dict[str, str | None]:
    """Each class name in the drawing and the name it hangs under (None for the root)."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*(?:[├└]── )?)([A-Z]\w+)\s", line + " ")
        if not match or not (line.strip().startswith(("├", "└", "│")) or match.group(2) == "StableNewError"):
            continue
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    return parents


def test_every_error_class_appears_in_the_drawing() -> None:
    defined = _defined_errors()
    assert "Requeued" in defined
    assert sorted(_drawn_tree()) == sorted(defined)


def test_the_drawing_hangs_every_error_under_its_real_parent() -> None:
    for name, parent in _drawn_tree().items():
        cls = _defined_errors()[name]
        if parent is None:
            assert cls is errors.StableNewError
        else:
            assert parent in {base.__name__ for base in cls.__bases__}, name
