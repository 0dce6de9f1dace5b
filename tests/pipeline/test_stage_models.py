"""StageType, StageExecutionPlan helpers, and from_json: a plan from the queue is never trusted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stablenew.errors import ConfigError, InvalidStagePlanError, PlanVersionError
from stablenew.pipeline import StageExecution, StageExecutionPlan, StageType


def stage(stage_type: StageType, **fields: Any) -> StageExecution:
    if stage_type is StageType.ADETAILER:
        fields.setdefault("adetailer_enabled", True)
    return StageExecution(stage_type=stage_type, config_key=stage_type.value, **fields)


def plan_of(*types: StageType) -> StageExecutionPlan:
    return StageExecutionPlan(stages=[stage(t) for t in types])


FULL_PLAN_TYPES = (StageType.TXT2IMG, StageType.IMG2IMG, StageType.UPSCALE, StageType.ADETAILER)


def full_plan_dict() -> dict[str, Any]:
    """A valid four-stage plan as it travels on the wire, ready to be tampered with."""
    plan = StageExecutionPlan(
        stages=[
            stage(StageType.TXT2IMG, config={"prompt": "a lighthouse", "steps": 30}),
            stage(StageType.IMG2IMG, config={"denoising_strength": 0.35}),
            stage(StageType.UPSCALE, config={"upscaler": "R-ESRGAN 4x+"}),
            stage(StageType.ADETAILER, config={"face": {"model": "face_yolov8n.pt"}}),
        ]
    )
    data: dict[str, Any] = json.loads(plan.to_json())
    return data


def from_dict(data: dict[str, Any]) -> StageExecutionPlan:
    return StageExecutionPlan.from_json(json.dumps(data))


# --------------------------------------------------------------------------------------------
# StageType and plan helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        (StageType.TXT2IMG, "txt2img"),
        (StageType.IMG2IMG, "img2img"),
        (StageType.UPSCALE, "upscale"),
        (StageType.ADETAILER, "adetailer"),
    ],
)
def test_stage_type_values_are_the_stage_names(member: StageType, value: str) -> None:
    assert member.value == value
    assert member == value  # a str enum: usable wherever the name is expected
    assert StageType(value) is member


def test_stage_types_are_the_four_stages_in_canonical_order() -> None:
    assert list(StageType) == [StageType.TXT2IMG, StageType.IMG2IMG, StageType.UPSCALE, StageType.ADETAILER]


def test_refiner_and_hires_are_not_stage_types() -> None:
    for name in ("refiner", "hires"):
        with pytest.raises(ValueError):
            StageType(name)


def test_a_plan_without_stages_is_empty() -> None:
    plan = StageExecutionPlan()

    assert plan.is_empty()
    assert len(plan) == 0
    assert not plan.has_generation_stage()
    assert list(plan) == []


@pytest.mark.parametrize(
    ("types", "has_generation"),
    [
        pytest.param((StageType.TXT2IMG,), True, id="txt2img"),
        pytest.param((StageType.IMG2IMG, StageType.UPSCALE), True, id="img2img+upscale"),
        pytest.param((StageType.UPSCALE,), False, id="upscale-only"),
        pytest.param(FULL_PLAN_TYPES, True, id="full"),
    ],
)
def test_plan_helpers_describe_its_stages(types: tuple[StageType, ...], has_generation: bool) -> None:
    plan = plan_of(*types)

    assert not plan.is_empty()
    assert plan.has_generation_stage() is has_generation
    assert plan.get_stage_types() == list(types)
    assert len(plan) == len(types)
    assert [s.stage_type for s in plan] == list(types)


def test_a_plan_cannot_be_built_with_adetailer_and_no_generation_stage() -> None:
    # Built in code, pydantic wraps the InvalidStagePlanError; both are ValueErrors with the rule's text.
    with pytest.raises(ValueError, match="ADetailer requires at least one generation stage"):
        plan_of(StageType.UPSCALE, StageType.ADETAILER)


# --------------------------------------------------------------------------------------------
# from_json: versions
# --------------------------------------------------------------------------------------------


def test_from_json_accepts_a_plan_it_wrote() -> None:
    data = full_plan_dict()

    plan = from_dict(data)

    assert plan.get_stage_types() == list(FULL_PLAN_TYPES)
    assert plan.stages[0].config["prompt"] == "a lighthouse"


@pytest.mark.parametrize(
    "encode", [json.dumps, lambda d: json.dumps(d).encode(), lambda d: d], ids=["str", "bytes", "dict"]
)
def test_from_json_accepts_text_bytes_or_a_dict(encode: Any) -> None:
    data = full_plan_dict()

    assert StageExecutionPlan.from_json(encode(data)) == from_dict(data)


@pytest.mark.parametrize("version", [2, 0, "1", True])
def test_from_json_refuses_an_unknown_schema_version(version: Any) -> None:
    data = full_plan_dict() | {"schema_version": version}

    with pytest.raises(PlanVersionError) as excinfo:
        from_dict(data)

    assert excinfo.value.found == version
    assert repr(version) in str(excinfo.value)


def test_from_json_refuses_a_plan_without_schema_version() -> None:
    data = full_plan_dict()
    del data["schema_version"]

    with pytest.raises(PlanVersionError):
        from_dict(data)


# --------------------------------------------------------------------------------------------
# from_json: malformed or tampered plans
# --------------------------------------------------------------------------------------------


def test_from_json_refuses_malformed_json() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        StageExecutionPlan.from_json('{"schema_version": 1, "stages": [')


def test_from_json_refuses_a_json_list() -> None:
    with pytest.raises(ConfigError, match="must be a JSON object"):
        StageExecutionPlan.from_json(json.dumps([full_plan_dict()]))


def test_from_json_refuses_an_unknown_top_level_field() -> None:
    data = full_plan_dict() | {"run_after": "rm -rf /"}

    with pytest.raises(ConfigError, match="run_after"):
        from_dict(data)


def test_from_json_refuses_an_unknown_stage_field() -> None:
    data = full_plan_dict()
    data["stages"][0]["script_name"] = "x"

    with pytest.raises(ConfigError, match="script_name"):
        from_dict(data)


def test_from_json_refuses_stages_out_of_canonical_order() -> None:
    data = full_plan_dict()
    data["stages"] = [data["stages"][2], data["stages"][0]]  # upscale before txt2img

    with pytest.raises(InvalidStagePlanError, match="canonical order"):
        from_dict(data)


def test_from_json_refuses_a_duplicate_stage() -> None:
    data = full_plan_dict()
    data["stages"] = [data["stages"][0], data["stages"][0]]

    with pytest.raises(InvalidStagePlanError, match="twice"):
        from_dict(data)


def test_from_json_refuses_an_adetailer_only_plan() -> None:
    data = full_plan_dict()
    data["stages"] = [data["stages"][3]]

    with pytest.raises(InvalidStagePlanError) as excinfo:
        from_dict(data)

    assert str(excinfo.value) == "ADetailer requires at least one generation stage (txt2img or img2img)."


def test_from_json_refuses_hires_metadata_on_an_upscale_stage() -> None:
    data = full_plan_dict()
    data["stages"][2] |= {
        "hires_enabled": True,
        "hires_upscaler_name": "Latent",
        "hires_denoise_strength": 0.5,
    }

    with pytest.raises(ConfigError) as excinfo:
        from_dict(data)

    assert "stages.2" in str(excinfo.value)
    assert "txt2img stage only" in str(excinfo.value)


def test_from_json_refuses_refiner_metadata_on_an_img2img_stage() -> None:
    data = full_plan_dict()
    data["stages"][1] |= {"refiner_enabled": True, "refiner_model_name": "r", "refiner_switch_at": 0.8}

    with pytest.raises(ConfigError, match=r"stages\.1"):
        from_dict(data)


@pytest.mark.parametrize(
    ("index", "key", "value"),
    [
        pytest.param(0, "steps", 0, id="txt2img-steps"),
        pytest.param(0, "width", 1001, id="txt2img-width"),
        pytest.param(1, "denoising_strength", 1.5, id="img2img-denoise"),
        pytest.param(2, "upscaling_resize", 9, id="upscale-factor"),
    ],
)
def test_from_json_refuses_a_stage_config_outside_the_limits(index: int, key: str, value: Any) -> None:
    data = full_plan_dict()
    data["stages"][index]["config"][key] = value

    with pytest.raises(ConfigError) as excinfo:
        from_dict(data)

    assert f"stages.{index}.config.{key}" in str(excinfo.value)
    assert f"(got {value!r})" in str(excinfo.value)


def test_from_json_refuses_an_injected_stage_type() -> None:
    # Given: a plan edited on its way through the queue to name something that is not a stage
    text = StageExecutionPlan.from_json(json.dumps(full_plan_dict())).to_json()
    tampered = text.replace('"stage_type":"txt2img"', '"stage_type":"os.system"', 1)
    assert tampered != text

    # Then: it is refused, naming the field
    with pytest.raises(ConfigError) as excinfo:
        StageExecutionPlan.from_json(tampered)

    assert "stages.0.stage_type" in str(excinfo.value)
    assert "os.system" in str(excinfo.value)


def test_from_json_refuses_a_config_key_that_does_not_match_the_stage() -> None:
    data = full_plan_dict()
    data["stages"][0]["config_key"] = "os.system"

    with pytest.raises(ConfigError, match="config_key"):
        from_dict(data)


# --------------------------------------------------------------------------------------------
# from_json: limits a queue-injected plan cannot get around
# --------------------------------------------------------------------------------------------


def adetailer_base() -> dict[str, Any]:
    """The ADetailer stage's ``base`` as the sequencer writes it."""
    return {
        "prompt": "a lighthouse",
        "negative_prompt": "",
        "model": None,
        "vae": None,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "steps": 30,
        "cfg_scale": 7.0,
        "clip_skip": None,
        "seed": -1,
    }


