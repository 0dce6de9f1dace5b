"""load_config_file: reading configs from disk and embedding init images at submit time."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stablenew.config_files import load_config_file
from stablenew.errors import ConfigError
from stablenew.pipeline import parse_config

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "producer" / "examples"


def _image_bytes(fmt: str) -> bytes:
    """A small, complete image of each accepted format (an init image must decode to its end)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 40, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG_BYTES, JPEG_BYTES, WEBP_BYTES = (_image_bytes(fmt) for fmt in ("PNG", "JPEG", "WEBP"))


def write_config(directory: Path, config: dict[str, Any], name: str = "config.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load_config_file(path)
    return excinfo.value


def test_example_init_image_is_embedded_as_base64_of_the_file_bytes() -> None:
    raw = load_config_file(EXAMPLES_DIR / "img2img_upscale.json")

    expected = base64.b64encode((EXAMPLES_DIR / "input_512.png").read_bytes()).decode("ascii")
    assert raw["img2img_config"]["init_images"] == [expected]
    assert "init_image_path" not in raw["img2img_config"]


@pytest.mark.parametrize("data", [PNG_BYTES, JPEG_BYTES, WEBP_BYTES], ids=["png", "jpeg", "webp"])
def test_init_image_bytes_round_trip_exactly(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "in.img").write_bytes(data)
    path = write_config(tmp_path, {"img2img_enabled": True, "img2img_config": {"init_image_path": "in.img"}})

    raw = load_config_file(path)

    (embedded,) = raw["img2img_config"]["init_images"]
    assert base64.b64decode(embedded) == data


def test_init_image_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the config and its image in one directory, and the process running from another
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "in.png").write_bytes(PNG_BYTES)
    path = write_config(tmp_path / "configs", {"img2img_config": {"init_image_path": "in.png"}})
    monkeypatch.chdir(tmp_path)

    raw = load_config_file(path)

    assert base64.b64decode(raw["img2img_config"]["init_images"][0]) == PNG_BYTES


def test_embedded_init_image_is_added_after_existing_init_images(tmp_path: Path) -> None:
    existing = base64.b64encode(JPEG_BYTES).decode("ascii")
    (tmp_path / "in.png").write_bytes(PNG_BYTES)
    path = write_config(
        tmp_path, {"img2img_config": {"init_images": [existing], "init_image_path": "in.png"}}
    )

    raw = load_config_file(path)

    assert [base64.b64decode(i) for i in raw["img2img_config"]["init_images"]] == [JPEG_BYTES, PNG_BYTES]


@pytest.mark.parametrize(
    "make_config",
    [
        pytest.param(lambda p: {"img2img": {"init_image_path": p}}, id="nested"),
        pytest.param(
            lambda p: {
                "schema": "stablenew.config.v2.6",
                "execution_config": {"img2img": {"init_image_path": p}},
            },
            id="wrapper",
        ),
    ],
)
def test_init_image_is_embedded_in_every_shape(tmp_path: Path, make_config: Any) -> None:
    (tmp_path / "in.png").write_bytes(PNG_BYTES)

    raw = load_config_file(write_config(tmp_path, make_config("in.png")))

    cfg = parse_config(raw)
    assert [base64.b64decode(i) for i in cfg.img2img.init_images] == [PNG_BYTES]


def test_loaded_img2img_example_passes_validation_as_a_first_stage() -> None:
    cfg = parse_config(load_config_file(EXAMPLES_DIR / "img2img_upscale.json"))

    assert cfg.img2img_enabled and not cfg.txt2img_enabled
    assert len(cfg.img2img.init_images) == 1


def test_missing_init_image_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"img2img_config": {"init_image_path": "nope.png"}})

    err = load_error(path)

    assert "img2img_config.init_image_path" in str(err)
    assert "nope.png" in str(err)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello, this is plain text and not an image", id="text"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32), id="wav-riff"),
        pytest.param(b"", id="empty"),
    ],
)
def test_init_image_that_is_not_an_image_is_an_error_naming_the_field(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "notes.bin").write_bytes(data)
    path = write_config(tmp_path, {"img2img": {"init_image_path": "notes.bin"}})

    err = load_error(path)

    assert "img2img.init_image_path" in str(err)
    assert "notes.bin" in str(err)


@pytest.mark.parametrize("value", ["", 42, None])
def test_init_image_path_that_is_not_a_path_is_an_error(tmp_path: Path, value: Any) -> None:
    path = write_config(tmp_path, {"img2img_config": {"init_image_path": value}})

    if value is None:
        # null means "no image": nothing to embed, and no init_images appear from nowhere
        assert "init_images" not in load_config_file(path)["img2img_config"]
        return
    err = load_error(path)

    assert "img2img_config.init_image_path" in str(err)


def test_invalid_json_is_an_error_with_line_and_column(tmp_path: Path) -> None:
    # Given: a stray comma before "}" on the third line
    bad_line = '  "txt2img_config": {"steps": 30,}'
    path = tmp_path / "broken.json"
    path.write_text(f'{{\n  "txt2img_enabled": true,\n{bad_line}\n}}\n', encoding="utf-8")

    err = load_error(path)

    # Then: the parser stops at the "}" where it expected the next key
    assert "line 3" in str(err)
    assert f"column {bad_line.index('}') + 1}" in str(err)
    assert "broken.json" in str(err)


@pytest.mark.parametrize("depth", [0, 4], ids=["shallow", "deep-directory"])
def test_missing_config_file_is_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    # Given: a config path that is short, or sits several directories deep (as real projects do)
    monkeypatch.chdir(tmp_path)
    path = Path(*[f"pipeline_configs_{i}" for i in range(depth)], "no_such_config.json")

    err = load_error(path)

    assert "no_such_config.json" in str(err)


def test_a_config_file_that_is_not_a_json_object_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")

    err = load_error(path)

    assert "must be a JSON object" in str(err)
