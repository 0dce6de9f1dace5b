"""parse_config: the three config shapes, StableNew's aliases, and validation messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from stablenew.config_files import load_config_file
from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import PipelineConfig, parse_config

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "producer" / "examples"
INIT_IMAGE_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # a 1x1 PNG
WRAPPER_SCHEMA = "stablenew.config.v2.6"


def parse_error(raw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw)
    return excinfo.value


def problem_at(err: ConfigError, path: str) -> FieldProblem:
    matches = [p for p in err.problems if p.path == path]
    assert matches, f"no problem at {path!r}; got {[str(p) for p in err.problems]}"
    return matches[0]


def assert_reports(err: ConfigError, path: str, value: Any) -> None:
    """The user-visible message names ``path`` as written and shows the bad value."""
    line = str(problem_at(err, path))
    assert line.startswith(f"{path}: ")
    assert f"(got {value!r})" in line
    assert line in str(err)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

FLAT = {
    "txt2img_enabled": True,
    "upscale_enabled": True,
    "txt2img_config": {"prompt": "a lighthouse", "steps": 20, "width": 832, "height": 1216},
    "upscale_config": {"upscaler": "4x-UltraSharp", "upscaling_resize": 3.0},
}
NESTED = {
    "pipeline": {"txt2img_enabled": True, "img2img_enabled": False, "upscale_enabled": True},
    "txt2img": {"prompt": "a lighthouse", "steps": 20, "width": 832, "height": 1216},
    "upscale": {"upscaler": "4x-UltraSharp", "upscaling_resize": 3.0},
}


def test_flat_config_is_read_into_the_canonical_fields() -> None:
    cfg = parse_config(FLAT)

    assert (cfg.txt2img_enabled, cfg.img2img_enabled, cfg.upscale_enabled, cfg.adetailer_enabled) == (
        True,
        False,
        True,
        False,
    )
    assert (cfg.txt2img.prompt, cfg.txt2img.steps, cfg.txt2img.width, cfg.txt2img.height) == (
        "a lighthouse",
        20,
        832,
        1216,
    )
    assert (cfg.upscale.upscaler, cfg.upscale.upscaling_resize) == ("4x-UltraSharp", 3.0)


def test_nested_preset_means_the_same_as_the_flat_config() -> None:
    assert parse_config(NESTED) == parse_config(FLAT)


def test_wrapped_preset_is_unwrapped_from_execution_config() -> None:
    wrapped = {"schema": WRAPPER_SCHEMA, "intent_config": {"run_mode": "queue"}, "execution_config": NESTED}

    assert parse_config(wrapped) == parse_config(NESTED)


def test_unknown_wrapper_schema_is_an_error_naming_it() -> None:
    err = parse_error({"schema": "stablenew.config.v9", "execution_config": NESTED})

    assert_reports(err, "schema", "stablenew.config.v9")


def test_stablenew_preset_example_keeps_its_hires_refiner_and_adetailer_settings() -> None:
    # Given: StableNew's layered preset, as shipped in producer/examples
    cfg = parse_config(load_config_file(EXAMPLES_DIR / "stablenew_preset.json"))

    # Then: every setting the preset states arrives in its canonical field
    assert (cfg.txt2img_enabled, cfg.img2img_enabled, cfg.upscale_enabled, cfg.adetailer_enabled) == (
        True,
        False,
        True,
        True,
    )
    assert cfg.txt2img.sampler_name == "DPM++ 2M SDE"
    assert cfg.txt2img.vae is None  # "Automatic" means "leave the WebUI's VAE alone"
    assert (cfg.hires.enabled, cfg.hires.scale, cfg.hires.upscaler) == (True, 1.5, "R-ESRGAN 4x+")
    assert (cfg.hires.steps, cfg.hires.denoise, cfg.hires.sampler_name) == (12, 0.35, None)
    assert cfg.refiner.enabled is True
    assert cfg.refiner.model_name == "sd_xl_refiner_1.0.safetensors [7440042bbd]"
    assert cfg.refiner.switch_at == 0.8
    assert cfg.upscale.upscaler == "4x-UltraSharp"
    assert cfg.adetailer.face.confidence == 0.35
    assert cfg.adetailer.hands is not None
    assert cfg.adetailer.face.ad_args["ad_mask_k"] == 2


def test_flat_config_stages_are_off_unless_enabled() -> None:
    cfg = parse_config({"txt2img_config": {"steps": 20}})

    assert not (cfg.txt2img_enabled or cfg.img2img_enabled or cfg.upscale_enabled or cfg.adetailer_enabled)


def test_nested_preset_enables_txt2img_unless_something_says_otherwise() -> None:
    cfg = parse_config({"upscale": {"enabled": True}})

    assert cfg.txt2img_enabled is True
    assert cfg.upscale_enabled is True


@pytest.mark.parametrize(
    ("raw", "toggle", "enabled"),
    [
        pytest.param(
            {"pipeline": {"txt2img_enabled": False}}, "txt2img_enabled", False, id="pipeline-section"
        ),
        pytest.param({"txt2img": {"enabled": False}}, "txt2img_enabled", False, id="section-enabled"),
        pytest.param(
            {"txt2img": {}, "adetailer": {"enabled": True}}, "adetailer_enabled", True, id="adetailer"
        ),
    ],
)
def test_nested_preset_toggles_come_from_pipeline_or_the_section(
    raw: dict[str, Any], toggle: str, enabled: bool
) -> None:
    cfg = parse_config(raw)

    assert getattr(cfg, toggle) is enabled


# --------------------------------------------------------------------------------------------
# Aliases
# --------------------------------------------------------------------------------------------

GENERATION_ALIASES: list[tuple[str, tuple[str, ...], str]] = [
    ("model", ("model", "model_name", "sd_model"), "sd_xl_base_1.0.safetensors"),
    ("vae", ("vae", "vae_name", "sd_vae"), "sdxl_vae.safetensors"),
    ("sampler_name", ("sampler_name", "sampler"), "Euler a"),
    ("scheduler", ("scheduler", "scheduler_name"), "Karras"),
]


@pytest.mark.parametrize(
    ("field", "alias", "value", "stage", "shape"),
    [
        pytest.param(field, alias, value, stage, shape, id=f"{shape}-{stage}-{alias}")
        for field, aliases, value in GENERATION_ALIASES
        for alias in aliases
        for stage in ("txt2img", "img2img")
        for shape in ("flat", "nested")
    ],
)
def test_generation_alias_sets_the_canonical_field(
    field: str, alias: str, value: str, stage: str, shape: str
) -> None:
    section = {alias: value}
    raw = {"txt2img_enabled": True, f"{stage}_config": section} if shape == "flat" else {stage: section}

    cfg = parse_config(raw)

    assert getattr(getattr(cfg, stage), field) == value


def place_txt2img_metadata(location: str, keys: dict[str, Any]) -> dict[str, Any]:
    """Put hires/refiner keys where StableNew configs carry them; txt2img uses 30 steps."""
    txt2img = {"steps": 30}
    if location == "flat-top":
        return {"txt2img_enabled": True, "txt2img_config": txt2img, **keys}
    if location == "flat-txt2img_config":
        return {"txt2img_enabled": True, "txt2img_config": {**txt2img, **keys}}
    assert location == "nested-txt2img"
    return {"txt2img": {**txt2img, **keys}}


METADATA_LOCATIONS = ("flat-top", "flat-txt2img_config", "nested-txt2img")

HIRES_ALIASES: list[tuple[str, tuple[str, ...], Any]] = [
    ("enabled", ("hires_enabled", "enable_hr"), True),
    ("scale", ("hires_scale_factor", "hr_scale"), 1.75),
    ("upscaler", ("hires_upscaler_name", "hr_upscaler"), "4x-UltraSharp"),
    ("denoise", ("hires_denoise_strength", "hires_denoise"), 0.33),
    ("steps", ("hires_steps", "hr_second_pass_steps"), 11),
]


@pytest.mark.parametrize(
    ("field", "alias", "value", "location"),
    [
        pytest.param(field, alias, value, location, id=f"{location}-{alias}")
        for field, aliases, value in HIRES_ALIASES
        for alias in aliases
        for location in METADATA_LOCATIONS
    ]
    + [
        # denoising_strength means the hires denoise only inside a txt2img section.
        pytest.param("denoise", "denoising_strength", 0.33, loc, id=f"{loc}-denoising_strength")
        for loc in ("flat-txt2img_config", "nested-txt2img")
    ],
)
def test_hires_alias_sets_the_hires_field(field: str, alias: str, value: Any, location: str) -> None:
    cfg = parse_config(place_txt2img_metadata(location, {alias: value}))

    assert getattr(cfg.hires, field) == value


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("enabled", "enabled", True),
        ("upscaler_name", "upscaler", "4x-UltraSharp"),
        ("upscale_factor", "scale", 1.75),
        ("steps", "steps", 11),
        ("denoise", "denoise", 0.33),
    ],
)
def test_hires_fix_section_sets_the_hires_field(key: str, field: str, value: Any) -> None:
    cfg = parse_config({"txt2img": {"steps": 30}, "hires_fix": {key: value}})

    assert getattr(cfg.hires, field) == value


def test_hires_settings_in_txt2img_win_over_the_hires_fix_section() -> None:
    cfg = parse_config({"txt2img": {"hr_scale": 1.25}, "hires_fix": {"upscale_factor": 1.75, "steps": 9}})

    assert cfg.hires.scale == 1.25
    assert cfg.hires.steps == 9  # txt2img said nothing about steps, so hires_fix fills it


@pytest.mark.parametrize("location", METADATA_LOCATIONS)
@pytest.mark.parametrize("alias", ["refiner_enabled", "use_refiner"])
def test_refiner_toggle_alias_is_honoured(alias: str, location: str) -> None:
    # Naming a checkpoint alone enables the refiner, so only an explicit False proves the alias is read.
    keys = {alias: False, "refiner_model_name": "sd_xl_refiner_1.0.safetensors", "refiner_switch_at": 0.8}

    cfg = parse_config(place_txt2img_metadata(location, keys))

    assert cfg.refiner.enabled is False


@pytest.mark.parametrize("location", METADATA_LOCATIONS)
@pytest.mark.parametrize("alias", ["refiner_model_name", "refiner_checkpoint"])
def test_refiner_model_alias_sets_the_refiner_model(alias: str, location: str) -> None:
    keys = {"refiner_enabled": True, alias: "sd_xl_refiner_1.0.safetensors", "refiner_switch_at": 0.8}

    cfg = parse_config(place_txt2img_metadata(location, keys))

    assert cfg.refiner.model_name == "sd_xl_refiner_1.0.safetensors"


@pytest.mark.parametrize("location", METADATA_LOCATIONS)
@pytest.mark.parametrize("alias", ["refiner_switch_step", "refiner_switch_steps"])
def test_refiner_switch_step_alias_sets_the_switch_step(alias: str, location: str) -> None:
    keys = {"refiner_enabled": True, "refiner_model_name": "refiner.safetensors", alias: 24}

    cfg = parse_config(place_txt2img_metadata(location, keys))

    assert cfg.refiner.switch_step == 24


def test_naming_a_refiner_checkpoint_enables_the_refiner_as_a1111_does() -> None:
    cfg = parse_config({"txt2img": {"refiner_checkpoint": "refiner.safetensors", "refiner_switch_at": 0.8}})

    assert cfg.refiner.enabled is True


UPSCALE_ALIASES: list[tuple[str, tuple[str, ...], Any]] = [
    ("upscaler", ("upscaler", "upscaler_1", "upscaler_name"), "4x-UltraSharp"),
    ("upscaling_resize", ("upscaling_resize", "upscale_factor", "scale"), 3.0),
]


@pytest.mark.parametrize(
    ("field", "alias", "value", "shape"),
    [
        pytest.param(field, alias, value, shape, id=f"{shape}-{alias}")
        for field, aliases, value in UPSCALE_ALIASES
        for alias in aliases
        for shape in ("flat", "nested")
    ],
)
def test_upscale_alias_sets_the_upscale_field(field: str, alias: str, value: Any, shape: str) -> None:
    raw = {"upscale_config": {alias: value}} if shape == "flat" else {"upscale": {alias: value}}

    cfg = parse_config(raw)

    assert getattr(cfg.upscale, field) == value


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_old_ad_mask_k_largest_is_renamed_to_ad_mask_k(shape: str) -> None:
    section = {"adetailer_model": "face_yolov8n.pt", "ad_mask_k_largest": 2, "ad_mask_blur": 4}
    raw = {"adetailer_config": section} if shape == "flat" else {"adetailer": section}

    cfg = parse_config(raw)

    assert cfg.adetailer.face.ad_args == {"ad_mask_k": 2, "ad_mask_blur": 4}


def test_adetailer_face_keys_set_the_face_pass() -> None:
    cfg = parse_config(
        {
            "adetailer": {
                "adetailer_model": "face_yolov8s.pt",
                "adetailer_confidence": 0.35,
                "adetailer_denoise": 0.25,
                "adetailer_steps": 18,
                "adetailer_prompt": "sharp eyes",
            }
        }
    )

    face = cfg.adetailer.face
    assert (face.model, face.confidence, face.denoise, face.steps, face.prompt) == (
        "face_yolov8s.pt",
        0.35,
        0.25,
        18,
        "sharp eyes",
    )
    assert cfg.adetailer.hands is None


HANDS_KEYS: dict[str, Any] = {
    "model": "hand_yolov9c.pt",
    "confidence": 0.25,
    "steps": 12,
    "cfg": 5.0,
    "denoise": 0.3,
    "sampler": "Euler a",
    "scheduler": "Karras",
    "prompt": "detailed hands",
    "negative_prompt": "extra fingers",
}


@pytest.mark.parametrize("shape", ["flat", "nested"])
@pytest.mark.parametrize("toggle", ["enable_hands_pass", "ad_hands_enabled"])
def test_adetailer_hands_pass_keys_set_the_hands_pass(toggle: str, shape: str) -> None:
    section = {toggle: True, **{f"adetailer_hands_{k}": v for k, v in HANDS_KEYS.items()}}
    raw = {"adetailer_config": section} if shape == "flat" else {"adetailer": section}

    cfg = parse_config(raw)

    hands = cfg.adetailer.hands
    assert hands is not None
    assert {k: getattr(hands, k) for k in HANDS_KEYS} == HANDS_KEYS


def test_adetailer_hands_pass_stays_off_without_its_toggle() -> None:
    cfg = parse_config({"adetailer": {"adetailer_hands_model": "hand_yolov8n.pt"}})

    assert cfg.adetailer.hands is None


# --------------------------------------------------------------------------------------------
# Refiner switch
# --------------------------------------------------------------------------------------------

REFINER = {"refiner_enabled": True, "refiner_model_name": "sd_xl_refiner_1.0.safetensors"}


def flat_with_refiner(**switch: Any) -> dict[str, Any]:
    return {"txt2img_enabled": True, "txt2img_config": {"steps": 30}, **REFINER, **switch}


def test_refiner_switch_step_becomes_a_fraction_of_the_steps_and_is_kept() -> None:
    cfg = parse_config(flat_with_refiner(refiner_switch_step=24))

    assert cfg.refiner.switch_at == pytest.approx(24 / 30)
    assert cfg.refiner.switch_step == 24


def test_refiner_switch_fraction_is_kept() -> None:
    cfg = parse_config(flat_with_refiner(refiner_switch_at=0.7))

    assert cfg.refiner.switch_at == 0.7
    assert cfg.refiner.switch_step is None


def test_refiner_switch_step_zero_means_unused_when_a_fraction_is_given() -> None:
    # StableNew presets write refiner_switch_steps: 0 for "not used" next to refiner_switch_at.
    cfg = parse_config(
        {
            "txt2img": {
                "steps": 30,
                "refiner_checkpoint": "r.safetensors",
                "refiner_switch_steps": 0,
                "refiner_switch_at": 0.8,
            }
        }
    )

    assert cfg.refiner.switch_at == 0.8


@pytest.mark.parametrize("step", [30, 31])
def test_refiner_switch_step_at_or_beyond_the_last_step_is_rejected(step: int) -> None:
    err = parse_error(flat_with_refiner(refiner_switch_step=step))

    assert_reports(err, "refiner_switch_step", step)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param(flat_with_refiner(refiner_switch_step=0), "refiner_switch_step", id="flat"),
        pytest.param(
            {
                "txt2img": {
                    "steps": 30,
                    "use_refiner": True,
                    "refiner_checkpoint": "r",
                    "refiner_switch_steps": 0,
                }
            },
            "txt2img.refiner_switch_steps",
            id="nested",
        ),
    ],
)
def test_refiner_switch_step_zero_without_a_fraction_is_rejected_naming_the_field(
    raw: dict[str, Any], path: str
) -> None:
    # A switch step of 0 with no refiner_switch_at leaves the enabled refiner without a switch
    # point; the error must point at the field the user wrote, showing its value.
    err = parse_error(raw)

    assert_reports(err, path, 0)


@pytest.mark.parametrize("fraction", [0.0, -0.2, 1.0, 1.2])
def test_refiner_switch_fraction_outside_zero_and_one_is_rejected(fraction: float) -> None:
    err = parse_error(flat_with_refiner(refiner_switch_at=fraction))

    assert_reports(err, "refiner_switch_at", fraction)


def test_refiner_switch_step_and_fraction_that_disagree_are_rejected() -> None:
    err = parse_error(flat_with_refiner(refiner_switch_step=24, refiner_switch_at=0.5))

    assert_reports(err, "refiner_switch_at", 0.5)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param(
            {"txt2img_enabled": True, "refiner_enabled": True, "refiner_switch_at": 0.8},
            "model_name",
            id="flat",
        ),
        pytest.param(
            {"txt2img": {"use_refiner": True, "refiner_checkpoint": "None", "refiner_switch_at": 0.8}},
            "txt2img.refiner_checkpoint",
            id="nested-none-checkpoint",
        ),
    ],
)
def test_refiner_enabled_without_a_model_is_rejected(raw: dict[str, Any], path: str) -> None:
    err = parse_error(raw)

    assert len(err.problems) == 1
    assert path in err.problems[0].path
    assert "required" in str(err)


# --------------------------------------------------------------------------------------------
# Meanings that depend on context
# --------------------------------------------------------------------------------------------


def test_denoising_strength_is_hires_denoise_in_txt2img_but_img2img_denoise_in_img2img() -> None:
    cfg = parse_config(
        {
            "txt2img_enabled": True,
            "img2img_enabled": True,
            "txt2img_config": {"denoising_strength": 0.3},
            "img2img_config": {"denoising_strength": 0.6},
        }
    )

    assert cfg.hires.denoise == 0.3
    assert cfg.img2img.denoising_strength == 0.6
    assert "denoising_strength" not in cfg.txt2img.known()
    assert getattr(cfg.txt2img, "denoising_strength", None) is None


@pytest.mark.parametrize("value", ["automatic", "Automatic", "none", "None"])
@pytest.mark.parametrize("alias", ["scheduler", "scheduler_name"])
def test_automatic_or_none_scheduler_means_unset(alias: str, value: str) -> None:
    cfg = parse_config({"txt2img": {alias: value}, "img2img": {alias: value}})

    assert cfg.txt2img.scheduler is None
    assert cfg.img2img.scheduler is None


def test_unknown_section_keys_kept_by_a_lenient_parse_are_not_known_fields() -> None:
    raw = {"txt2img_enabled": True, "txt2img_config": {"steps": 20, "hr_resize_magic": 3}}
    cfg = parse_config(raw, lenient=True)

    assert cfg.txt2img.model_extra == {"hr_resize_magic": 3}
    assert "hr_resize_magic" not in cfg.txt2img.known()
    assert cfg.txt2img.known()["steps"] == 20


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        pytest.param(
            {"txt2img_enabled": True, "lora_strengths": {"x": 0.5}}, {"lora_strengths": {"x": 0.5}}, id="flat"
        ),
        pytest.param(
            {"txt2img": {}, "video": {"fps": 24}, "webui_options_write_enabled": False},
            {"video": {"fps": 24}, "webui_options_write_enabled": False},
            id="nested",
        ),
    ],
)
def test_unknown_top_level_keys_are_kept_in_extras(raw: dict[str, Any], kept: dict[str, Any]) -> None:
    cfg = parse_config(raw)

    assert cfg.extras == kept
    assert not set(kept) & set(PipelineConfig.model_fields)


# --------------------------------------------------------------------------------------------
# Validation bounds: every message names the field as written and the bad value
# --------------------------------------------------------------------------------------------


def bound_case(section: str, key: str, value: Any, *, nested_key: str | None = None) -> list[Any]:
    """The same bad value in the flat and the nested shape, with the path each should report."""
    flat_section = f"{section}_config"
    nested_key = nested_key or key
    extra_flat: dict[str, Any] = {}
    extra_nested: dict[str, Any] = {}
    if section == "img2img":  # img2img second, so no init image is needed
        extra_flat = {"txt2img_enabled": True, "img2img_enabled": True}
        extra_nested = {"pipeline": {"img2img_enabled": True}}
    return [
        pytest.param(
            {**extra_flat, flat_section: {key: value}},
            f"{flat_section}.{key}",
            value,
            id=f"flat-{key}={value}",
        ),
        pytest.param(
            {**extra_nested, section: {nested_key: value}},
            f"{section}.{nested_key}",
            value,
            id=f"nested-{nested_key}={value}",
        ),
    ]


BOUND_CASES = [
    *bound_case("txt2img", "steps", 0),
    *bound_case("txt2img", "steps", 151),
    *bound_case("txt2img", "cfg_scale", 0.5),
    *bound_case("txt2img", "cfg_scale", 31),
    *bound_case("txt2img", "width", 1001),
    *bound_case("txt2img", "width", 32),
    *bound_case("txt2img", "width", 8200),
    *bound_case("txt2img", "height", 1001),
    *bound_case("txt2img", "batch_size", 17),
    *bound_case("img2img", "denoising_strength", -0.1),
    *bound_case("img2img", "denoising_strength", 1.5),
    *bound_case("img2img", "steps", 151),
    *bound_case("upscale", "upscaling_resize", 0.5),
    *bound_case("upscale", "upscaling_resize", 9),
    *bound_case("upscale", "upscale_factor", 9),
    # hires: flat keeps its own name at the top level, nested uses A1111's in txt2img
    pytest.param({"hires_scale_factor": 9}, "hires_scale_factor", 9, id="flat-hires_scale_factor=9"),
    pytest.param({"txt2img": {"hr_scale": 9}}, "txt2img.hr_scale", 9, id="nested-hr_scale=9"),
    pytest.param(
        {"hires_fix": {"upscale_factor": 9}}, "hires_fix.upscale_factor", 9, id="hires_fix-factor=9"
    ),
    pytest.param({"hires_denoise_strength": 1.5}, "hires_denoise_strength", 1.5, id="flat-hires-denoise=1.5"),
    pytest.param(
        {"txt2img_config": {"denoising_strength": -0.1}},
        "txt2img_config.denoising_strength",
        -0.1,
        id="flat-txt2img-denoise=-0.1",
    ),
    pytest.param(
        {"adetailer": {"adetailer_denoise": 1.5}},
        "adetailer.adetailer_denoise",
        1.5,
        id="nested-ad-denoise=1.5",
    ),
]


@pytest.mark.parametrize(("raw", "path", "value"), BOUND_CASES)
def test_out_of_bounds_value_is_reported_with_its_path_and_value(
    raw: dict[str, Any], path: str, value: Any
) -> None:
    err = parse_error(raw)

    assert len(err.problems) == 1
    assert_reports(err, path, value)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"txt2img_config": {"prompt": "x" * 10_001}}, "txt2img_config.prompt", id="flat"),
        pytest.param({"txt2img": {"negative_prompt": "x" * 10_001}}, "txt2img.negative_prompt", id="nested"),
    ],
)
def test_prompt_longer_than_the_limit_is_reported_with_its_length(raw: dict[str, Any], path: str) -> None:
    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert line.startswith(f"{path}: ")
    assert "10001" in line
    assert "x" * 100 not in str(err)  # the prompt itself is not echoed back


def test_a_prompt_of_exactly_the_limit_is_accepted() -> None:
    cfg = parse_config({"txt2img_config": {"prompt": "x" * 10_000}})

    assert len(cfg.txt2img.prompt) == 10_000


def test_problem_message_format_is_path_message_and_value() -> None:
    err = parse_error({"txt2img_config": {"steps": 0}})

    assert re.fullmatch(r"txt2img_config\.steps: \S.* \(got 0\)", str(err.problems[0]))


def test_several_field_problems_are_all_listed_in_one_error() -> None:
    err = parse_error(
        {"txt2img": {"steps": 0, "cfg_scale": 31, "width": 1001}, "upscale": {"upscaling_resize": 9}}
    )

    assert len(err.problems) == 4
    assert {p.path for p in err.problems} == {
        "txt2img.steps",
        "txt2img.cfg_scale",
        "txt2img.width",
        "upscale.upscaling_resize",
    }
    assert "4 problem(s)" in str(err)


def test_a_bad_toggle_and_a_bad_field_are_listed_together() -> None:
    # The docstring promises every problem at once, so a user fixing the toggle is not
    # surprised by a second round of errors about fields that were wrong all along.
    err = parse_error({"txt2img_enabled": "yes", "txt2img_config": {"steps": 0}})

    assert {p.path for p in err.problems} == {"txt2img_enabled", "txt2img_config.steps"}


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"txt2img_enabled": "yes"}, "txt2img_enabled", id="flat"),
        pytest.param(
            {"pipeline": {"upscale_enabled": "yes"}}, "pipeline.upscale_enabled", id="nested-pipeline"
        ),
        pytest.param({"adetailer": {"enabled": "yes"}}, "adetailer.enabled", id="nested-section"),
    ],
)
def test_non_boolean_toggle_is_rejected_naming_it(raw: dict[str, Any], path: str) -> None:
    err = parse_error(raw)

    assert_reports(err, path, "yes")


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        pytest.param({"txt2img_config": ["steps", 20]}, "txt2img_config", ["steps", 20], id="flat"),
        pytest.param({"pipeline": {}, "upscale": "4x"}, "upscale", "4x", id="nested"),
        pytest.param({"schema": WRAPPER_SCHEMA, "execution_config": 7}, "execution_config", 7, id="wrapper"),
        pytest.param(
            {"txt2img": "a lighthouse, 30 steps"}, "txt2img", "a lighthouse, 30 steps", id="lone-section"
        ),
    ],
)
def test_non_object_section_is_rejected_naming_it(raw: dict[str, Any], path: str, value: Any) -> None:
    err = parse_error(raw)

    assert_reports(err, path, value)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param(
            {"img2img_enabled": True, "img2img_config": {"steps": 20}},
            "img2img_config.init_images",
            id="flat",
        ),
        pytest.param(
            {"pipeline": {"txt2img_enabled": False, "img2img_enabled": True}},
            "img2img.init_images",
            id="nested",
        ),
    ],
)
def test_img2img_as_first_stage_without_init_images_is_rejected(raw: dict[str, Any], path: str) -> None:
    err = parse_error(raw)

    assert [p.path for p in err.problems] == [path]


def test_img2img_as_first_stage_with_init_images_is_accepted() -> None:
    cfg = parse_config({"img2img_enabled": True, "img2img_config": {"init_images": [INIT_IMAGE_B64]}})

    assert cfg.img2img.init_images == [INIT_IMAGE_B64]


@pytest.mark.parametrize("bad", ["", "abc"])
def test_init_image_shorter_than_a_real_image_is_rejected(bad: str) -> None:
    err = parse_error({"img2img_enabled": True, "img2img_config": {"init_images": [bad]}})

    assert "img2img_config.init_images.0" in str(err)


def test_a_parsed_config_is_returned_unchanged() -> None:
    cfg: PipelineConfig = parse_config(FLAT)

    assert parse_config(cfg) is cfg


@pytest.mark.parametrize("raw", [[1, 2], "txt2img", None])
def test_a_config_that_is_not_an_object_is_rejected(raw: Any) -> None:
    err = parse_error(raw)

    assert "must be a JSON object" in str(err)


# --------------------------------------------------------------------------------------------
# Sampler names that carry a scheduler (A1111 >= 1.9 lists "DPM++ 2M" and "Karras" apart)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sampler", "scheduler"),
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
        ("Euler a Exponential", "Euler a", "Exponential"),
        ("DPM++ 2M SGM Uniform", "DPM++ 2M", "SGM Uniform"),  # the longer suffix, not " Uniform"
        ("DPM++ SDE karras", "DPM++ SDE", "Karras"),
        ("DPM++ 3M SDE Align Your Steps", "DPM++ 3M SDE", "Align Your Steps"),
    ],
)
@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_a_sampler_name_carrying_a_scheduler_is_split_into_sampler_and_scheduler(
    given: str, sampler: str, scheduler: str, shape: str
) -> None:
    raw = {"txt2img_config": {"sampler_name": given}} if shape == "flat" else {"txt2img": {"sampler": given}}

    cfg = parse_config(raw)

    assert (cfg.txt2img.sampler_name, cfg.txt2img.scheduler) == (sampler, scheduler)


@pytest.mark.parametrize("name", ["DPM++ 2M", "DPM++ 2M SDE Heun", "DDIM", "Euler a", "DDIM CFG++", "UniPC"])
def test_a_sampler_name_without_a_trailing_scheduler_is_left_alone(name: str) -> None:
    cfg = parse_config({"txt2img_config": {"sampler_name": name}})

    assert (cfg.txt2img.sampler_name, cfg.txt2img.scheduler) == (name, None)


@pytest.mark.parametrize("scheduler", ["karras", "Karras", "Automatic"])
def test_a_scheduler_beside_a_sampler_name_naming_the_same_or_none_keeps_the_given_one(
    scheduler: str,
) -> None:
    cfg = parse_config({"txt2img_config": {"sampler_name": "DPM++ 2M Karras", "scheduler": scheduler}})

    # "Automatic" means unset in StableNew's configs: the name's scheduler is then the one asked for.
    assert cfg.txt2img.sampler_name == "DPM++ 2M"
    assert cfg.txt2img.scheduler == (scheduler if scheduler != "Automatic" else "Karras")


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param(
            {"txt2img_config": {"sampler_name": "DPM++ 2M Karras", "scheduler": "Exponential"}},
            "txt2img_config.scheduler",
            id="flat",
        ),
        pytest.param(
            {"txt2img": {"sampler": "DPM++ 2M Karras", "scheduler_name": "Exponential"}},
            "txt2img.scheduler_name",
            id="nested-aliases",
        ),
        pytest.param(
            {
                "txt2img_enabled": True,
                "img2img_enabled": True,
                "img2img_config": {"sampler_name": "Euler Karras", "scheduler": "Uniform"},
            },
            "img2img_config.scheduler",
            id="img2img",
        ),
    ],
)
def test_a_sampler_name_whose_scheduler_disagrees_with_the_given_one_is_rejected_naming_the_field(
    raw: dict[str, Any], path: str
) -> None:
    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert "Karras" in line
    assert "(got 'Exponential')" in line or "(got 'Uniform')" in line


def test_the_adetailer_pass_sampler_carrying_a_scheduler_is_split() -> None:
    cfg = parse_config(
        {"adetailer": {"adetailer_sampler": "DPM++ 2M Karras", "adetailer_hands_sampler": "x"}}
    )

    assert (cfg.adetailer.face.sampler, cfg.adetailer.face.scheduler) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize("value", ["inherit", "Use same scheduler", "Automatic"])
def test_an_adetailer_scheduler_that_means_the_main_pass_is_unset(value: str) -> None:
    """StableNew's presets say "inherit"; sent as is, ADetailer would hand A1111 an unknown scheduler."""
    cfg = parse_config({"adetailer": {"adetailer_sampler": "DPM++ 2M", "adetailer_scheduler": value}})

    assert cfg.adetailer.face.scheduler is None


