"""Every key a config carries is known: mapped, or listed as accepted and not sent; anything else is an error
naming the key as written and the closest known key (or, lenient, a warning)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stablenew.errors import ConfigError
from stablenew.pipeline import (
    KEPT_SECTIONS,
    NOT_SENT,
    StageExecutionPlan,
    StageSequencer,
    fill_prompt,
    parse_config,
)

FLAT = {"txt2img_enabled": True, "txt2img_config": {"prompt": "a lighthouse", "steps": 20}}
NESTED = {"txt2img": {"prompt": "a lighthouse", "steps": 20}, "pipeline": {"txt2img_enabled": True}}
WRAPPED = {"schema": "stablenew.config.v2.6", "execution_config": copy.deepcopy(NESTED)}
ADETAILER = {
    "txt2img": {"prompt": "a lighthouse keeper", "steps": 20},
    "pipeline": {"txt2img_enabled": True, "adetailer_enabled": True},
    "adetailer": {"adetailer_model": "face_yolov8n.pt"},
}


def problems(raw: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, **kwargs)
    return [str(problem) for problem in caught.value.problems]


def with_key(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    *sections, key = path.split(".")
    node = raw
    for part in sections:
        node = node.setdefault(part, {})
    node[key] = value
    return raw


@pytest.mark.parametrize(
    ("base", "path", "value", "expected"),
    [
        pytest.param(FLAT, "txt2img_config.stpes", 40, 'txt2img_config.stpes: is not a known key; did you mean "steps"?', id="flat-steps"),
        pytest.param(NESTED, "txt2img.stpes", 40, 'txt2img.stpes: is not a known key; did you mean "steps"?', id="nested-steps"),
        pytest.param(NESTED, "txt2img.cfg_sacle", 5.0, 'txt2img.cfg_sacle: is not a known key; did you mean "cfg_scale"?', id="nested-cfg"),
        pytest.param(FLAT, "txt2img_enabeld", True, 'txt2img_enabeld: is not a known key; did you mean "txt2img_enabled"?', id="flat-top-level"),
        pytest.param(FLAT, "upscale_config.upscaling_resiz", 4.0, 'upscale_config.upscaling_resiz: is not a known key; did you mean "upscaling_resize"?', id="flat-upscale"),
        pytest.param(NESTED, "upscale.upscaling_resiz", 4.0, 'upscale.upscaling_resiz: is not a known key; did you mean "upscaling_resize"?', id="nested-upscale"),
        pytest.param(NESTED, "img2img.denoising_strenght", 0.3, 'img2img.denoising_strenght: is not a known key; did you mean "denoising_strength"?', id="nested-img2img"),
        pytest.param(NESTED, "pipeline.upscale_enabeld", True, 'pipeline.upscale_enabeld: is not a known key; did you mean "upscale_enabled"?', id="pipeline"),
        pytest.param(NESTED, "hires_fix.upscaler_nme", "Latent", 'hires_fix.upscaler_nme: is not a known key; did you mean "upscaler_name"?', id="hires_fix"),
        pytest.param(NESTED, "txt2img_sections", {}, 'txt2img_sections: is not a known key; did you mean "txt2img_enabled"?', id="nested-top-level"),
        pytest.param(WRAPPED, "execution_config.txt2img.stpes", 40, 'execution_config.txt2img.stpes: is not a known key; did you mean "steps"?', id="wrapped-section"),
        pytest.param(WRAPPED, "execution_confg", {}, 'execution_confg: is not a known key; did you mean "execution_config"?', id="wrapper"),
        pytest.param(ADETAILER, "adetailer.adetailer_confidance", 0.3, 'adetailer.adetailer_confidance: is not a known key; did you mean "adetailer_confidence"?', id="adetailer"),
        pytest.param(ADETAILER, "adetailer.ad_denoise_strength", 0.3, 'adetailer.ad_denoise_strength: is not a known key; did you mean "ad_denoising_strength"?', id="adetailer-ad-arg"),
        pytest.param(ADETAILER, "adetailer.ad_hands_mask_kk", 3, 'adetailer.ad_hands_mask_kk: is not a known key; did you mean "ad_hands_mask_k"?', id="adetailer-hands-arg"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_an_error_naming_it_as_written_and_the_closest_known_key(
    base: dict[str, Any], path: str, value: Any, expected: str
) -> None:
    assert problems(with_key(base, path, value)) == [expected]


def test_a_key_nothing_resembles_is_named_without_a_suggestion() -> None:
    assert problems(with_key(FLAT, "txt2img_config.zzzz", 1)) == ["txt2img_config.zzzz: is not a known key"]


def test_the_flat_shape_reads_no_enabled_flag_inside_a_stage_section_so_one_there_is_unknown() -> None:
    (problem,) = problems(with_key(FLAT, "txt2img_config.enabled", False))

    assert problem.startswith("txt2img_config.enabled: is not a known key")


def test_every_unknown_key_is_listed_at_once_with_the_other_problems() -> None:
    raw = with_key(with_key(NESTED, "txt2img.stpes", 40), "txt2img.steps", 0)

    assert sorted(problems(raw)) == [
        "txt2img.steps: must be >= 1 (got 0)",
        'txt2img.stpes: is not a known key; did you mean "steps"?',
    ]


def test_a_lenient_parse_runs_without_the_unknown_key_and_lists_it() -> None:
    cfg = parse_config(with_key(NESTED, "txt2img.stpes", 40), lenient=True)

    assert cfg.txt2img.steps == 20
    assert [str(p) for p in cfg.ignored_keys] == ['txt2img.stpes: is not a known key; did you mean "steps"?']
    assert "stpes" not in cfg.txt2img.known()


def test_a_lenient_plan_lists_the_ignored_keys_and_its_json_carries_none_of_them() -> None:
    plan = StageSequencer().build_plan(with_key(FLAT, "txt2img_config.stpes", 40), lenient=True)

    assert [p.path for p in plan.ignored_keys] == ["txt2img_config.stpes"]
    assert "stpes" not in plan.to_json()
    assert StageExecutionPlan.from_json(plan.to_json()).ignored_keys == ()


def test_a_lenient_parse_logs_each_ignored_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="stablenew.config"):
        parse_config(with_key(NESTED, "txt2img.stpes", 40), lenient=True, source="preset.json")

    assert caplog.messages == [
        'preset.json: ignored txt2img.stpes: is not a known key; did you mean "steps"?'
    ]


def test_a_lenient_parse_still_refuses_bad_values_of_known_keys() -> None:
    assert problems(with_key(NESTED, "txt2img.steps", 0), lenient=True) == [
        "txt2img.steps: must be >= 1 (got 0)"
    ]


_NOT_SENT_CASES = [(section, key) for section, keys in NOT_SENT.items() for key in keys if section != "<top>"]


@pytest.mark.parametrize(("section", "key"), _NOT_SENT_CASES)
def test_every_key_listed_as_not_sent_is_accepted_in_its_section(section: str, key: str) -> None:
    no_mask = {"mask_mode": "none", "mask_image_path": ""}  # a live mask is refused (no inpainting)
    raw = with_key(ADETAILER, f"{section}.{key}", no_mask.get(key, 0))

    cfg = parse_config(raw)

    assert cfg.ignored_keys == ()


@pytest.mark.parametrize("key", sorted(NOT_SENT["<top>"]))
@pytest.mark.parametrize("base", [FLAT, NESTED], ids=["flat", "nested"])
def test_every_top_level_key_listed_as_not_sent_is_accepted_in_both_shapes(
    base: dict[str, Any], key: str
) -> None:
    cfg = parse_config(with_key(base, key, 1))

    assert cfg.extras == {key: 1}


@pytest.mark.parametrize("section", sorted(KEPT_SECTIONS))
def test_a_section_stablenew_keeps_for_itself_is_accepted_whole_and_never_read(section: str) -> None:
    cfg = parse_config(with_key(NESTED, section, {"anything": {"at": "all"}}))

    assert cfg.extras == {section: {"anything": {"at": "all"}}}


def test_a_refiner_switch_written_as_a_percentage_is_ignored_while_the_refiner_is_off() -> None:
    # Given one of StableNew's v2.6 packs: the refiner off, its switch written as 80 (percent)
    raw = with_key(with_key(NESTED, "txt2img.refiner_switch_at", 80.0), "txt2img.use_refiner", False)

    # Then it plans, and no refiner is attached
    plan = StageSequencer().build_plan(raw)
    assert plan.stages[0].refiner_enabled is False

    # and with the refiner on, the same value is refused
    raw = with_key(
        with_key(raw, "txt2img.use_refiner", True), "txt2img.refiner_checkpoint", "refiner.safetensors"
    )
    assert problems(raw) == ["txt2img.refiner_switch_at: must be < 1.0 (got 80.0)"]


def test_stablenews_hands_spelling_reaches_the_hands_pass_as_adetailers_names() -> None:
    raw = with_key(ADETAILER, "adetailer.enable_hands_pass", True)
    for key, value in {
        "ad_hands_mask_k": 6,
        "ad_hands_mask_min_ratio": 0.003,
        "ad_hands_padding": 16,
        "ad_hands_mask_feather": 8,
        "ad_mask_feather": 5,
        "ad_mask_k_largest": 2,
    }.items():
        raw = with_key(raw, f"adetailer.{key}", value)

    cfg = parse_config(raw)

    assert cfg.adetailer.hands is not None
    assert cfg.adetailer.hands.ad_args == {
        "ad_mask_k": 6,
        "ad_mask_min_ratio": 0.003,
        "ad_inpaint_only_masked_padding": 16,
    }
    assert cfg.adetailer.hands.mask_feather == 8
    assert cfg.adetailer.face.ad_args == {"ad_mask_k": 2}
    assert cfg.adetailer.face.mask_feather == 5


def test_adetailer_mask_feather_wins_over_stablenews_second_spelling() -> None:
    raw = with_key(with_key(ADETAILER, "adetailer.ad_mask_feather", 5), "adetailer.adetailer_mask_feather", 9)

    assert parse_config(raw).adetailer.face.mask_feather == 9


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "ad_tab_enable",
            False,
            "adetailer.ad_tab_enable: switches the pass off, so ADetailer would skip it",
        ),
        ("ad_model", "None", "adetailer.ad_model: names no detector, so ADetailer would skip the pass"),
        (
            "adetailer_model",
            "None",
            "adetailer.adetailer_model: names no detector, so ADetailer would skip the pass",
        ),
        ("enable_face_pass", False, "adetailer.enable_face_pass: a face pass always runs here"),
    ],
)
def test_an_adetailer_pass_adetailer_would_skip_is_refused_naming_the_key(
    key: str, value: Any, expected: str
) -> None:
    (problem,) = problems(with_key(ADETAILER, f"adetailer.{key}", value))

    assert problem.startswith(expected)


def test_a_plan_from_the_queue_whose_adetailer_tab_is_switched_off_is_refused() -> None:
    # Given a valid plan whose ADetailer pass was switched off on its way through the queue
    plan = StageSequencer().build_plan(ADETAILER).model_dump(mode="json")
    plan["stages"][1]["config"]["face"]["ad_args"] = {"ad_tab_enable": False}

    # Then the worker's from_json refuses it
    with pytest.raises(ConfigError, match="ad_tab_enable"):
        StageExecutionPlan.from_json(plan)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        pytest.param({"txt2img_enabled": True}, ("txt2img_config",), id="flat"),
        pytest.param({"txt2img": {"steps": 20}}, ("txt2img",), id="nested"),
        pytest.param(
            {"schema": "stablenew.config.v2.6", "execution_config": {"txt2img": {}}},
            ("execution_config", "txt2img"),
            id="wrapped",
        ),
    ],
)
def test_fill_prompt_puts_the_prompt_where_the_configs_shape_keeps_it(
    raw: dict[str, Any], where: tuple[str, ...]
) -> None:
    filled = fill_prompt(raw, prompt="a lighthouse", negative_prompt="blurry")

    section = filled
    for part in where:
        section = section[part]
    assert (section["prompt"], section["negative_prompt"]) == ("a lighthouse", "blurry")
    assert parse_config(filled).txt2img.prompt == "a lighthouse"
    assert "prompt" not in str(raw)  # the caller's config is left as it was


def test_fill_prompt_without_a_prompt_keeps_the_files_own() -> None:
    assert fill_prompt(FLAT) == FLAT
