"""YAML pipeline configs (``.yaml`` / ``.yml``), read as strictly as JSON ones.

``yaml.safe_load`` builds no Python objects, but it still accepts what a JSON config may not hold,
and :func:`load_yaml_text` refuses each of those at its line and column:

- a key given twice in one mapping (``safe_load`` keeps the last one silently);
- aliases (``*name``): they let a small file expand into a huge document;
- explicit tags (``!!binary``, ``!!set``, ``!!timestamp``, a custom ``!tag``), and keys that are
  not strings (``1:``, ``on:``);
- ``.nan`` and ``.inf``, as in JSON.

A value that looks like a date (``2026-12-07``) stays a string. The file-size cap, the nesting
depth and every later check are the ones JSON configs get (:mod:`stablenew.config_files`).
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_REFUSED_TAGS = (
    _TIMESTAMP,
    "tag:yaml.org,2002:binary",
    "tag:yaml.org,2002:set",
    "tag:yaml.org,2002:omap",
    "tag:yaml.org,2002:pairs",
)


class YamlConfigError(ValueError):
    """A YAML config that cannot be read; ``line`` and ``column`` count from 1 (0 when unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.line, self.column = line, column


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the refusals listed in the module docstring."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class-level table, copied
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise ConstructorError(None, None, "aliases (*name) are not allowed in a config", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise ConstructorError(None, None, f"keys must be strings (got {key!r})", key_node.start_mark)
            if key in mapping:
                message = f"{key!r} is given more than once in one mapping (only the last would count)"
                raise ConstructorError(None, None, message, key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise ConstructorError(None, None, f"{node.value} is not a finite number", node.start_mark)
        return value

    def refuse_tag(self, node: Node) -> Any:
        raise ConstructorError(None, None, f"the tag {node.tag} is not allowed in a config", node.start_mark)


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
for _tag in _REFUSED_TAGS:
    _StrictLoader.add_constructor(_tag, _StrictLoader.refuse_tag)


def load_yaml_text(text: str) -> Any:
    """The document in ``text``.

    Raises:
        YamlConfigError: invalid YAML, several documents, or anything the module docstring lists.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader, stricter
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise YamlConfigError(problem) from None
        raise YamlConfigError(problem, mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as exc:
        raise YamlConfigError(str(exc)) from None
    except RecursionError:
        raise YamlConfigError("nested too deeply to parse") from None


__all__ = ["YamlConfigError", "load_yaml_text"]
