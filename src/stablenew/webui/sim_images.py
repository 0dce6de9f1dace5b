"""The simulator's images: small real PNGs coloured by stage, their text chunks, and decoding as A1111 does.

A PNG is rendered per (stage, size, seed variant); callers may cache it and add the ``parameters`` text chunk
per answer with :func:`_with_text_chunks`, which is much cheaper than rendering again.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from stablenew.webui.sim_api import _http_exception

_STAGE_COLOURS = {
    "txt2img": (40, 80, 200),  # blue
    "img2img": (40, 160, 70),  # green
    "upscale": (230, 130, 30),  # orange
    "adetailer": (140, 60, 190),  # purple
}
_SEED_VARIANTS = 8  # seeds that share a rendered PNG: seed % 8
_CACHE_LIMIT = 64  # rendered PNGs kept when image_cache is on


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _render_png(stage: str, width: int, height: int, variant: int) -> bytes:
    """A flat PNG in the stage's colour (shaded by ``variant``) with the stage name and size drawn on it."""
    shade = variant * 10 - 35
    colour = tuple(min(255, max(0, c + shade)) for c in _STAGE_COLOURS[stage])
    image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    edge = max(1, min(width, height) // 64)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(255, 255, 255), width=edge)
    font = _font(max(10, min(width, height) // 12))
    draw.text((edge * 3, edge * 3), f"{stage}\n{width}x{height}", fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _with_text_chunks(png: bytes, text: dict[str, str]) -> bytes:
    """Insert tEXt (or iTXt for non-Latin-1) chunks right after IHDR, as Pillow's PngInfo would write them."""
    chunks = []
    for key, value in text.items():
        try:
            kind, data = b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")
        except UnicodeEncodeError:
            kind, data = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    return png[:33] + b"".join(chunks) + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def _decode_image(encoded: Any) -> Image.Image:
    """Decode like A1111's ``decode_base64_to_image``: raw base64 or a ``data:image/...;base64,`` URL."""
    try:
        if encoded.startswith("data:image/"):
            encoded = encoded.split(";")[1].split(",")[1]
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        image.load()  # a truncated image fails here, not later
        return image
    except Exception as exc:
        raise _http_exception(500, "Invalid encoded image") from exc
