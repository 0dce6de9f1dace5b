"""Serving a job's images, and cached thumbnails of them.

A file is found only by its name as the job's state lists it (``00-txt2img-00.png``): the request
never supplies a path. The listed path must lie under the output root (``STABLENEW_OUTPUT_DIR``)
once resolved, symlinks included, or it is not served. Thumbnails are made with Pillow and cached
under ``<output root>/.thumbnails/`` (a name no job folder can have), keyed by the image's sha256.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from stablenew.errors import JobNotFound

THUMB_DIR = ".thumbnails"


def listed_output(view: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The output record named ``name`` in a status view, if the job lists one."""
    for stage in view.get("stages", []):
        for out in stage.get("outputs", []):
            if PurePosixPath(str(out.get("path", ""))).name == name:
                found: dict[str, Any] = out
                return found
    return None


def output_path(root: Path, view: dict[str, Any], name: str) -> tuple[Path, dict[str, Any]]:
    """The file on disk for output ``name`` of the job in ``view``.

    Raises:
        JobNotFound: the job lists no such output, or its file is missing or outside ``root``.
    """
    job_id = view.get("job_id")
    out = listed_output(view, name)
    if out is None:
        raise JobNotFound(f"job {job_id} has no output named {name!r}", job_id=job_id)
    base = root.resolve()
    path = (base / str(out["path"])).resolve()
    if not path.is_relative_to(base) or THUMB_DIR in path.relative_to(base).parts or not path.is_file():
        raise JobNotFound(f"output {name!r} of job {job_id} is not on disk here", job_id=job_id)
    return path, out


def thumbnail(root: Path, source: Path, sha256: str, size: int) -> Path | bytes:
    """A PNG no larger than ``size`` x ``size`` of ``source``: the cached file, made once; or the
    bytes themselves when the cache cannot be written (an output root mounted read-only).

    Raises:
        OSError: Pillow cannot read ``source``.
    """
    folder = root.resolve() / THUMB_DIR
    key = "".join(c for c in sha256 if c in "0123456789abcdef")[:64] or "unknown"
    target = folder / f"{key}-{size}.png"
    if target.is_file():
        return target
    with Image.open(source) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    data = buffer.getvalue()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    except OSError:
        return data
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return data
    return target
