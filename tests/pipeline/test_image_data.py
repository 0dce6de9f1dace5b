"""The one check that a base64 string is an image that decodes to its end, with or without its bytes."""

from __future__ import annotations

import base64
import io

from PIL import Image

from stablenew.pipeline import checked_image_data, image_data_problem


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_whole_image_gives_its_bytes_and_no_problem() -> None:
    data = png()
    text = base64.b64encode(data).decode()

    assert checked_image_data(text, max_pixels=10_000) == (data, None)
    assert checked_image_data("data:image/png;base64," + text, max_pixels=10_000) == (data, None)
    assert image_data_problem(text, max_pixels=10_000) is None


def test_a_cut_or_too_large_image_gives_no_bytes_and_the_problem_image_data_problem_names() -> None:
    data = png()
    cut = base64.b64encode(data[: len(data) // 2 // 3 * 3]).decode()
    whole = base64.b64encode(data).decode()

    for text, max_pixels, words in [
        (cut, 10_000, "is not a complete image"),
        (whole, 100, "is a 40x30 image, over 100 px"),
        ("https://example.com/a.png", 10_000, "not a URL"),
    ]:
        data_found, problem = checked_image_data(text, max_pixels=max_pixels)
        assert data_found is None
        assert problem is not None and words in problem
        assert image_data_problem(text, max_pixels=max_pixels) == problem
