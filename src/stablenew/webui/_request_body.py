"""The streaming JSON request body of a WebUI call: base64 images are sent in slices, never copied whole.

:class:`~stablenew.webui._client.WebUIClient` sends every request payload as a :class:`JsonBody`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from ._images import ImageBytes

_SLICE_CHARS = 1 << 20
_INLINE_LIMIT = 1 << 16


class JsonBody:
    """A JSON request body whose large base64 strings are sent in slices, never copied whole.

    ``json.dumps`` of a request holding a 35 MB image would build a 35 MB str and then 35 MB of bytes. Here
    the big strings (``init_images``, ``image``) are replaced by unique markers, the small rest is dumped as
    usual, and the images are spliced back in at send time, 1 MiB at a time. requests sends an iterable with
    ``__len__`` with a Content-Length, like any body. Strings that are not plain base64 are left to
    ``json.dumps`` (which would escape them) so the output is always valid JSON. An :class:`ImageBytes` is
    encoded to base64 a slice at a time as it is sent (its whole base64 text is never built).
    """

    def __init__(self, payload: Mapping[str, Any]) -> None:
        body = dict(payload)
        token = uuid.uuid4().hex
        images: list[str | ImageBytes] = []

        def mark(value: Any) -> Any:
            plain = isinstance(value, str) and len(value) > _INLINE_LIMIT and _is_plain_ascii(value)
            if plain or isinstance(value, ImageBytes):
                images.append(value)
                return f"\x00{token}{len(images) - 1}\x00"
            return value

        if isinstance(body.get("init_images"), list):
            body["init_images"] = [mark(v) for v in body["init_images"]]
        if "image" in body:
            body["image"] = mark(body["image"])
        text = json.dumps(body, allow_nan=False)
        parts: list[bytes | str | ImageBytes] = []
        for index, image in enumerate(images):
            head, found, text = text.partition(f'"\\u0000{token}{index}\\u0000"')
            assert found, "image marker lost"
            parts += [head.encode() + b'"', image, b'"']
        parts.append(text.encode())
        self._parts = parts
        self._length = sum(len(p) for p in parts)  # base64 is ASCII: one byte per character

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []  # single use: each part is released once sent
        parts.reverse()
        while parts:
            part = parts.pop()
            if isinstance(part, bytes):
                yield part
                continue
            if isinstance(part, ImageBytes):
                yield from part.base64_slices()
                del part
                continue
            for start in range(0, len(part), _SLICE_CHARS):
                yield part[start : start + _SLICE_CHARS].encode("ascii")
            del part


def _is_plain_ascii(value: str) -> bool:
    """True when json.dumps would copy ``value`` unchanged, checked at C speed (``isascii`` is a flag).

    Quote, backslash and line breaks are looked for; other control characters are not (a full scan costs
    ~0.5 s at 35 MB): base64 never holds them, and if one did, the WebUI would refuse the body loudly (422),
    which is the right outcome for an image that is not base64.
    """
    return value.isascii() and not any(ch in value for ch in ('"', "\\", "\n", "\r"))