def test_a_vae_of_none_is_kept_apart_from_automatic() -> None:
    """A1111's "None" (no external VAE) differs from "Automatic" (the one matching the checkpoint)."""
    assert parse_config({"txt2img": {"vae": "None"}}).txt2img.vae == "None"
    assert parse_config({"txt2img": {"vae": "none"}}).txt2img.vae == "None"
    assert parse_config({"txt2img": {"vae": "Automatic"}}).txt2img.vae is None


# --------------------------------------------------------------------------------------------
# Output size and image count limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        pytest.param(
            {
                "hires_enabled": True,
                "hires_scale_factor": 4,
                "txt2img_enabled": True,
                "txt2img_config": {"width": 8192, "height": 1024},
            },
            "hires_scale_factor",
            4,
            id="flat-hires-side",
        ),
        pytest.param(
            {"txt2img": {"width": 8192, "height": 8192, "enable_hr": True, "hr_scale": 2}},
            "txt2img.hr_scale",
            2,
            id="nested-hires-pixels",
        ),
        pytest.param(
            {"txt2img": {"width": 8192, "height": 256, "enable_hr": True, "hr_resize_y": 1024}},  # 32768 wide
            "txt2img.hr_resize_y",
            1024,
            id="nested-hires-resize-keeps-aspect",
        ),
        pytest.param(
            {
                "txt2img_enabled": True,
                "upscale_enabled": True,
                "txt2img_config": {"width": 4096, "height": 4096},
                "upscale_config": {"upscaling_resize": 4.0},
            },
            "upscale_config.upscaling_resize",
            4.0,
            id="flat-upscale-factor",
        ),
        pytest.param(
            {
                "pipeline": {"upscale_enabled": True},
                "txt2img": {"width": 1024, "height": 1024},
                "upscale": {"upscaling_resize_w": 16384, "upscaling_resize_h": 16384},
            },
            "upscale.upscaling_resize_w",
            16384,
            id="nested-upscale-target-pixels",
        ),
    ],
)
def test_an_output_over_the_size_limits_is_rejected_naming_the_field_that_asks_for_it(
    raw: dict[str, Any], path: str, value: Any
) -> None:
    err = parse_error(raw)

    assert [p.path for p in err.problems] == [path]
    line = str(err.problems[0])
    assert f"(got {value!r})" in line or f"(got {float(value)!r})" in line
    assert "px" in line


