"""The stage key (which request fields change it, which do not) and taking another job's files."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import pytest
from PIL import Image

from plan_configs import Configs
from stablenew.pipeline import StageSequencer, StageType, build_stage_payload
from stablenew.run import JobOutputs, ModelIdentity, OutputFile, stage_key
from stablenew.webui import WebUIClient, WebUIExecutor

MODELS = ModelIdentity("sd_xl_base_1.0.safetensors [31e35c80fc]", "Automatic")


def png(colour: tuple[int, int, int] = (10, 20, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def requests_of(
    config: dict[str, Any], index: int, input_images: list[str] | None = None
) -> list[dict[str, Any]]:
    """The bodies the worker's executor would send for stage ``index`` of ``config`` (nothing is sent)."""
    plan = StageSequencer().build_plan(config)
    previous = {"images": input_images, "meta": {"seed": 7, "stage": "txt2img"}} if input_images else None
    payload = build_stage_payload(plan.stages[index], previous, index=index)
    with WebUIClient("http://127.0.0.1:9") as client:
        return WebUIExecutor(client).stage_requests(plan.stages[index].stage_type, payload)


def txt2img_key(models: ModelIdentity = MODELS, **changes: Any) -> str | None:
    return stage_key(StageType.TXT2IMG, requests_of(Configs.txt2img(**changes), 0), models)


def test_the_same_request_on_the_same_models_has_the_same_key() -> None:
    assert txt2img_key() == txt2img_key()
    assert txt2img_key() is not None


@pytest.mark.parametrize(
    "change", [{"prompt": "a blue bicycle"}, {"seed": 8}, {"steps": 5}, {"cfg_scale": 6.5}, {"width": 320}]
)
def test_a_request_field_that_changes_the_pixels_changes_the_key(change: dict[str, Any]) -> None:
    assert txt2img_key(**change) != txt2img_key()


def test_another_checkpoint_hash_or_vae_changes_the_key() -> None:
    assert txt2img_key(ModelIdentity("sd_xl_base_1.0.safetensors [0000000000]", "Automatic")) != txt2img_key()
    assert txt2img_key(ModelIdentity(MODELS.checkpoint, "sdxl_vae.safetensors")) != txt2img_key()


def test_send_and_save_flags_do_not_change_the_key() -> None:
    body = requests_of(Configs.txt2img(), 0)[0]
    flags = {**body, "send_images": False, "save_images": True, "do_not_save_grid": True}
    assert stage_key(StageType.TXT2IMG, [flags], MODELS) == stage_key(StageType.TXT2IMG, [body], MODELS)


def test_a_seed_left_to_chance_has_no_key() -> None:
    assert txt2img_key(seed=-1) is None


def test_the_input_image_counts_by_its_bytes_not_its_spelling() -> None:
    config = Configs.two_stage()
    image = png()
    as_data_url = "data:image/png;base64," + image
    plain = requests_of(config, 1, [image])
    spelled = [{**plain[0], "init_images": [as_data_url]}]
    other = requests_of(config, 1, [png((200, 0, 0))])

    assert stage_key(StageType.IMG2IMG, plain, MODELS) == stage_key(StageType.IMG2IMG, spelled, MODELS)
    assert stage_key(StageType.IMG2IMG, plain, MODELS) != stage_key(StageType.IMG2IMG, other, MODELS)


def test_an_upscale_has_no_seed_and_still_has_a_key() -> None:
    bodies = requests_of(Configs.three_stage(), 2, [png()])
    assert "seed" not in bodies[0]
    assert stage_key(StageType.UPSCALE, bodies, ModelIdentity(None, None)) is not None


def test_the_adetailer_denoise_changes_the_adetailer_key_only() -> None:
    config = Configs.four_stage()
    changed = Configs.four_stage()
    changed["adetailer_config"]["adetailer_denoise"] = 0.55
    image = [png()]

    assert stage_key(StageType.IMG2IMG, requests_of(config, 1, image), MODELS) == stage_key(
        StageType.IMG2IMG, requests_of(changed, 1, image), MODELS
    )
    assert stage_key(StageType.ADETAILER, requests_of(config, 3, image), MODELS) != stage_key(
        StageType.ADETAILER, requests_of(changed, 3, image), MODELS
    )


# ------------------------------------------------------------------ taking another job's files
def recorded(tmp_path: Any) -> list[OutputFile]:
    return JobOutputs(tmp_path, "source").write_stage(0, "txt2img", [png()], [7])


def test_take_stage_gives_the_new_job_the_same_bytes_under_its_own_name(tmp_path: Any) -> None:
    files = recorded(tmp_path)
    taken, images = JobOutputs(tmp_path, "target").take_stage(0, "txt2img", files)

    source_bytes = (tmp_path / files[0].path).read_bytes()
    assert [t.path for t in taken] == ["target/00-txt2img-00.png"]
    assert (tmp_path / taken[0].path).read_bytes() == source_bytes
    assert images == [base64.b64encode(source_bytes).decode("ascii")]
    assert taken[0].sha256 == files[0].sha256
    assert os.stat(tmp_path / taken[0].path).st_ino == os.stat(tmp_path / files[0].path).st_ino  # a hard link


@pytest.mark.parametrize(
    "path", ["../outside/00-txt2img-00.png", "/etc/passwd", "source/manifest.json", "a/b/c.png"]
)
def test_a_recorded_path_that_we_could_not_have_written_is_never_read(tmp_path: Any, path: str) -> None:
    item = recorded(tmp_path)[0]
    forged = OutputFile(path, item.sha256, None, None, None, 0)

    with pytest.raises(ValueError, match="not a file of this output root"):
        JobOutputs(tmp_path, "target").take_stage(0, "txt2img", [forged])


def test_a_symlinked_source_file_or_a_changed_one_is_not_taken_and_nothing_is_left(tmp_path: Any) -> None:
    item = recorded(tmp_path)[0]
    real = tmp_path / item.path
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(real.read_bytes())
    outputs = JobOutputs(tmp_path, "target")

    real.unlink()
    real.symlink_to(elsewhere)
    with pytest.raises(ValueError):
        outputs.take_stage(0, "txt2img", [item])

    real.unlink()
    real.write_bytes(elsewhere.read_bytes() + b"x")
    with pytest.raises(ValueError, match="changed"):
        outputs.take_stage(0, "txt2img", [item])
    assert hashlib.sha256(real.read_bytes()).hexdigest() != item.sha256
    assert list((tmp_path / "target").iterdir()) == []
