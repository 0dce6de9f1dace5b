"""PR-107 section 6: StageSequencer.build_plan and the PipelineRunner smoke tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from stablenew.config_files import load_config_file
from stablenew.errors import InvalidStagePlanError
from stablenew.pipeline import PipelineRunner, StageExecution, StageExecutionPlan, StageSequencer, StageType

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "producer" / "examples"

# A tiny base64 payload; the config only checks that init images are non-trivial strings.
INIT_IMAGE_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # a 1x1 PNG

ADETAILER_MESSAGE = "ADetailer requires at least one generation stage (txt2img or img2img)."

# Written out here rather than imported, so a change to the order in src makes these tests fail.
CANONICAL_ORDER = [StageType.TXT2IMG, StageType.IMG2IMG, StageType.UPSCALE, StageType.ADETAILER]

METADATA_FIELDS = (
    "refiner_enabled",
    "refiner_model_name",
    "refiner_switch_step",
    "refiner_switch_at",
    "hires_enabled",
    "hires_upscaler_name",
    "hires_denoise_strength",
    "hires_scale_factor",
    "hires_second_pass_steps",
    "hires_resize_x",
    "hires_resize_y",
    "hires_sampler_name",
)


def metadata_of(stage: StageExecution) -> dict[str, Any]:
    return {name: getattr(stage, name) for name in METADATA_FIELDS}


NO_METADATA = dict.fromkeys(METADATA_FIELDS)
NO_METADATA |= {"refiner_enabled": False, "hires_enabled": False}

# Non-default refiner/hires options (defaults: hires upscaler "Latent", denoise 0.5, scale 2.0).
REFINER_AND_HIRES: dict[str, Any] = {
    "refiner_enabled": True,
    "refiner_model_name": "sd_xl_refiner_1.0.safetensors",
    "refiner_switch_step": 24,
    "hires_enabled": True,
    "hires_upscaler_name": "4x-UltraSharp",
    "hires_denoise_strength": 0.45,
    "hires_scale_factor": 1.5,
}


def flat_config(
    *,
    txt2img: bool = False,
    img2img: bool = False,
    upscale: bool = False,
    adetailer: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A flat PR-107 config; img2img gets an init image whenever it would be the first stage."""
    config: dict[str, Any] = {
        "txt2img_enabled": txt2img,
        "img2img_enabled": img2img,
        "upscale_enabled": upscale,
        "adetailer_enabled": adetailer,
        "txt2img_config": {"prompt": "a lighthouse at dusk", "steps": 30, "seed": 1234},
        "img2img_config": {"denoising_strength": 0.35},
        "upscale_config": {"upscaler": "R-ESRGAN 4x+", "upscaling_resize": 2.0},
        "adetailer_config": {"adetailer_model": "face_yolov8n.pt", "adetailer_confidence": 0.3},
    }
    if img2img and not txt2img:
        config["img2img_config"]["init_images"] = [INIT_IMAGE_B64]
    return config | extra


def full_chain_config(*, img2img: bool = False) -> dict[str, Any]:
    return flat_config(txt2img=True, img2img=img2img, upscale=True, adetailer=True, **REFINER_AND_HIRES)


def build_plan(config: dict[str, Any]) -> StageExecutionPlan:
    return StageSequencer().build_plan(config)


# --------------------------------------------------------------------------------------------
# StageSequencer
# --------------------------------------------------------------------------------------------


def test_txt2img_only_config_gives_one_txt2img_stage_without_metadata() -> None:
    plan = build_plan(flat_config(txt2img=True))

    assert plan.get_stage_types() == [StageType.TXT2IMG]
    assert metadata_of(plan.stages[0]) == NO_METADATA


@pytest.mark.parametrize("with_img2img", [False, True], ids=["without-img2img", "with-img2img"])
def test_full_chain_runs_in_canonical_order_with_adetailer_last(with_img2img: bool) -> None:
    plan = build_plan(full_chain_config(img2img=with_img2img))

    expected = [StageType.TXT2IMG, StageType.UPSCALE, StageType.ADETAILER]
    if with_img2img:
        expected.insert(1, StageType.IMG2IMG)
    assert plan.get_stage_types() == expected
    assert plan.stages[-1].stage_type is StageType.ADETAILER


def test_full_chain_attaches_refiner_and_hires_metadata_to_the_txt2img_stage() -> None:
    plan = build_plan(full_chain_config(img2img=True))

    txt2img = plan.stages[0]
    assert txt2img.stage_type is StageType.TXT2IMG
    assert txt2img.refiner_enabled is True
    assert txt2img.refiner_model_name == REFINER_AND_HIRES["refiner_model_name"]
    assert txt2img.refiner_switch_step == 24
    assert txt2img.refiner_switch_at == pytest.approx(24 / 30)
    assert txt2img.hires_enabled is True
    assert txt2img.hires_upscaler_name == REFINER_AND_HIRES["hires_upscaler_name"]
    assert txt2img.hires_denoise_strength == REFINER_AND_HIRES["hires_denoise_strength"]
    assert txt2img.hires_scale_factor == REFINER_AND_HIRES["hires_scale_factor"]