def test_an_output_exactly_at_the_pixel_limit_is_accepted() -> None:
    cfg = parse_config(
        {"txt2img": {"width": 8192, "height": 4096, "enable_hr": True, "hr_scale": 2}}  # 16384 x 8192
    )

    assert cfg.hires.scale == 2


def test_an_upscale_after_an_img2img_first_stage_of_unknown_size_is_left_to_the_worker() -> None:
    cfg = parse_config(
        {
            "img2img_enabled": True,
            "upscale_enabled": True,
            "img2img_config": {"init_images": [INIT_IMAGE_B64]},
            "upscale_config": {"upscaling_resize": 8},
        }
    )

    assert cfg.upscale.upscaling_resize == 8


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param(
            {"txt2img_enabled": True, "txt2img_config": {"batch_size": 4, "n_iter": 5}},
            "txt2img_config.batch_size",
            id="flat",
        ),
        pytest.param({"txt2img": {"batch_size": 2, "n_iter": 9}}, "txt2img.batch_size", id="nested"),
    ],
)
def test_batch_size_times_n_iter_over_16_is_rejected(raw: dict[str, Any], path: str) -> None:
    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert "batch_size x n_iter" in line
    assert "over 16" in line


def test_img2img_after_a_batch_may_not_multiply_the_images_past_16() -> None:
    err = parse_error(
        {
            "txt2img_enabled": True,
            "img2img_enabled": True,
            "txt2img_config": {"batch_size": 4},
            "img2img_config": {"batch_size": 2, "n_iter": 4},
        }
    )

    line = str(problem_at(err, "img2img_config.batch_size"))
    assert "32 images" in line


