"""Reading pipeline configs from disk (the CLI's and scripts' edge; ``pipeline/`` stays pure).

A config file is JSON in any shape :func:`~stablenew.pipeline.config.parse_config` accepts. One
convenience is resolved here, at submit time, so that workers never read paths from a job:
``init_image_path`` in the img2img section (relative to the config file) is read and embedded as
base64 in ``init_images``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline.config import MAX_INIT_IMAGE_B64

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _is_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file and embed any ``init_image_path`` it names.

    Raises:
        ConfigError: unreadable file, invalid JSON, or an init image that is missing or not an image.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = FieldProblem("", f"cannot read config file: {exc.strerror}", has_value=False)
        raise ConfigError([problem], source=source) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = FieldProblem(
            "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", has_value=False
        )
        raise ConfigError([problem], source=source) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            [FieldProblem("", "a pipeline config must be a JSON object", type(raw).__name__)], source=source
        )
    _embed_init_images(raw, path.parent, source)
    return raw


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
        image_path = (base_dir / rel).expanduser()
        try:
            data = image_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                [FieldProblem(field, f"cannot read image: {exc.strerror}", rel)], source=source
            ) from None
        if not _is_image(data):
            raise ConfigError([FieldProblem(field, "is not a PNG, JPEG or WebP image", rel)], source=source)
        encoded = base64.b64encode(data).decode("ascii")
        if len(encoded) > MAX_INIT_IMAGE_B64:
            raise ConfigError(
                [FieldProblem(field, "image is too large", f"{len(data)} bytes")], source=source
            )
        section["init_images"] = [*section.get("init_images", []), encoded]
