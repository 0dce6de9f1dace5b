"""Cheap facts about base64 images, without decoding pixels, and :class:`ImageBytes`.

Images flow through stablenew as the base64 strings the WebUI sent. We only ever need their size
and format, which a PNG states in its first 24 bytes (32 base64 characters) and a WebP in its first
30; a JPEG states it in its start-of-frame segment. Other formats fall back to Pillow's lazy header
read (still no pixel decode).

An input image read from a file (a stage taken from another job) travels as :class:`ImageBytes`
instead: its bytes, which a request sends as base64 encoded a slice at a time, so that its whole
base64 text is never built. Every function here takes either.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from collections.abc import Iterator

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SLICE_BYTES = 3 * (1 << 18)  # a multiple of 3: the slices' base64 joins into the whole one's


class ImageBytes:
    """An image held as its bytes, sent as base64 that is encoded a slice at a time as the request
    body goes out (:class:`~stablenew.webui._request_body.JsonBody`): 4/3 of its size is never
    allocated at once, and nothing is encoded before it is sent."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        """The length of its base64 text."""
        return 4 * ((len(self.data) + 2) // 3)

    def base64_slices(self) -> Iterator[bytes]:
        """Its base64 text, in slices that join into the whole."""
        view = memoryview(self.data)
        for start in range(0, len(view), _SLICE_BYTES):
            yield binascii.b2a_base64(view[start : start + _SLICE_BYTES], newline=False)

    def base64(self) -> str:
        """Its whole base64 text, for a caller that needs it as a string."""
        return binascii.b2a_base64(self.data, newline=False).decode("ascii")

    def __repr__(self) -> str:  # never dump megabytes into a log line
        return f"ImageBytes(<{len(self.data)} bytes>)"


def strip_data_url(b64: str) -> str:
    """``data:image/png;base64,XXXX`` -> ``XXXX`` (A1111 accepts both on input)."""
    if b64.startswith("data:"):
        return b64.partition(",")[2]
    return b64


def image_format(b64: str | ImageBytes) -> str:
    """``png``, ``jpeg``, ``webp`` or ``bin``, from the first bytes."""
    head = _head(b64, 16)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "bin"


def image_size(b64: str | ImageBytes) -> tuple[int, int]:
    """(width, height) of a base64 image (or :class:`ImageBytes`), read from its header.

    PNG, WebP and JPEG headers are parsed here: Pillow's decompression-bomb guard would refuse to even
    report the size of a large upscale (over ~179 megapixels), although no pixel is ever decoded.

    Raises:
        ValueError: the string is not a decodable image.
    """
    head = _head(b64, 30)
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    size = _webp_size(head) if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None
    if size is None and head.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(_decoded(b64))
    return size if size is not None else _pillow_size(b64)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:  # extended: 24-bit canvas size minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT/JPG/DAC)
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length field


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame, which states the size."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_STANDALONE:
            i += 2
        elif marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (int(width), int(height)) if width and height else None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _decoded(b64: str | ImageBytes) -> bytes:
    if isinstance(b64, ImageBytes):
        return b64.data
    try:
        return base64.b64decode(strip_data_url(b64))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from None


def _pillow_size(b64: str | ImageBytes) -> tuple[int, int]:
    from PIL import Image  # lazy: the header parsers above cover what A1111 sends

    try:
        with Image.open(io.BytesIO(_decoded(b64))) as img:
            return img.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from None


def decode(b64: str) -> bytes:
    """The image's bytes, exactly as encoded (strict base64: any stray character is an error).

    ``a2b_base64`` reads an ASCII str in place; ``b64decode`` would first copy it to bytes (35 MB at
    4096x4096). Raises ``binascii.Error`` (a ValueError) on bad input.
    """
    return binascii.a2b_base64(strip_data_url(b64), strict_mode=True)


def _head(b64: str | ImageBytes, nbytes: int) -> bytes:
    if isinstance(b64, ImageBytes):
        return b64.data[:nbytes]
    chars = strip_data_url(b64)[: (nbytes + 2) // 3 * 4]
    try:
        return base64.b64decode(chars, validate=True)
    except (binascii.Error, ValueError):
        return b""
