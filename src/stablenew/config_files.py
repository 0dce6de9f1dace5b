"""Reading pipeline configs from disk (the CLI's and scripts' edge; ``pipeline/`` stays pure).

A config file is JSON, or YAML when its name ends in ``.yaml``/``.yml`` (:mod:`config_yaml`), in any shape :func:`~stablenew.pipeline.parse_config` accepts. One
convenience is resolved here, at submit time, so that workers never read paths from a job:
``init_image_path`` in the img2img section (relative to the config file) is read and embedded as
base64 in ``init_images``.

What is refused here, each as a :class:`~stablenew.errors.ConfigError` naming the file (and the field when
there is one), before anything is parsed further:

- a file over :data:`MAX_CONFIG_FILE_BYTES` (judged by its size before reading, and by reading at most one
  byte more than the limit, so ``/dev/zero`` cannot exhaust memory either), text that is not UTF-8 (a
  leading byte-order mark is allowed), invalid JSON, JSON nested too deeply for the parser;
- ``NaN``, ``Infinity`` and ``-Infinity`` (Python's parser accepts them, JSON does not, nor does the WebUI),
  a key given twice in one object (Python's parser would keep the last one silently), and objects or lists
  nested deeper than :data:`~stablenew.pipeline.MAX_DEPTH`; each is named by its field path;
- an ``init_image_path`` that holds a control character, or names something that is not a PNG, JPEG or WebP
  image of at most ``MAX_INIT_IMAGE_B64`` once encoded, that decodes completely (Pillow's ``verify()`` and a
  full ``load()``, at most ``MAX_INIT_IMAGE_PIXELS``; a file cut short is refused here, not by the WebUI). The path may be absolute or go up (``../images/a.png``):
  it is read here, by whoever submits, with their own rights, and only an image is ever embedded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from stablenew.config_yaml import YamlConfigError, load_yaml_text
from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import (
    MAX_INIT_IMAGE_B64,
    MAX_INIT_IMAGE_PIXELS,
    image_bytes_problem,
    structure_problem,
    text_problem,
)

YAML_SUFFIXES = (".yaml", ".yml")
MAX_CONFIG_FILE_BYTES = 32 * 1024 * 1024  # larger init images belong in a file named by init_image_path
MAX_INIT_IMAGE_BYTES = MAX_INIT_IMAGE_B64 // 4 * 3


class _NonFinite:
    """Where the JSON text said NaN or Infinity (reported by path once the document is parsed)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _read_bounded(path: Path, limit: int) -> tuple[bytes, str | None]:
    """The bytes of ``path``, or why not: its size is over ``limit`` (by ``stat`` for a regular file, else
    by reading at most ``limit + 1`` bytes, so ``/dev/zero`` or a pipe cannot exhaust memory).

    Raises:
        OSError: the file cannot be opened or read.
    """
    size = path.stat().st_size if path.is_file() else 0
    if size > limit:
        return b"", f"{size} bytes"
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        return b"", f"more than {limit} bytes"
    return data, None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config file, JSON or (``.yaml``/``.yml``) YAML, and embed any ``init_image_path`` it names.

    Raises:
        ConfigError: unreadable or oversized file, text that is not UTF-8, invalid JSON or YAML (NaN,
            Infinity and a key given twice included; see :mod:`config_yaml`), nesting too deep, or an init image that is missing, too large
            or not an image.
    """
    path = Path(path)
    source = str(path)

    def refuse(message: str) -> ConfigError:
        return ConfigError([FieldProblem("", message, has_value=False)], source=source)

    try:
        data, oversized = _read_bounded(path, MAX_CONFIG_FILE_BYTES)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise refuse(f"cannot read config file: {getattr(exc, 'strerror', None) or exc}") from None
    if oversized:
        raise refuse(f"config file is too large: at most {MAX_CONFIG_FILE_BYTES} bytes (got {oversized})")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        raise refuse(f"is not UTF-8 text (invalid byte at offset {exc.start})") from None
    duplicates: dict[int, list[str]] = {}

    def object_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            keys = [key for key, _ in pairs]
            duplicates[id(obj)] = sorted({key for key in keys if keys.count(key) > 1})
        return obj

    is_yaml = path.suffix.lower() in YAML_SUFFIXES
    if is_yaml:
        try:
            raw = load_yaml_text(text)
        except YamlConfigError as exc:
            where = f" at line {exc.line} column {exc.column}" if exc.line else ""
            raise refuse(f"invalid YAML{where}: {exc}") from None
    else:
        try:
            raw = json.loads(text, parse_constant=_NonFinite, object_pairs_hook=object_of)
        except json.JSONDecodeError as exc:
            hint = (
                "" if path.suffix.lower() == ".json" else " (a config is JSON, or YAML in a .yaml/.yml file)"
            )
            raise refuse(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}") from None
        except RecursionError:
            raise refuse("invalid JSON: nested too deeply to parse") from None
    if not isinstance(raw, dict):
        shape = "a YAML mapping" if is_yaml else "a JSON object"
        raise ConfigError(
            [FieldProblem("", f"a pipeline config must be {shape}", type(raw).__name__)], source=source
        )
    problem = structure_problem(raw)
    if problem is not None:
        raise ConfigError([problem], source=source)
    problems = _value_problems(raw, duplicates)
    if problems:
        raise ConfigError(problems, source=source)
    _embed_init_images(raw, path.parent, source)
    return raw


def _value_problems(raw: dict[str, Any], duplicates: dict[int, list[str]]) -> list[FieldProblem]:
    """Every ``NaN`` / ``Infinity`` in ``raw`` (already known to be shallow), and every key given twice in
    one object (``duplicates``: the keys by ``id`` of the object; Python's parser keeps the last silently)."""
    problems: list[FieldProblem] = []
    todo: list[tuple[Any, str]] = [(raw, "")]
    while todo:
        node, path = todo.pop()
        for name in duplicates.get(id(node), []):
            message = "is given more than once in one object (only the last would count)"
            problems.append(FieldProblem(f"{path}.{name}" if path else name, message, has_value=False))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, _NonFinite):
                message = f"{value.text} is not valid JSON: give a finite number"
                problems.append(FieldProblem(where, message, has_value=False))
            else:
                todo.append((value, where))
    return sorted(problems, key=lambda p: p.path)


