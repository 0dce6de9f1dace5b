"""Cheap facts about base64 images, without decoding pixels.

Images flow through stablenew as the base64 strings the WebUI sent. We only ever need their size
and format, which a PNG states in its first 24 bytes: 32 base64 characters. Other formats fall
back to Pillow's lazy header read (still no pixel decode).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def strip_data_url(b64: str) -> str:
    """``data:image/png;base64,XXXX`` -> ``XXXX`` (A1111 accepts both on input)."""
    if b64.startswith("data:"):
        return b64.partition(",")[2]
    return b64


def image_format(b64: str) -> str:
    """``png``, ``jpeg``, ``webp`` or ``bin``, from the first bytes."""
    head = _head(b64, 16)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "bin"


def image_size(b64: str) -> tuple[int, int]:
    """(width, height) of a base64 image.

    Raises:
        ValueError: the string is not a decodable image.
    """
    head = _head(b64, 24)
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    from PIL import Image  # lazy: the PNG path above is the common one

    try:
        with Image.open(io.BytesIO(base64.b64decode(strip_data_url(b64)))) as img:
            return img.size
    except (OSError, binascii.Error) as exc:
        raise ValueError(f"not a decodable image: {exc}") from None


def decode(b64: str) -> bytes:
    """The image's bytes, exactly as encoded."""
    return base64.b64decode(strip_data_url(b64), validate=True)


def _head(b64: str, nbytes: int) -> bytes:
    chars = strip_data_url(b64)[: (nbytes + 2) // 3 * 4]
    try:
        return base64.b64decode(chars, validate=True)
    except (binascii.Error, ValueError):
        return b""
