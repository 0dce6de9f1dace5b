"""The simulator's img2img answer echoes its request as A1111 does: without the init images.

A1111 (modules/api/api.py, ``img2imgapi``) sets ``init_images`` and ``mask`` to None in the
``parameters`` it echoes unless the request sets ``include_init_images``. Echoing them doubles
the size of every img2img and ADetailer answer, which the benchmarks would then measure.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import requests
from PIL import Image

from stablenew.simulator import SimulatedWebUI


@pytest.fixture
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI() as server:
        yield server


def _png_b64(side: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _img2img(sim: SimulatedWebUI, **extra: object) -> dict[str, object]:
    body = {"init_images": [_png_b64(64)], "prompt": "p", "steps": 2, **extra}
    response = requests.post(sim.url + "/sdapi/v1/img2img", json=body, timeout=10)
    response.raise_for_status()
    parameters = response.json()["parameters"]
    assert isinstance(parameters, dict)
    return parameters


def test_img2img_answer_echoes_parameters_without_the_init_images(sim):
    parameters = _img2img(sim)

    assert parameters["prompt"] == "p"
    assert parameters["init_images"] is None
    assert parameters.get("mask") is None


def test_img2img_answer_echoes_the_init_images_when_the_request_asks_for_them(sim):
    image = _png_b64(64)

    parameters = _img2img(sim, init_images=[image], include_init_images=True)

    assert parameters["init_images"] == [image]