def _img2img_sections(raw: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    body = raw.get("execution_config") if isinstance(raw.get("execution_config"), dict) else raw
    prefix = "execution_config." if body is not raw else ""
    found = []
    for key in ("img2img_config", "img2img"):
        section = body.get(key) if isinstance(body, dict) else None
        if isinstance(section, dict):
            found.append((section, f"{prefix}{key}.init_image_path"))
    return found


def _embed_init_images(raw: dict[str, Any], base_dir: Path, source: str) -> None:
    for section, field in _img2img_sections(raw):
        rel = section.pop("init_image_path", None)
        if rel is None:
            continue
        if not isinstance(rel, str) or not rel:
            raise ConfigError([FieldProblem(field, "must be a file path", rel)], source=source)
        problem = text_problem(rel)
        if problem is None and any(c in rel for c in "\t\n\r"):
            problem = "must not contain a tab or line break"
        if problem:
            raise ConfigError([FieldProblem(field, problem, rel)], source=source)
        try:
            data, oversized = _read_bounded((base_dir / rel).expanduser(), MAX_INIT_IMAGE_BYTES)
        except OSError as exc:
            raise ConfigError(
                [FieldProblem(field, f"cannot read image: {exc.strerror or exc}", rel)], source=source
            ) from None
        if oversized:
            message = f"image is too large: at most {MAX_INIT_IMAGE_BYTES} bytes (got {oversized})"
            raise ConfigError([FieldProblem(field, message, has_value=False)], source=source)
        problem = image_bytes_problem(data, max_pixels=MAX_INIT_IMAGE_PIXELS)
        if problem is not None:
            raise ConfigError([FieldProblem(field, problem, rel)], source=source)
        encoded = base64.b64encode(data).decode("ascii")
        section["init_images"] = [*section.get("init_images", []), encoded]
