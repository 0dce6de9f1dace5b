"""answer_limit: how large a generation answer may be, from the images the request asks for."""

from __future__ import annotations

import base64
import io

from PIL import Image

from stablenew.webui import ANSWER_FLOOR_BYTES, answer_limit


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_small_request_gets_the_floor() -> None:
    assert (
        answer_limit({"width": 512, "height": 512, "batch_size": 1, "n_iter": 1}, None) == ANSWER_FLOOR_BYTES
    )


def test_the_limit_grows_with_size_images_and_hires_scale() -> None:
    body = {"width": 1024, "height": 1024, "batch_size": 4, "n_iter": 2}
    plain = answer_limit(body, None)
    hires = answer_limit({**body, "enable_hr": True, "hr_scale": 2}, None)

    assert plain >= 1024 * 1024 * 4 * 8 * 4 // 3  # 8 images of 1024x1024, as base64
    assert hires >= 2048 * 2048 * 4 * 8 * 4 // 3 > plain


def test_an_upscale_is_judged_by_its_input_image_and_factor() -> None:
    image = png_b64(2048, 2048)

    by_factor = answer_limit({"resize_mode": 0, "upscaling_resize": 4}, image)
    by_size = answer_limit({"resize_mode": 1, "upscaling_resize_w": 8192, "upscaling_resize_h": 8192}, image)

    assert by_factor == by_size >= 8192 * 8192 * 4 * 4 // 3