# --------------------------------------------------------------------------------------------
# StableNew fields that would otherwise be silently ignored
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "given", "missing"),
    [
        pytest.param({"width": 768}, "width", "height", id="width-only"),
        pytest.param({"height": 768}, "height", "width", id="height-only"),
    ],
)
@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_img2img_width_without_height_or_the_reverse_is_rejected_naming_the_field(
    section: dict[str, Any], given: str, missing: str, shape: str
) -> None:
    if shape == "flat":
        raw: dict[str, Any] = {"txt2img_enabled": True, "img2img_enabled": True, "img2img_config": section}
        path = f"img2img_config.{given}"
    else:
        raw = {"pipeline": {"img2img_enabled": True}, "img2img": section}
        path = f"img2img.{given}"

    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert f"without {missing}" in line
    assert "(got 768)" in line


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_an_upscale_mode_other_than_single_is_rejected_as_not_supported(shape: str) -> None:
    if shape == "flat":
        raw: dict[str, Any] = {"upscale_config": {"upscale_mode": "img2img"}}
        path = "upscale_config.upscale_mode"
    else:
        raw = {"upscale": {"upscale_mode": "img2img"}}
        path = "upscale.upscale_mode"

    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert "not supported" in line
    assert "(got 'img2img')" in line


def test_upscale_mode_single_is_accepted() -> None:
    assert parse_config({"upscale": {"upscale_mode": "single"}}).upscale.upscale_mode == "single"