def test_from_json_accepts_the_adetailer_base_the_sequencer_writes() -> None:
    data = full_plan_dict()
    data["stages"][3]["config"]["base"] = adetailer_base()

    assert from_dict(data).stages[3].config["base"]["steps"] == 30


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param("steps", 100_000, "less than or equal to 150", id="steps"),
        pytest.param("cfg_scale", 300.0, "less than or equal to 30", id="cfg"),
        pytest.param("prompt", "x" * 10_001, "at most 10000 characters", id="prompt"),
        pytest.param("negative_prompt", "x" * 10_001, "at most 10000 characters", id="negative-prompt"),
        pytest.param("clip_skip", 40, "less than or equal to 12", id="clip-skip"),
        pytest.param("batch_size", 64, "Extra inputs are not permitted", id="unknown-key"),
    ],
)
def test_from_json_refuses_an_adetailer_base_outside_the_limits(key: str, value: Any, message: str) -> None:
    # Given: a plan whose ADetailer main pass was edited on its way through the queue
    data = full_plan_dict()
    data["stages"][3]["config"]["base"] = adetailer_base() | {key: value}

    with pytest.raises(ConfigError) as excinfo:
        from_dict(data)

    assert f"stages.3.config.base.{key}" in str(excinfo.value)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        pytest.param(
            {
                0: {
                    "hires_enabled": True,
                    "hires_upscaler_name": "Latent",
                    "hires_denoise_strength": 0.5,
                    "hires_scale_factor": 8.0,
                    "config": {"width": 8192, "height": 1024},
                }
            },
            "stages.0.hires_scale_factor",
            id="hires-scale",
        ),
        pytest.param(
            {0: {"config": {"width": 4096, "height": 4096}}, 2: {"config": {"upscaling_resize": 8}}},
            "stages.2.config.upscaling_resize",
            id="upscale-factor",
        ),
        pytest.param(
            {2: {"config": {"upscaler": "x", "resize_width": 16384, "resize_height": 16384}}},
            "stages.2.config.resize_width",
            id="upscale-target",
        ),
        pytest.param(
            {0: {"config": {"batch_size": 4, "n_iter": 8}}},
            "stages.0.config.batch_size",
            id="batch",
        ),
        pytest.param(
            {0: {"config": {"batch_size": 4}}, 1: {"config": {"denoising_strength": 0.3, "n_iter": 8}}},
            "stages.1.config.batch_size",
            id="images-across-stages",
        ),
    ],
)
def test_from_json_refuses_outputs_over_the_config_limits(
    changes: dict[int, dict[str, Any]], path: str
) -> None:
    data = full_plan_dict()
    for index, fields in changes.items():
        config = fields.pop("config", None)
        data["stages"][index] |= fields
        if config is not None:
            data["stages"][index]["config"] |= config

    with pytest.raises(ConfigError) as excinfo:
        from_dict(data)

    assert [p.path for p in excinfo.value.problems] == [path]
    assert "over" in str(excinfo.value)


