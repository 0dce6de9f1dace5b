"""Facts about base64 images (size, format, bytes) read without decoding pixels or re-encoding."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from stablenew.webui import ImageBytes, decode, image_format, image_size, strip_data_url


def encoded(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_png_size_is_read_from_its_header():
    assert image_size(encoded(384, 256)) == (384, 256)


def test_a_png_size_needs_only_the_first_32_base64_characters():
    """Nothing after the IHDR chunk is read, so a multi-MB image costs no decode."""
    head = encoded(1216, 832)[:32]

    assert image_size(head) == (1216, 832)


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "jpeg"), ("WEBP", "webp")])
def test_other_formats_have_their_size_and_format_read_too(fmt, name):
    image = encoded(320, 200, fmt)

    assert image_size(image) == (320, 200)
    assert image_format(image) == name


def test_a_png_is_recognised_as_png():
    assert image_format(encoded(8, 8)) == "png"


def test_bytes_that_are_no_known_image_format_are_bin():
    assert image_format(base64.b64encode(b"GIF89a not really an image").decode()) == "bin"
    assert image_format("not base64 at all!") == "bin"


def test_a_data_url_is_read_like_the_raw_base64_inside_it():
    raw = encoded(96, 64)
    url = "data:image/png;base64," + raw

    assert strip_data_url(url) == raw
    assert image_size(url) == (96, 64)
    assert image_format(url) == "png"
    assert decode(url) == base64.b64decode(raw)


def test_raw_base64_is_left_as_it_is():
    raw = encoded(16, 16)

    assert strip_data_url(raw) == raw


def test_decode_returns_the_exact_bytes_that_were_encoded():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, format="PNG")
    data = buffer.getvalue()

    assert decode(base64.b64encode(data).decode()) == data


def test_decode_refuses_text_that_is_not_strict_base64():
    with pytest.raises(ValueError):
        decode("not base64!!")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!!",
        base64.b64encode(b"plain text, no image here").decode(),
        encoded(32, 32, "JPEG")[:40],  # a JPEG cut off before its size is stated
    ],
    ids=["empty", "not-base64", "not-an-image", "truncated-jpeg"],
)
def test_the_size_of_something_that_is_not_an_image_is_a_value_error(text):
    with pytest.raises(ValueError):
        image_size(text)


def test_a_png_wrapped_over_several_lines_still_has_its_size_read():
    raw = encoded(72, 48)
    wrapped = "\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))

    assert image_size(wrapped) == (72, 48)


def _jpeg_with_stated_size(width: int, height: int, **save: object) -> str:
    """A small real JPEG whose start-of-frame segment is patched to state another size."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (5, 5, 5)).save(buffer, format="JPEG", **save)
    data = bytearray(buffer.getvalue())
    i = 2
    while not (0xC0 <= data[i + 1] <= 0xCF and data[i + 1] not in (0xC4, 0xC8, 0xCC)):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return base64.b64encode(bytes(data)).decode()


@pytest.mark.parametrize(
    ("save", "label"),
    [
        ({}, "baseline"),
        ({"progressive": True}, "progressive"),
        ({"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00", "quality": 50}, "with exif"),
        ({"icc_profile": b"\x00" * 3000}, "with a large icc segment"),
    ],
)
def test_jpeg_sizes_are_read_from_the_start_of_frame_whatever_comes_before_it(save, label):
    buffer = io.BytesIO()
    Image.new("RGB", (328, 200), (9, 9, 9)).save(buffer, format="JPEG", **save)

    assert image_size(base64.b64encode(buffer.getvalue()).decode()) == (328, 200), label


@pytest.mark.parametrize(
    ("save", "mode"),
    [({"lossless": False}, "RGB"), ({"lossless": True}, "RGB"), ({"exif": b"Exif\x00\x00MM"}, "RGBA")],
    ids=["lossy-vp8", "lossless-vp8l", "extended-vp8x"],
)
def test_webp_sizes_are_read_from_each_kind_of_webp_header(save, mode):
    buffer = io.BytesIO()
    Image.new(mode, (330, 202)).save(buffer, format="WEBP", **save)

    assert image_size(base64.b64encode(buffer.getvalue()).decode()) == (330, 202)


def test_a_huge_jpeg_upscale_still_has_its_size_read():
    """16384x16384 is within the config limits for an upscale; Pillow's bomb guard refuses to open it."""
    assert image_size(_jpeg_with_stated_size(16384, 16384)) == (16384, 16384)


def test_a_huge_webp_canvas_still_has_its_size_read():
    buffer = io.BytesIO()
    Image.new("RGBA", (16, 16)).save(buffer, format="WEBP", exif=b"Exif\x00\x00MM")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8X"
    data[24:30] = (16383 - 1).to_bytes(3, "little") * 2

    assert image_size(base64.b64encode(bytes(data)).decode()) == (16383, 16383)


def test_a_huge_image_pillow_refuses_is_a_value_error_not_a_pillow_error():
    buffer = io.BytesIO()
    Image.new("P", (16, 16)).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = (30000).to_bytes(2, "little") * 2  # logical screen size
    data[data.index(b",") + 5 : data.index(b",") + 9] = (30000).to_bytes(2, "little") * 2  # image descriptor

    with pytest.raises(ValueError):
        image_size(base64.b64encode(bytes(data)).decode())


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_image_bytes_have_the_size_and_format_of_their_base64(fmt, name):
    image = encoded(320, 200, fmt)
    held = ImageBytes(base64.b64decode(image))

    assert (
        (image_size(held), image_format(held))
        == (image_size(image), image_format(image))
        == ((320, 200), name)
    )
    assert held.base64() == image
    assert len(held) == len(image)
