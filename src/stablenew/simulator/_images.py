"""The simulator's images: small real PNGs coloured by stage, their text chunks, and decoding as A1111 does.

A PNG is rendered per (stage, size, seed variant); callers may cache it and add the ``parameters`` text chunk
per answer with :func:`with_text_chunks`, which is much cheaper than rendering again. :class:`Images` is the
strategy a simulator asks for all of it; a benchmark passes its own (bigger images, cheaper decoding).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import threading
import zlib
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ._api import http_exception

_STAGE_COLOURS = {
    "txt2img": (40, 80, 200),  # blue
    "img2img": (40, 160, 70),  # green
    "upscale": (230, 130, 30),  # orange
    "adetailer": (140, 60, 190),  # purple
}
SEED_VARIANTS = 8  # seeds that share a rendered PNG: seed % 8
CACHE_LIMIT = 64  # rendered PNGs kept when image_cache is on


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def render_png(stage: str, width: int, height: int, variant: int) -> bytes:
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


def with_text_chunks(png: bytes, text: dict[str, str]) -> bytes:
    """Insert tEXt (or iTXt for non-Latin-1) chunks right after IHDR, as Pillow's PngInfo would write them."""
    chunks = []
    for key, value in text.items():
        try:
            kind, data = b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")
        except UnicodeEncodeError:
            kind, data = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    return png[:33] + b"".join(chunks) + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def decode_image(encoded: Any) -> Image.Image:
    """Decode like A1111's ``decode_base64_to_image``: raw base64 or a ``data:image/...;base64,`` URL."""
    try:
        if encoded.startswith("data:image/"):
            encoded = encoded.split(";")[1].split(",")[1]
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        image.load()  # a truncated image fails here, not later
        return image
    except Exception as exc:
        raise http_exception(500, "Invalid encoded image") from exc


class Images:
    """How a simulator decodes the images a request sends and encodes the images and JSON it answers.

    Subclass it and pass an instance as ``SimulatedWebUI(images=...)`` to change any of the three; the default
    renders :func:`render_png` images and, with ``cache``, reuses each rendered PNG per (stage, size, seed % 8).
    Methods are called from several request threads at once.
    """

    def __init__(self, *, cache: bool = False) -> None:
        self._cache_on = cache
        self._cache: dict[tuple[str, int, int, int], bytes] = {}
        self._lock = threading.Lock()

    def decode(self, encoded: Any) -> Image.Image:
        """An input image (``init_images`` item or extras ``image``) as A1111 decodes it.

        Raises:
            HTTPError: the 500 A1111 answers for an image it cannot decode.
        """
        return decode_image(encoded)

    def encode(self, stage: str, width: int, height: int, seed: int, text: dict[str, str]) -> str:
        """The base64 PNG answered for one image of ``stage``, with ``text`` as its PNG text chunks."""
        key = (stage, max(1, width), max(1, height), seed % SEED_VARIANTS)
        with self._lock:
            png = self._cache.get(key) if self._cache_on else None
        if png is None:
            png = render_png(*key)
            if self._cache_on:
                with self._lock:
                    if len(self._cache) >= CACHE_LIMIT:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[key] = png
        return base64.b64encode(with_text_chunks(png, text)).decode("ascii")

    def to_json(self, payload: Any) -> bytes:
        """The body bytes of a successful answer (error answers are always plain ``json.dumps``)."""
        return json.dumps(payload).encode()