def test_full_chain_puts_no_refiner_or_hires_metadata_on_later_stages() -> None:
    plan = build_plan(full_chain_config(img2img=True))

    for stage in plan.stages[1:]:
        assert metadata_of(stage) == NO_METADATA, stage.stage_type


def test_img2img_with_upscale_and_no_txt2img_gives_img2img_then_upscale() -> None:
    plan = build_plan(flat_config(img2img=True, upscale=True))

    assert plan.get_stage_types() == [StageType.IMG2IMG, StageType.UPSCALE]
    assert plan.stages[0].config["init_images"] == [INIT_IMAGE_B64]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(flat_config(adetailer=True), id="flat"),
        pytest.param(flat_config(upscale=True, adetailer=True), id="flat-with-upscale"),
        pytest.param(
            {"pipeline": {"txt2img_enabled": False, "img2img_enabled": False, "adetailer_enabled": True}},
            id="nested",
        ),
    ],
)
def test_adetailer_without_generation_stage_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidStagePlanError) as excinfo:
        build_plan(config)

    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value) == ADETAILER_MESSAGE


def test_all_stages_off_gives_an_empty_plan() -> None:
    plan = build_plan(flat_config())

    assert plan.is_empty()
    assert plan.get_stage_types() == []


def _toggle_id(toggles: tuple[bool, bool, bool, bool]) -> str:
    names = [t.value for t, on in zip(CANONICAL_ORDER, toggles, strict=True) if on]
    return "+".join(names) or "none"


ALL_TOGGLES = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("toggles", ALL_TOGGLES, ids=[_toggle_id(t) for t in ALL_TOGGLES])
def test_every_toggle_combination_follows_the_canonical_order(
    toggles: tuple[bool, bool, bool, bool],
) -> None:
    # Given: a config with this combination of stages and refiner + hires turned on
    txt2img, img2img, upscale, adetailer = toggles
    config = flat_config(
        txt2img=txt2img, img2img=img2img, upscale=upscale, adetailer=adetailer, **REFINER_AND_HIRES
    )

    # Then: it is invalid exactly when ADetailer has no generation stage to work on
    if adetailer and not (txt2img or img2img):
        with pytest.raises(InvalidStagePlanError, match="ADetailer requires"):
            build_plan(config)
        return

    plan = build_plan(config)
    enabled = [t for t, on in zip(CANONICAL_ORDER, toggles, strict=True) if on]
    assert plan.get_stage_types() == enabled
    for stage in plan:
        on_txt2img = stage.stage_type is StageType.TXT2IMG
        assert stage.refiner_enabled is on_txt2img, stage.stage_type
        assert stage.hires_enabled is on_txt2img, stage.stage_type


EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.json"))