@pytest.mark.parametrize(
    ("index", "config", "path", "message"),
    [
        pytest.param(1, {"width": 768}, "stages.1.config.width", "without height", id="img2img-width-only"),
        pytest.param(
            1, {"mask_mode": "inpaint"}, "stages.1.config.mask_mode", "inpainting is not supported", id="mask"
        ),
        pytest.param(
            2, {"upscale_mode": "img2img"}, "stages.2.config.upscale_mode", "not supported", id="mode"
        ),
        pytest.param(
            0,
            {"sampler_name": "DPM++ 2M Karras", "scheduler": "Exponential"},
            "stages.0.config.scheduler",
            "disagrees",
            id="sampler-scheduler",
        ),
    ],
)
def test_from_json_refuses_what_the_config_refuses_naming_the_field(
    index: int, config: dict[str, Any], path: str, message: str
) -> None:
    data = full_plan_dict()
    data["stages"][index]["config"] |= config

    with pytest.raises(ConfigError) as excinfo:
        from_dict(data)

    (problem,) = excinfo.value.problems
    assert problem.path == path
    assert message in problem.message


def test_from_json_refuses_an_overlong_name_in_the_stage_metadata() -> None:
    data = full_plan_dict()
    data["stages"][0] |= {"refiner_enabled": True, "refiner_model_name": "r" * 1000, "refiner_switch_at": 0.8}

    with pytest.raises(ConfigError, match=r"stages\.0\.refiner_model_name"):
        from_dict(data)