@pytest.mark.parametrize(
    ("key", "value"),
    [("mask_mode", "inpaint"), ("mask_image_path", "masks/face.png"), ("mask_blur", 4)],
)
@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_img2img_inpainting_keys_are_rejected_as_not_supported(key: str, value: Any, shape: str) -> None:
    if shape == "flat":
        raw: dict[str, Any] = {
            "txt2img_enabled": True,
            "img2img_enabled": True,
            "img2img_config": {key: value},
        }
        path = f"img2img_config.{key}"
    else:
        raw = {"pipeline": {"img2img_enabled": True}, "img2img": {key: value}}
        path = f"img2img.{key}"

    err = parse_error(raw)

    line = str(problem_at(err, path))
    assert "inpainting is not supported" in line
    assert f"(got {value!r})" in line


def test_img2img_inpainting_keys_that_ask_for_nothing_are_accepted() -> None:
    cfg = parse_config(
        {
            "pipeline": {"img2img_enabled": True},
            "img2img": {"mask_mode": "none", "mask_image_path": "", "mask_blur": 0},
        }
    )

    assert cfg.img2img_enabled


def test_seed_resize_from_is_a_txt2img_field() -> None:
    cfg = parse_config({"txt2img": {"seed_resize_from_w": 768, "seed_resize_from_h": 512}})

    assert (cfg.txt2img.seed_resize_from_w, cfg.txt2img.seed_resize_from_h) == (768, 512)
    assert "seed_resize_from_w" not in cfg.txt2img.model_extra


def test_seed_resize_from_one_side_only_is_rejected_naming_it() -> None:
    err = parse_error({"txt2img": {"seed_resize_from_w": 768, "seed_resize_from_h": -1}})

    assert "without seed_resize_from_h" in str(problem_at(err, "txt2img.seed_resize_from_w"))
