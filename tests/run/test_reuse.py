"""The stage key (which request fields change it, which do not), taking another job's files, and a run of
reused stages (only the last one's images are read, a changed file in the middle runs its stage)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tracemalloc
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from PIL import Image

from plan_configs import Configs
from stablenew.errors import Canceled, Requeued
from stablenew.pipeline import PipelineRunner, StageSequencer, StageType, build_stage_payload
from stablenew.run import (
    JobOutputs,
    JobState,
    ModelIdentity,
    OutputFile,
    ReusableStage,
    ReusingExecutor,
    RunRecorder,
    stage_key,
)
from stablenew.webui import ImageBytes, WebUIClient, WebUIExecutor

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
    target = JobOutputs(tmp_path, "target")
    taken = target.take_stage(0, "txt2img", files)

    source_bytes = (tmp_path / files[0].path).read_bytes()
    assert [t.path for t in taken] == ["target/00-txt2img-00.png"]
    assert (tmp_path / taken[0].path).read_bytes() == source_bytes
    assert [image.read().data for image in target.stored_images(taken)] == [source_bytes]
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


def test_a_file_that_cannot_be_linked_is_copied_and_hashed_as_it_is_copied(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an output root where hard links are refused (another file system, say)
    item = recorded(tmp_path)[0]

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    target = JobOutputs(tmp_path, "target")

    # When the stage is taken, its file is a copy with the same bytes
    taken = target.take_stage(0, "txt2img", [item])
    source = tmp_path / item.path
    assert (tmp_path / taken[0].path).read_bytes() == source.read_bytes()
    assert os.stat(tmp_path / taken[0].path).st_ino != os.stat(source).st_ino
    assert taken[0].bytes == source.stat().st_size

    # And a source whose bytes changed is refused as it is copied, leaving nothing behind
    source.write_bytes(source.read_bytes() + b"x")
    with pytest.raises(ValueError, match="changed"):
        JobOutputs(tmp_path, "other").take_stage(0, "txt2img", [item])
    assert list((tmp_path / "other").iterdir()) == []


# ------------------------------------------------------------------ a run of reused stages
class MemoryIndex:
    """A StageIndex kept in a dict (the worker's is in Redis), with each job's stages as recorded."""

    def __init__(self) -> None:
        self.records: dict[str, ReusableStage] = {}

    def find(self, key: str) -> ReusableStage | None:
        return self.records.get(key)

    def remember(self, stages: Mapping[str, ReusableStage]) -> None:
        self.records.update(stages)


class StandInWebUI:
    """Stands in for the WebUI behind the reusing executor: each call draws the image given for its
    stage, or a new one, and keeps the input images it was sent (as base64, as a request carries them)."""

    def __init__(self, images: Mapping[str, str] | None = None) -> None:
        self.images = dict(images or {})
        self.calls: list[tuple[str, list[str]]] = []

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        sent = [i.base64() if isinstance(i, ImageBytes) else i for i in payload["input_images"]]
        self.calls.append((stage_type.value, sent))
        image = self.images.get(stage_type.value) or png((len(self.calls) * 40 % 256, 90, 160))
        seed = payload.get("input_seed") or 7
        return {"images": [image], "meta": {"stage": stage_type.value, "seed": seed, "seeds": [seed]}}


def noise_png(width: int, height: int) -> str:
    """A PNG of random pixels, stored uncompressed: its file is as large as its pixels."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(
        buffer, format="PNG", compress_level=0
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_plan(
    root: Any,
    job_id: str,
    config: dict[str, Any],
    index: MemoryIndex,
    webui: StandInWebUI,
    *,
    persist: Callable[[JobState, bool], None] | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
    should_yield: Callable[[], bool] = lambda: False,
) -> JobState:
    """Run ``config`` as the worker does (PlanRun's wiring), with ``webui`` standing in for the WebUI."""
    plan = StageSequencer().build_plan(config)
    outputs = JobOutputs(root, job_id)
    recorder = RunRecorder(
        outputs,
        plan,
        index=index,
        start_on_run=True,
        should_cancel=should_cancel,
        should_yield=should_yield,
        **({} if persist is None else {"persist": persist}),
    )
    with WebUIClient("http://127.0.0.1:9") as client:  # builds the requests; nothing is sent
        executor = ReusingExecutor(webui, WebUIExecutor(client), index, outputs, on_run=recorder.stage_runs)
        try:
            PipelineRunner(executor, hooks=recorder).run(plan)
        except Canceled as exc:
            recorder.canceled(exc)
            return recorder.state
        except Requeued as exc:
            recorder.requeued(str(exc))
            return recorder.state
    recorder.finished()
    return recorder.state


def three_stages(upscale: float = 1.5) -> dict[str, Any]:
    config = Configs.three_stage()
    config["txt2img_config"]["model"] = "sd_xl_base_1.0.safetensors"  # so no WebUI is asked which is loaded
    config["upscale_config"]["upscaling_resize"] = upscale
    return config


def test_a_reused_stage_followed_by_a_reused_stage_is_only_hashed_never_read_into_memory(
    tmp_path: Any,
) -> None:
    # Given a job whose first stage left a large image (4 MB) and whose second stage a small one
    index = MemoryIndex()
    large = noise_png(1200, 1200)
    small = png((5, 6, 7))
    run_plan(tmp_path, "first", three_stages(), index, StandInWebUI({"txt2img": large, "img2img": small}))
    large_bytes = len(base64.b64decode(large))

    # When a job changing only the last stage runs
    webui = StandInWebUI()
    tracemalloc.start()
    try:
        state = run_plan(tmp_path, "second", three_stages(upscale=2.0), index, webui)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then the first two stages are the first job's files, and only the last one ran
    assert [st.status for st in state.stages] == ["reused", "reused", "finished"]
    sources = [st.reused_from.job_id if st.reused_from else None for st in state.stages]
    assert sources == ["first", "first", None]
    # fed with the second stage's image, as the file holds it
    assert webui.calls == [("upscale", [small])]
    # and the large image of the first stage was hashed a slice at a time, never held whole
    assert peak < large_bytes / 4, f"{peak} bytes held at the peak, the first stage's image is {large_bytes}"


def test_a_changed_file_in_the_middle_of_the_reused_stages_makes_that_stage_run(tmp_path: Any) -> None:
    # Given a job of three stages, whose second stage's file was changed after it ran
    index = MemoryIndex()
    first = run_plan(tmp_path, "first", three_stages(), index, StandInWebUI())
    changed = tmp_path / first.stages[1].outputs[0].path
    changed.write_bytes(changed.read_bytes() + b"\0")

    # When the same plan runs again
    webui = StandInWebUI()
    state = run_plan(tmp_path, "second", three_stages(), index, webui)

    # Then the first stage is reused, the second runs again, fed the first stage's image as recorded,
    # and the third runs on its new output
    assert [st.status for st in state.stages] == ["reused", "finished", "finished"]
    first_image = base64.b64encode((tmp_path / first.stages[0].outputs[0].path).read_bytes()).decode("ascii")
    assert webui.calls[0] == ("img2img", [first_image])
    assert [stage for stage, _ in webui.calls] == ["img2img", "upscale"]
    assert (tmp_path / state.stages[1].outputs[0].path).read_bytes() != changed.read_bytes()


class SavedViews:
    """A persist callback keeping each saved state's stage statuses; the index below checks with it
    that a stage is remembered only once a save holds it done."""

    def __init__(self) -> None:
        self.views: list[list[str]] = []

    def __call__(self, state: JobState, progress_only: bool) -> None:
        self.views.append([st.status for st in state.stages])


class CheckedIndex(MemoryIndex):
    def __init__(self, saved: SavedViews) -> None:
        super().__init__()
        self.saved = saved

    def remember(self, stages: Mapping[str, ReusableStage]) -> None:
        for stage in stages.values():
            assert self.saved.views[-1][stage.index] in ("finished", "reused"), (stage, self.saved.views)
        super().remember(stages)


def test_stages_taken_from_another_job_are_saved_with_the_start_of_the_stage_that_runs(tmp_path: Any) -> None:
    # Given a job of three stages that ran
    saved = SavedViews()
    index = CheckedIndex(saved)
    run_plan(tmp_path, "first", three_stages(), index, StandInWebUI(), persist=saved)
    remembered = dict(index.records)
    saved.views.clear()

    # When a job changing only the last stage runs
    run_plan(tmp_path, "second", three_stages(upscale=2.0), index, StandInWebUI(), persist=saved)

    # Then the two stages taken are saved once, with the start of the one that runs: no save shows a
    # stage as it was not, and each is remembered for reuse (under its key, now as the new job's) after it
    assert saved.views == [
        ["pending", "pending", "pending"],
        ["reused", "reused", "running"],
        ["reused", "reused", "finished"],
        ["reused", "reused", "finished"],
    ]
    assert [r.job_id for r in index.records.values() if r.index < 2] == ["second", "second"]
    assert set(remembered) < set(index.records)


def test_a_cancel_asked_while_stages_are_taken_stops_the_job_before_the_stage_that_would_run(
    tmp_path: Any,
) -> None:
    index = MemoryIndex()
    run_plan(tmp_path, "first", three_stages(), index, StandInWebUI())
    webui = StandInWebUI()

    state = run_plan(tmp_path, "second", three_stages(upscale=2.0), index, webui, should_cancel=lambda: True)

    assert webui.calls == []
    assert state.status == "canceled"
    assert [st.status for st in state.stages] == ["reused", "reused", "canceled"]
    assert (state.stages[2].attempts, state.stages[2].started_at) == (0, None)  # it never started
    assert state.error == "canceled before stage 2 (upscale)"


def test_a_hand_back_asked_while_stages_are_taken_leaves_the_stage_that_would_run_pending(
    tmp_path: Any,
) -> None:
    index = MemoryIndex()
    run_plan(tmp_path, "first", three_stages(), index, StandInWebUI())
    webui = StandInWebUI()

    state = run_plan(tmp_path, "second", three_stages(upscale=2.0), index, webui, should_yield=lambda: True)

    assert webui.calls == []
    assert state.status == "queued"
    assert [st.status for st in state.stages] == ["reused", "reused", "pending"]
    assert [st.attempts for st in state.stages] == [1, 1, 0]
    assert state.error == "its worker is stopping: handed back before stage 2 (upscale)"
