"""Whether a string is an image that decodes to its end: the one check for init images and WebUI answers.

A1111 decodes ``init_images`` with ``decode_base64_to_image``: base64 (or a ``data:`` URI) is decoded, but an
``http(s)://`` string is *fetched* by the WebUI host (``api_forbid_local_requests`` aside). Only base64 image data
is therefore accepted, and it must decode completely: a PNG cut in half passes a header check and fails on the
GPU host as ``500 Invalid encoded image``. The same check runs on every image a WebUI returns, so a truncated
answer is never recorded as a finished stage.

The decode is bounded: the header states the size, which must be within ``max_pixels`` before a pixel is
decoded (Pillow's own decompression-bomb limit stays on too), and only PNG, JPEG and WebP are read.
"""

from __future__ import annotations

import binascii
import io
import re

_DATA_URI = re.compile(r"data:image/[\w.+-]+;base64,")
_FORMATS = ("PNG", "JPEG", "WEBP")


def image_data_problem(text: str, *, max_pixels: int) -> str | None:
    """Why ``text`` is not a base64 PNG, JPEG or WebP image that decodes completely, or ``None`` if it is.

    ``text`` is plain base64 or a ``data:image/...;base64,`` URI (strict base64: a URL, a path or any
    stray character is refused). The image's width x height must be at most ``max_pixels``.
    """
    return checked_image_data(text, max_pixels=max_pixels)[1]


def checked_image_data(text: str, *, max_pixels: int) -> tuple[bytes, None] | tuple[None, str]:
    """``(its bytes, None)`` when :func:`image_data_problem` finds nothing wrong with ``text``, else
    ``(None, the problem)``: for a caller that keeps the bytes it checked (a WebUI answer's image,
    written to disk as it was decoded here)."""
    match = _DATA_URI.match(text)
    body = text[match.end() :] if match else text
    try:
        data = binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        if "://" in text[:16]:
            return None, "must be base64 image data, not a URL (the WebUI would fetch it)"
        return (
            None,
            "must be base64 image data or a data:image/...;base64, URI (a file goes in init_image_path)",
        )
    problem = image_bytes_problem(data, max_pixels=max_pixels)
    return (data, None) if problem is None else (None, problem)


def image_bytes_problem(data: bytes, *, max_pixels: int) -> str | None:
    """Why ``data`` is not a PNG, JPEG or WebP image of at most ``max_pixels`` that decodes completely."""
    from PIL import Image, UnidentifiedImageError  # lazy: ``import stablenew.pipeline`` stays light

    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                return f"is a {width}x{height} image, over {max_pixels} px"
            img.verify()
        with Image.open(io.BytesIO(data), formats=_FORMATS) as img:
            img.load()
    except Image.DecompressionBombError as exc:
        return f"is too large to decode ({exc})"
    except UnidentifiedImageError:
        return "is not a PNG, JPEG or WebP image"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's words for a damaged file
        return f"is not a complete image: it does not decode ({exc or type(exc).__name__})"
    return None