def test_the_example_configs_are_found() -> None:
    # Guards the round-trip tests below against silently parametrizing over nothing.
    assert {p.name for p in EXAMPLE_FILES} >= {"full_pipeline.json", "txt2img_only.json"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example_plan_round_trips_through_pydantic_json(path: Path) -> None:
    plan = build_plan(load_config_file(path))

    assert not plan.is_empty()
    assert StageExecutionPlan.model_validate_json(plan.model_dump_json()) == plan


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example_plan_round_trips_through_the_wire_format(path: Path) -> None:
    plan = build_plan(load_config_file(path))

    assert StageExecutionPlan.from_json(plan.to_json()) == plan


# --------------------------------------------------------------------------------------------
# PipelineRunner smoke tests (PR-107 section 6.2)
# --------------------------------------------------------------------------------------------


class StubExecutor:
    def __init__(self) -> None:
        self.calls: list[tuple[StageType, dict[str, Any]]] = []

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((stage_type, payload))
        # mimic output structure; include images list + meta
        return {"images": [f"{stage_type.value}_image"], "meta": {"stage": stage_type.value}}


class SeedReportingExecutor(StubExecutor):
    """Also reports the seed each stage resolved (as the WebUI does for seed -1)."""

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        result = super().run_stage(stage_type, payload)
        result["meta"]["seed"] = 1000 + len(self.calls)
        return result


def make_runner_with_stub() -> tuple[PipelineRunner, StubExecutor]:
    executor = StubExecutor()
    runner = PipelineRunner(executor=executor, sequencer=StageSequencer())
    return runner, executor


def test_runner_executes_the_full_plan_in_order() -> None:
    runner, executor = make_runner_with_stub()

    runner.run(full_chain_config())

    assert [t for t, _ in executor.calls] == [StageType.TXT2IMG, StageType.UPSCALE, StageType.ADETAILER]


def test_runner_result_images_come_from_the_last_stage() -> None:
    runner, _ = make_runner_with_stub()

    result = runner.run(full_chain_config(img2img=True))

    assert result["images"] == ["adetailer_image"]
    assert result["meta"]["stage"] == "adetailer"


def test_first_stage_receives_no_previous_output() -> None:
    runner, executor = make_runner_with_stub()

    runner.run(full_chain_config(img2img=True))

    _, first_payload = executor.calls[0]
    assert first_payload["input_images"] == []
    assert first_payload["input_from_previous"] is None
    assert first_payload["input_seed"] is None


def test_each_later_stage_receives_the_previous_stage_output() -> None:
    runner, executor = make_runner_with_stub()

    runner.run(full_chain_config(img2img=True))

    assert len(executor.calls) == 4
    for (previous, _), (stage, payload) in itertools.pairwise(executor.calls):
        assert payload["input_images"] == [f"{previous.value}_image"], stage
        assert payload["input_from_previous"] == previous.value, stage


def test_resolved_seed_of_a_stage_is_passed_to_the_next_stage() -> None:
    executor = SeedReportingExecutor()
    runner = PipelineRunner(executor=executor, sequencer=StageSequencer())

    runner.run(full_chain_config(img2img=True))

    # Stage N reported seed 1000 + (N + 1); stage N + 1 must receive exactly that.
    seeds_received = [payload["input_seed"] for _, payload in executor.calls]
    assert seeds_received == [None, 1001, 1002, 1003]


def test_refiner_and_hires_reach_only_the_txt2img_payload() -> None:
    runner, executor = make_runner_with_stub()

    runner.run(full_chain_config(img2img=True))

    by_stage = {stage: payload for stage, payload in executor.calls}
    assert by_stage[StageType.TXT2IMG]["refiner"]["model_name"] == REFINER_AND_HIRES["refiner_model_name"]
    assert by_stage[StageType.TXT2IMG]["hires"]["upscaler"] == REFINER_AND_HIRES["hires_upscaler_name"]
    for stage in (StageType.IMG2IMG, StageType.UPSCALE, StageType.ADETAILER):
        assert by_stage[stage]["refiner"] is None, stage
        assert by_stage[stage]["hires"] is None, stage


NESTED_CHAIN = {
    "pipeline": {"txt2img_enabled": True, "upscale_enabled": True, "adetailer_enabled": True},
    "txt2img": {"prompt": "a lighthouse at dusk", "steps": 20},
    "upscale": {"upscaler": "R-ESRGAN 4x+"},
    "adetailer": {"adetailer_model": "face_yolov8n.pt"},
}


@pytest.mark.parametrize(
    "make_input",
    [
        pytest.param(lambda: build_plan(flat_config(txt2img=True, upscale=True, adetailer=True)), id="plan"),
        pytest.param(lambda: flat_config(txt2img=True, upscale=True, adetailer=True), id="flat-config"),
        pytest.param(lambda: NESTED_CHAIN, id="nested-config"),
    ],
)
def test_runner_accepts_a_plan_or_a_config_of_either_shape(make_input: Any) -> None:
    runner, executor = make_runner_with_stub()

    result = runner.run(make_input())

    assert [t for t, _ in executor.calls] == [StageType.TXT2IMG, StageType.UPSCALE, StageType.ADETAILER]
    assert result["images"] == ["adetailer_image"]


@pytest.mark.parametrize(
    "empty_input",
    [pytest.param(StageExecutionPlan(), id="empty-plan"), pytest.param(flat_config(), id="all-off-config")],
)
def test_empty_plan_returns_no_images_without_calling_the_executor(empty_input: Any) -> None:
    runner, executor = make_runner_with_stub()

    result = runner.run(empty_input)

    assert result == {"images": [], "meta": {}}
    assert executor.calls == []


def test_runner_rejects_adetailer_without_generation_before_calling_the_executor() -> None:
    runner, executor = make_runner_with_stub()

    with pytest.raises(InvalidStagePlanError):
        runner.run(flat_config(upscale=True, adetailer=True))

    assert executor.calls == []


def test_the_adetailer_base_carries_the_generation_sampler_split_from_its_scheduler() -> None:
    plan = StageSequencer().build_plan(
        {
            "txt2img_enabled": True,
            "adetailer_enabled": True,
            "txt2img_config": {"sampler_name": "DPM++ 2M Karras"},
        }
    )

    base = plan.stages[-1].config["base"]
    assert (base["sampler_name"], base["scheduler"]) == ("DPM++ 2M", "Karras")
    assert StageExecutionPlan.from_json(plan.to_json()) == plan
