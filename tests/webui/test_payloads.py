"""Payload builders: neutral stage payload -> the exact A1111 request body, for both config shapes.

Plans are built from the example configs the way the runner builds them (StageSequencer +
build_stage_payload), then handed to the builders. The A1111 field lists below are written out here from
docs/webui-api.md, not imported from payloads.py, so a wrong list in src makes these tests fail.
"""

from __future__ import annotations

import base64
import copy
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stablenew.config_files import load_config_file
from stablenew.errors import ConfigError
from stablenew.pipeline import StageExecutionPlan, StageSequencer, StageType, build_stage_payload
from stablenew.webui import (
    adetailer_body,
    adetailer_tab,
    img2img_body,
    txt2img_body,
    upscale_body,
    validate_adetailer_tab,
    validate_stage_payload,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"

# --- A1111 v1.10.1 / ADetailer 25.3.0 field lists, copied from docs/webui-api.md -------------------------------
A1111_TXT2IMG = set(
    """prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h seed_resize_from_w
    sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces tiling
    do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin s_noise
    override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at
    disable_extra_networks firstpass_image comments enable_hr firstphase_width firstphase_height hr_scale
    hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler
    hr_prompt hr_negative_prompt force_task_id sampler_index script_name script_args send_images save_images
    alwayson_scripts infotext""".split()
)
# img2img: the txt2img fields from `prompt` to `comments`, then its own.
A1111_IMG2IMG = set(
    """prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h seed_resize_from_w
    sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces tiling
    do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin s_noise
    override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at
    disable_extra_networks firstpass_image comments
    init_images resize_mode image_cfg_scale mask mask_blur_x mask_blur_y mask_blur mask_round inpainting_fill
    inpaint_full_res inpaint_full_res_padding inpainting_mask_invert initial_noise_multiplier latent_mask
    force_task_id sampler_index include_init_images script_name script_args send_images save_images
    alwayson_scripts infotext""".split()
)
A1111_EXTRAS = set(
    """resize_mode show_extras_results gfpgan_visibility codeformer_visibility codeformer_weight
    upscaling_resize upscaling_resize_w upscaling_resize_h upscaling_crop upscaler_1 upscaler_2
    extras_upscaler_2_visibility upscale_first image""".split()
)
ADETAILER_ARGS = set(
    """ad_model ad_model_classes ad_tab_enable ad_prompt ad_negative_prompt ad_confidence ad_mask_filter_method
    ad_mask_k ad_mask_min_ratio ad_mask_max_ratio ad_dilate_erode ad_x_offset ad_y_offset ad_mask_merge_invert
    ad_mask_blur ad_denoising_strength ad_inpaint_only_masked ad_inpaint_only_masked_padding
    ad_use_inpaint_width_height ad_inpaint_width ad_inpaint_height ad_use_steps ad_steps ad_use_cfg_scale
    ad_cfg_scale ad_use_checkpoint ad_checkpoint ad_use_vae ad_vae ad_use_sampler ad_sampler ad_scheduler
    ad_use_noise_multiplier ad_noise_multiplier ad_use_clip_skip ad_clip_skip ad_restore_face
    ad_controlnet_model ad_controlnet_module ad_controlnet_weight ad_controlnet_guidance_start
    ad_controlnet_guidance_end""".split()
)
# A1111 option names we may put in override_settings (checkpoint, VAE, clip skip).
A1111_OVERRIDE_OPTIONS = {
    "sd_model_checkpoint",
    "sd_vae",
    "CLIP_stop_at_last_layers",
    "hires_fix_refiner_pass",
    "refiner_switch_by_sample_steps",
}


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PREVIOUS_IMAGE = png_b64(384, 256)


def example(name: str) -> dict[str, Any]:
    return load_config_file(EXAMPLES / name)


def plan_of(config: dict[str, Any]) -> StageExecutionPlan:
    return StageSequencer().build_plan(config)


def payload_for(
    config: dict[str, Any] | StageExecutionPlan,
    stage_type: StageType,
    *,
    image: str = PREVIOUS_IMAGE,
    seed: int | None = 777,
) -> dict[str, Any]:
    """The neutral payload the runner would hand over for ``stage_type``, after a previous stage."""
    plan = config if isinstance(config, StageExecutionPlan) else plan_of(config)
    index = plan.get_stage_types().index(stage_type)
    previous = None if index == 0 else {"images": [image], "meta": {"stage": "previous", "seed": seed}}
    return build_stage_payload(plan.stages[index], previous, index=index)


def body_for(config: dict[str, Any], stage_type: StageType, **kwargs: Any) -> dict[str, Any]:
    payload = payload_for(config, stage_type, **kwargs)
    image = payload["input_images"][0] if payload["input_images"] else ""
    if stage_type is StageType.TXT2IMG:
        return txt2img_body(payload)
    if stage_type is StageType.IMG2IMG:
        return img2img_body(payload, image)
    if stage_type is StageType.UPSCALE:
        return upscale_body(payload, image)
    return adetailer_body(payload, image)


def nested_with_img2img() -> dict[str, Any]:
    raw = example("stablenew_preset.json")
    raw["execution_config"]["pipeline"]["img2img_enabled"] = True
    return raw


# --- golden bodies: the flat PR-107 example (full_pipeline.json) --------------------------------------------

ASTRONAUT = "portrait of an astronaut in a sunflower field, golden hour, detailed face"
ASTRONAUT_NEGATIVE = "blurry, lowres, deformed hands"
# Clip skip and VAE are always sent (their defaults here), so no earlier job's override can linger in A1111.
FLAT_OVERRIDES = {
    "sd_model_checkpoint": "sd_xl_base_1.0.safetensors",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
}


def test_flat_txt2img_body_carries_hires_refiner_and_checkpoint_exactly():
    body = body_for(example("full_pipeline.json"), StageType.TXT2IMG)

    assert body == {
        "prompt": ASTRONAUT,
        "negative_prompt": ASTRONAUT_NEGATIVE,
        "seed": 1234,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 30,
        "cfg_scale": 6.5,
        "width": 1024,
        "height": 1024,
        "send_images": True,
        "save_images": False,
        "override_settings": FLAT_OVERRIDES
        | {"hires_fix_refiner_pass": "first pass", "refiner_switch_by_sample_steps": True},
        "override_settings_restore_afterwards": False,
        "enable_hr": True,
        "hr_scale": 1.5,
        "hr_upscaler": "Latent",
        "hr_second_pass_steps": 0,
        "denoising_strength": 0.45,
        "hr_sampler_name": None,
        "refiner_checkpoint": "sd_xl_refiner_1.0.safetensors",
        "refiner_switch_at": 0.8,
    }


def test_flat_img2img_body_takes_the_previous_image_its_size_and_its_seed():
    body = body_for(example("full_pipeline.json"), StageType.IMG2IMG, seed=98765)

    assert body == {
        "prompt": ASTRONAUT,
        "negative_prompt": ASTRONAUT_NEGATIVE,
        "seed": 98765,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 20,
        "cfg_scale": 7.0,
        "send_images": True,
        "save_images": False,
        "override_settings": FLAT_OVERRIDES,
        "override_settings_restore_afterwards": False,
        "init_images": [PREVIOUS_IMAGE],
        "denoising_strength": 0.35,
        "width": 384,
        "height": 256,
    }


def test_flat_upscale_body_scales_the_previous_image_by_its_factor():
    body = body_for(example("full_pipeline.json"), StageType.UPSCALE)

    assert body == {
        "image": PREVIOUS_IMAGE,
        "upscaler_1": "R-ESRGAN 4x+",
        "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0.0,
        "gfpgan_visibility": 0.0,
        "codeformer_visibility": 0.0,
        "codeformer_weight": 0.0,
        "show_extras_results": True,
        "resize_mode": 0,
        "upscaling_resize": 2.0,
    }


def test_flat_adetailer_body_is_img2img_with_skip_on_and_one_face_tab():
    body = body_for(example("full_pipeline.json"), StageType.ADETAILER, seed=4321)

    assert body == {
        "prompt": ASTRONAUT,
        "negative_prompt": ASTRONAUT_NEGATIVE,
        "seed": 4321,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 20,
        "cfg_scale": 7.0,
        "send_images": True,
        "save_images": False,
        "override_settings": FLAT_OVERRIDES,
        "override_settings_restore_afterwards": False,
        "init_images": [PREVIOUS_IMAGE],
        "width": 384,
        "height": 256,
        "alwayson_scripts": {
            "ADetailer": {
                "args": [
                    True,
                    True,
                    {
                        "ad_model": "face_yolov8n.pt",
                        "ad_confidence": 0.3,
                        "ad_prompt": "detailed face, sharp eyes",
                        "ad_negative_prompt": "",
                        "ad_denoising_strength": 0.4,
                        "ad_mask_blur": 4,
                        "ad_inpaint_only_masked": True,
                        "ad_inpaint_only_masked_padding": 32,
                        "ad_use_inpaint_width_height": True,
                        "ad_inpaint_width": 1024,
                        "ad_inpaint_height": 1024,
                        "ad_use_steps": True,
                        "ad_steps": 20,
                    },
                ]
            }
        },
    }


# --- golden bodies: StableNew's nested preset (stablenew_preset.json) ----------------------------------------

NOOK = "a cozy reading nook, warm light, highly detailed"
NOOK_OVERRIDES = {
    "sd_model_checkpoint": "sd_xl_base_1.0.safetensors [31e35c80fc]",
    "sd_vae": "Automatic",  # the preset says "Automatic"
    "CLIP_stop_at_last_layers": 2,
}


def test_nested_txt2img_body_maps_preset_keys_hires_and_refiner_exactly():
    body = body_for(example("stablenew_preset.json"), StageType.TXT2IMG)

    assert body == {
        "prompt": NOOK,
        "negative_prompt": "lowres, bad anatomy",
        "seed": -1,
        "sampler_name": "DPM++ 2M SDE",
        "scheduler": "Karras",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 28,
        "cfg_scale": 6.0,
        "width": 1024,
        "height": 1024,
        "send_images": True,
        "save_images": False,
        "override_settings": NOOK_OVERRIDES
        | {"hires_fix_refiner_pass": "first pass", "refiner_switch_by_sample_steps": False},
        "override_settings_restore_afterwards": False,
        "enable_hr": True,
        "hr_scale": 1.5,
        "hr_upscaler": "R-ESRGAN 4x+",
        "hr_second_pass_steps": 12,
        "denoising_strength": 0.35,
        "hr_sampler_name": None,  # the preset says "Use same sampler", which A1111 rejects with 500
        "refiner_checkpoint": "sd_xl_refiner_1.0.safetensors [7440042bbd]",
        "refiner_switch_at": 0.8,
    }


def test_nested_img2img_body_uses_its_own_denoise_not_the_hires_denoise_of_txt2img():
    body = body_for(nested_with_img2img(), StageType.IMG2IMG, seed=55)

    assert body == {
        "prompt": NOOK,
        "negative_prompt": "lowres, bad anatomy",
        "seed": 55,
        "sampler_name": "DPM++ 2M",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 20,
        "cfg_scale": 6.0,
        "send_images": True,
        "save_images": False,
        "override_settings": NOOK_OVERRIDES,
        "override_settings_restore_afterwards": False,
        "init_images": [PREVIOUS_IMAGE],
        "denoising_strength": 0.3,
        "width": 384,
        "height": 256,
    }


def test_nested_upscale_body_names_the_preset_upscaler():
    body = body_for(example("stablenew_preset.json"), StageType.UPSCALE)

    assert body == {
        "image": PREVIOUS_IMAGE,
        "upscaler_1": "4x-UltraSharp",
        "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0.0,
        "gfpgan_visibility": 0.0,
        "codeformer_visibility": 0.0,
        "codeformer_weight": 0.0,
        "show_extras_results": True,
        "resize_mode": 0,
        "upscaling_resize": 2.0,
    }


def test_nested_adetailer_body_has_two_booleans_then_a_face_tab_and_a_hands_tab():
    body = body_for(example("stablenew_preset.json"), StageType.ADETAILER, seed=31337)

    face = {
        "ad_model": "face_yolov8n.pt",
        "ad_confidence": 0.35,
        "ad_prompt": "",
        "ad_negative_prompt": "",
        "ad_denoising_strength": 0.35,
        "ad_mask_blur": 4,
        "ad_inpaint_only_masked": True,
        "ad_inpaint_only_masked_padding": 32,
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": 1024,
        "ad_inpaint_height": 1024,
        "ad_use_steps": True,
        "ad_steps": 24,
        "ad_use_cfg_scale": True,
        "ad_cfg_scale": 6.0,
        "ad_use_sampler": True,
        "ad_sampler": "DPM++ 2M",
        "ad_mask_k": 2,  # the preset's ad_mask_k_largest, renamed upstream
    }
    hands = {
        "ad_model": "hand_yolov8n.pt",
        "ad_confidence": 0.3,
        "ad_prompt": "",
        "ad_negative_prompt": "",
        "ad_denoising_strength": 0.3,
        "ad_mask_blur": 4,
        "ad_inpaint_only_masked": True,
        "ad_inpaint_only_masked_padding": 32,
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": 1024,
        "ad_inpaint_height": 1024,
    }
    assert body == {
        "prompt": NOOK,
        "negative_prompt": "lowres, bad anatomy",
        "seed": 31337,
        "sampler_name": "DPM++ 2M SDE",
        "scheduler": "Karras",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 28,
        "cfg_scale": 6.0,
        "send_images": True,
        "save_images": False,
        "override_settings": NOOK_OVERRIDES,
        "override_settings_restore_afterwards": False,
        "init_images": [PREVIOUS_IMAGE],
        "width": 384,
        "height": 256,
        "alwayson_scripts": {"ADetailer": {"args": [True, True, face, hands]}},
    }


# --- specific rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "switch_step", "fraction"),
    [(30, 24, 0.8), (40, 30, 0.75), (20, 5, 0.25), (28, 14, 0.5)],
)
def test_a_refiner_switch_step_is_sent_as_the_fraction_of_steps(steps, switch_step, fraction):
    config = example("full_pipeline.json")
    config["txt2img_config"]["steps"] = steps
    config["refiner_switch_step"] = switch_step

    body = body_for(config, StageType.TXT2IMG)

    assert body["refiner_switch_at"] == pytest.approx(fraction)
    assert 0 < body["refiner_switch_at"] < 1
    assert "refiner_switch_step" not in body


def test_a_refiner_switch_fraction_is_sent_as_given():
    config = example("full_pipeline.json")
    del config["refiner_switch_step"]
    config["refiner_switch_at"] = 0.65

    body = body_for(config, StageType.TXT2IMG)

    assert body["refiner_checkpoint"] == "sd_xl_refiner_1.0.safetensors"
    assert body["refiner_switch_at"] == 0.65
    assert body["override_settings"]["refiner_switch_by_sample_steps"] is False  # A1111's timestep meaning


def test_a_refiner_switch_step_asks_a1111_to_count_sampling_steps():
    config = example("full_pipeline.json")

    body = body_for(config, StageType.TXT2IMG)

    assert body["refiner_switch_at"] == pytest.approx(0.8)
    assert body["override_settings"]["refiner_switch_by_sample_steps"] is True


def test_a_request_without_refiner_leaves_the_refiner_option_alone():
    config = example("full_pipeline.json")
    config["refiner_enabled"] = False

    body = body_for(config, StageType.TXT2IMG)

    assert "refiner_switch_by_sample_steps" not in body["override_settings"]


def test_txt2img_without_refiner_or_hires_sends_none_of_their_keys():
    config = example("full_pipeline.json")
    config["refiner_enabled"] = False
    config["hires_enabled"] = False

    body = body_for(config, StageType.TXT2IMG)

    sent = set(body) & {"refiner_checkpoint", "refiner_switch_at", "enable_hr", "hr_scale", "hr_upscaler"}
    assert sent == set()
    assert "denoising_strength" not in body


def test_hires_with_both_resize_sides_sends_them_instead_of_a_scale():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"] |= {"hr_resize_x": 1536, "hr_resize_y": 1280}

    body = body_for(raw, StageType.TXT2IMG)

    assert (body["hr_resize_x"], body["hr_resize_y"]) == (1536, 1280)
    assert "hr_scale" not in body
    assert body["denoising_strength"] == 0.35


def test_hires_with_only_a_resize_width_sends_it_and_lets_a1111_keep_the_aspect():
    """A1111 derives the missing side from the aspect ratio when one of hr_resize_x/y is 0."""
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"]["hr_resize_x"] = 1536

    body = body_for(raw, StageType.TXT2IMG)

    assert (body["hr_resize_x"], body["hr_resize_y"]) == (1536, 0)
    assert "hr_scale" not in body


def test_hires_with_a_named_second_pass_sampler_sends_that_name():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"]["hr_sampler_name"] = "Euler a"

    body = body_for(raw, StageType.TXT2IMG)

    assert body["hr_sampler_name"] == "Euler a"


def test_sampler_name_is_always_sent_even_when_the_config_omits_it():
    config = example("full_pipeline.json")
    del config["txt2img_config"]["sampler_name"]
    del config["img2img_config"]["sampler_name"]

    for stage in (StageType.TXT2IMG, StageType.IMG2IMG, StageType.ADETAILER):
        assert body_for(config, stage)["sampler_name"], stage


def test_vae_and_clip_skip_travel_in_override_settings_never_through_options():
    config = example("full_pipeline.json")
    config["txt2img_config"] |= {"vae": "sdxl_vae.safetensors", "clip_skip": 2}

    body = body_for(config, StageType.TXT2IMG)

    assert body["override_settings"] == {
        "sd_model_checkpoint": "sd_xl_base_1.0.safetensors",
        "sd_vae": "sdxl_vae.safetensors",
        "CLIP_stop_at_last_layers": 2,
        "hires_fix_refiner_pass": "first pass",
        "refiner_switch_by_sample_steps": True,
    }
    assert body["override_settings_restore_afterwards"] is False


def test_a_config_without_a_model_names_no_checkpoint_but_still_resets_vae_and_clip_skip():
    config = example("txt2img_only.json")

    body = body_for(config, StageType.TXT2IMG)

    assert body["override_settings"] == {"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1}
    assert body["override_settings_restore_afterwards"] is False
    assert (body["width"], body["height"], body["sampler_name"]) == (832, 1216, "Euler a")


def test_img2img_with_an_explicit_size_keeps_it_instead_of_the_image_size():
    config = example("full_pipeline.json")
    config["img2img_config"] |= {"width": 512, "height": 768}

    body = body_for(config, StageType.IMG2IMG)

    assert (body["width"], body["height"]) == (512, 768)


def test_img2img_with_its_own_seed_does_not_take_the_previous_seed():
    config = example("full_pipeline.json")
    config["img2img_config"]["seed"] = 42

    body = body_for(config, StageType.IMG2IMG, seed=1234)

    assert body["seed"] == 42


def test_img2img_without_a_previous_seed_sends_minus_one():
    body = body_for(example("full_pipeline.json"), StageType.IMG2IMG, seed=None)

    assert body["seed"] == -1


def test_img2img_as_the_first_stage_uses_the_config_init_image_and_its_size():
    config = example("img2img_upscale.json")
    payload = payload_for(config, StageType.IMG2IMG)
    init = payload["config"]["init_images"][0]

    body = img2img_body(payload, init)

    assert body["init_images"] == [init]
    assert (body["width"], body["height"]) == (512, 512)
    assert (body["seed"], body["denoising_strength"], body["steps"]) == (42, 0.55, 24)


def test_upscale_to_a_target_size_uses_resize_mode_1_with_width_and_height():
    config = example("full_pipeline.json")
    config["upscale_config"] = {
        "upscaler": "4x-UltraSharp",
        "upscaling_resize_w": 2048,
        "upscaling_resize_h": 1536,
    }

    body = body_for(config, StageType.UPSCALE)

    assert body["resize_mode"] == 1
    assert (body["upscaling_resize_w"], body["upscaling_resize_h"]) == (2048, 1536)
    assert "upscaling_resize" not in body


def test_upscale_passes_face_restore_visibilities_and_a_second_upscaler():
    config = example("full_pipeline.json")
    config["upscale_config"] |= {
        "gfpgan_visibility": 0.5,
        "codeformer_visibility": 0.25,
        "codeformer_weight": 0.7,
        "upscaler_2": "Lanczos",
        "extras_upscaler_2_visibility": 0.3,
    }

    body = body_for(config, StageType.UPSCALE)

    assert body["gfpgan_visibility"] == 0.5
    assert (body["codeformer_visibility"], body["codeformer_weight"]) == (0.25, 0.7)
    assert (body["upscaler_2"], body["extras_upscaler_2_visibility"]) == ("Lanczos", 0.3)


def test_adetailer_args_always_start_with_enable_and_skip_img2img_both_true():
    for name in ("full_pipeline.json", "stablenew_preset.json"):
        args = body_for(example(name), StageType.ADETAILER)["alwayson_scripts"]["ADetailer"]["args"]

        assert args[:2] == [True, True], name
        assert all(isinstance(tab, dict) for tab in args[2:]), name


def test_adetailer_never_sends_a_mask_and_keeps_inpaint_only_masked_true():
    body = body_for(example("stablenew_preset.json"), StageType.ADETAILER)

    assert not {"mask", "latent_mask", "mask_blur"} & set(body)
    for tab in body["alwayson_scripts"]["ADetailer"]["args"][2:]:
        assert tab["ad_inpaint_only_masked"] is True
        assert tab["ad_use_inpaint_width_height"] is True


def test_adetailer_keeps_the_input_image_size_even_after_an_upscale():
    big = png_b64(1536, 1024)

    body = body_for(example("full_pipeline.json"), StageType.ADETAILER, image=big)

    assert (body["width"], body["height"]) == (1536, 1024)
    assert body["init_images"] == [big]


def test_adetailer_inpaint_size_comes_from_the_config():
    raw = example("stablenew_preset.json")
    adetailer = raw["execution_config"]["adetailer"]
    del adetailer["ad_inpaint_width"], adetailer["ad_inpaint_height"]
    adetailer |= {"adetailer_inpaint_width": 768, "adetailer_inpaint_height": 640}

    face = body_for(raw, StageType.ADETAILER)["alwayson_scripts"]["ADetailer"]["args"][2]

    assert (face["ad_inpaint_width"], face["ad_inpaint_height"]) == (768, 640)


def test_adetailer_hands_pass_maps_its_own_adetailer_hands_keys():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["adetailer"] |= {
        "adetailer_hands_steps": 18,
        "adetailer_hands_cfg": 5.0,
        "adetailer_hands_sampler": "Euler a",
        "adetailer_hands_prompt": "detailed hands",
    }

    hands = body_for(raw, StageType.ADETAILER)["alwayson_scripts"]["ADetailer"]["args"][3]

    assert hands["ad_model"] == "hand_yolov8n.pt"
    assert (hands["ad_use_steps"], hands["ad_steps"]) == (True, 18)
    assert (hands["ad_use_cfg_scale"], hands["ad_cfg_scale"]) == (True, 5.0)
    assert (hands["ad_use_sampler"], hands["ad_sampler"]) == (True, "Euler a")
    assert hands["ad_prompt"] == "detailed hands"


def test_adetailer_without_a_hands_pass_sends_exactly_one_tab():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["adetailer"]["enable_hands_pass"] = False

    args = body_for(raw, StageType.ADETAILER)["alwayson_scripts"]["ADetailer"]["args"]

    assert len(args) == 3


# --- ADetailer tab validation (ADetailer would silently disable a bad tab) ------------------------------------

GOOD_PASS: dict[str, Any] = {
    "model": "face_yolov8n.pt",
    "confidence": 0.3,
    "denoise": 0.4,
    "padding": 32,
    "mask_feather": 4,
    "inpaint_width": 1024,
    "inpaint_height": 1024,
}


def problems_of(ad_args: dict[str, Any], **pass_fields: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        adetailer_tab(GOOD_PASS | pass_fields | {"ad_args": ad_args}, path="adetailer.face")
    return [str(problem) for problem in caught.value.problems]


def test_a_valid_adetailer_pass_builds_a_tab_with_only_adetailer_arguments():
    tab = adetailer_tab(GOOD_PASS | {"ad_args": {"ad_mask_k": 1, "ad_x_offset": -3}}, path="adetailer.face")

    assert set(tab) <= ADETAILER_ARGS
    assert (tab["ad_mask_k"], tab["ad_x_offset"]) == (1, -3)


def test_an_unknown_adetailer_key_is_an_error_naming_it():
    problems = problems_of({"ad_mask_sharpness": 3})

    assert problems == ["adetailer.face.ad_mask_sharpness: is not an ADetailer argument (got 3)"]


def test_the_removed_ad_mask_k_largest_is_an_error_that_names_its_new_name():
    (problem,) = problems_of({"ad_mask_k_largest": 2})

    assert "ad_mask_k_largest" in problem
    assert "ad_mask_k" in problem.replace("ad_mask_k_largest", "")


@pytest.mark.parametrize("key", ["ad_prompt", "ad_model_classes", "ad_sampler", "ad_mask_merge_invert"])
def test_a_null_in_an_adetailer_string_field_is_an_error(key):
    problems = problems_of({key: None})

    assert problems == [f"adetailer.face.{key}: must not be null (got None)"]


def test_a_null_checkpoint_or_vae_is_allowed_as_adetailer_allows_it():
    tab = adetailer_tab(GOOD_PASS | {"ad_args": {"ad_checkpoint": None, "ad_vae": None}}, path="p")

    assert tab["ad_checkpoint"] is None
    assert tab["ad_vae"] is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ad_confidence", 1.5, "must be <= 1"),
        ("ad_confidence", -0.1, "must be >= 0"),
        ("ad_mask_k", -1, "must be >= 0"),
        ("ad_mask_max_ratio", 1.01, "must be <= 1"),
        ("ad_mask_blur", -4, "must be >= 0"),
        ("ad_inpaint_width", 32, "must be >= 64"),
        ("ad_steps", 0, "must be >= 1"),
        ("ad_cfg_scale", -1.0, "must be >= 0"),
        ("ad_noise_multiplier", 1.6, "must be <= 1.5"),
        ("ad_noise_multiplier", 0.4, "must be >= 0.5"),
        ("ad_clip_skip", 13, "must be <= 12"),
        ("ad_clip_skip", 0, "must be >= 1"),
        ("ad_controlnet_weight", 2.0, "must be <= 1"),
    ],
)
def test_an_out_of_range_adetailer_value_is_an_error_naming_the_bound(key, value, message):
    (problem,) = problems_of({key: value})

    assert problem.startswith(f"adetailer.face.{key}: {message}")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ad_mask_filter_method", "Largest"),
        ("ad_mask_merge_invert", "Invert"),
    ],
)
def test_an_adetailer_choice_outside_its_options_is_an_error(key, value):
    (problem,) = problems_of({key: value})

    assert problem.startswith(f"adetailer.face.{key}: must be one of")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ad_mask_k", 1.5),
        ("ad_mask_k", True),
        ("ad_use_steps", 1),
        ("ad_confidence", "0.3"),
        ("ad_prompt", 5),
    ],
)
def test_an_adetailer_value_of_the_wrong_type_is_an_error(key, value):
    (problem,) = problems_of({key: value})

    assert problem.startswith(f"adetailer.face.{key}: must be of type")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_adetailer_number_is_an_error_not_a_json_failure_mid_job(value):
    """JSON configs may say NaN/Infinity; the client refuses to send them, so catch them at submit."""
    (problem,) = problems_of({"ad_cfg_scale": value})

    assert problem.startswith("adetailer.face.ad_cfg_scale: must be a finite number")


def test_inpainting_the_whole_picture_sends_the_input_images_own_size_as_the_inpaint_size():
    # Given a pass that inpaints the whole picture (ad_inpaint_only_masked false), as 8 of StableNew's packs do
    config = example("full_pipeline.json")
    config["adetailer_config"] |= {
        "ad_inpaint_only_masked": False,
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": 1024,
        "ad_inpaint_height": 1024,
    }

    # When the request is built for a 384x256 image
    body = body_for(config, StageType.ADETAILER)

    # Then ADetailer's inpaint size is the request's width x height, which is the image's: it keeps its size
    (tab,) = body["alwayson_scripts"]["ADetailer"]["args"][2:]
    assert (body["width"], body["height"]) == (384, 256)
    assert tab["ad_inpaint_only_masked"] is False
    assert tab["ad_use_inpaint_width_height"] is False
    assert "ad_inpaint_width" not in tab and "ad_inpaint_height" not in tab


def test_inpainting_the_whole_picture_at_another_inpaint_size_is_refused_by_the_tab_check():
    tab = {
        "ad_model": "face_yolov8n.pt",
        "ad_inpaint_only_masked": False,
        "ad_use_inpaint_width_height": True,
    }

    (problem,) = validate_adetailer_tab(tab, path="adetailer.face")

    assert str(problem).startswith("adetailer.face.ad_use_inpaint_width_height: must be false")


def test_a_switched_off_tab_is_an_error_because_adetailer_would_skip_it():
    (problem,) = problems_of({"ad_tab_enable": False})

    assert problem.startswith("adetailer.face.ad_tab_enable: switches the pass off")


def test_an_adetailer_pass_without_a_detector_is_an_error():
    (problem,) = problems_of({}, model="None")

    assert problem.startswith("adetailer.face.ad_model:")


def test_every_adetailer_problem_is_reported_at_once():
    problems = problems_of({"ad_bogus": 1, "ad_confidence": 7, "ad_prompt": None})

    assert len(problems) == 3


def test_an_invalid_hands_pass_is_rejected_by_the_submit_time_check_with_its_path():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["adetailer"]["adetailer_hands_confidence"] = 0.3
    payload = payload_for(raw, StageType.ADETAILER)
    payload["config"]["hands"]["ad_args"] = {"ad_dilate_erode": "4"}

    with pytest.raises(ConfigError) as caught:
        validate_stage_payload(payload)

    assert [p.path for p in caught.value.problems] == ["adetailer.hands.ad_dilate_erode"]


def test_the_submit_time_check_accepts_both_example_configs():
    for name in ("full_pipeline.json", "stablenew_preset.json"):
        plan = plan_of(example(name))
        for index, stage in enumerate(plan):
            validate_stage_payload(build_stage_payload(stage, None, index=index))


# --- no payload ever carries a key A1111 does not know ---------------------------------------------------------


def _variant(name: str, change: Any) -> Any:
    def build() -> dict[str, Any]:
        raw = copy.deepcopy(example(name))
        change(raw)
        return raw

    return build


def _nested(section: str, **values: Any) -> Any:
    return lambda raw: raw["execution_config"][section].update(values)


def _flat(section: str, **values: Any) -> Any:
    return lambda raw: raw[section].update(values) if section in raw else raw.update(values)


CONFIG_VARIANTS = {
    "flat full pipeline (refiner step + hires scale)": _variant("full_pipeline.json", lambda raw: None),
    "nested preset (hands pass, ad_* passthrough)": _variant("stablenew_preset.json", lambda raw: None),
    "nested with img2img on": nested_with_img2img,
    "hires resize both sides": _variant(
        "stablenew_preset.json", _nested("txt2img", hr_resize_x=1536, hr_resize_y=1024)
    ),
    "hires resize one side": _variant("stablenew_preset.json", _nested("txt2img", hr_resize_y=1536)),
    "hires with its own sampler": _variant(
        "stablenew_preset.json", _nested("txt2img", hr_sampler_name="Euler a")
    ),
    "refiner as a fraction": _variant(
        "full_pipeline.json", lambda raw: raw.update(refiner_switch_step=None, refiner_switch_at=0.7)
    ),
    "vae, clip skip, styles, batch": _variant(
        "full_pipeline.json",
        _flat("txt2img_config", vae="vae.pt", clip_skip=2, styles=["cinematic"], batch_size=2, n_iter=2),
    ),
    "img2img with explicit size": _variant(
        "full_pipeline.json", _flat("img2img_config", width=512, height=512)
    ),
    "upscale to a target size with face restore": _variant(
        "full_pipeline.json",
        lambda raw: raw.update(
            upscale_config={
                "upscaler": "R-ESRGAN 4x+",
                "upscaling_resize_w": 2048,
                "upscaling_resize_h": 2048,
                "gfpgan_visibility": 0.4,
                "codeformer_visibility": 0.2,
                "codeformer_weight": 0.5,
                "upscaler_2": "Lanczos",
                "extras_upscaler_2_visibility": 0.5,
            }
        ),
    ),
    "full hands pass": _variant(
        "stablenew_preset.json",
        _nested(
            "adetailer",
            adetailer_hands_steps=20,
            adetailer_hands_cfg=5.5,
            adetailer_hands_sampler="Euler a",
            adetailer_hands_scheduler="Karras",
            adetailer_hands_prompt="hands",
            adetailer_hands_negative_prompt="extra fingers",
        ),
    ),
    "many ad_* passthroughs": _variant(
        "stablenew_preset.json",
        _nested(
            "adetailer",
            ad_mask_filter_method="Confidence",
            ad_mask_min_ratio=0.01,
            ad_mask_max_ratio=0.9,
            ad_dilate_erode=8,
            ad_mask_merge_invert="Merge",
            ad_mask_blur=6,
            ad_use_noise_multiplier=True,
            ad_noise_multiplier=1.1,
            ad_use_clip_skip=True,
            ad_clip_skip=2,
            ad_restore_face=False,
            ad_use_checkpoint=False,
            ad_checkpoint=None,
        ),
    ),
    "img2img first stage then upscale": _variant("img2img_upscale.json", lambda raw: None),
    "txt2img only": _variant("txt2img_only.json", lambda raw: None),
}


def all_bodies(config: dict[str, Any]) -> list[tuple[StageType, dict[str, Any]]]:
    plan = plan_of(config)
    bodies = []
    for stage_type in plan.get_stage_types():
        payload = payload_for(plan, stage_type)
        image = (payload["input_images"] or payload["config"].get("init_images") or [""])[0]
        if stage_type is StageType.TXT2IMG:
            bodies.append((stage_type, txt2img_body(payload)))
        elif stage_type is StageType.IMG2IMG:
            bodies.append((stage_type, img2img_body(payload, image)))
        elif stage_type is StageType.UPSCALE:
            bodies.append((stage_type, upscale_body(payload, image)))
        else:
            bodies.append((stage_type, adetailer_body(payload, image)))
    return bodies


ALLOWED = {
    StageType.TXT2IMG: A1111_TXT2IMG,
    StageType.IMG2IMG: A1111_IMG2IMG,
    StageType.UPSCALE: A1111_EXTRAS,
    StageType.ADETAILER: A1111_IMG2IMG,
}


@pytest.mark.parametrize("variant", CONFIG_VARIANTS, ids=list(CONFIG_VARIANTS))
def test_every_payload_builder_sends_only_keys_from_the_a1111_field_lists(variant):
    bodies = all_bodies(CONFIG_VARIANTS[variant]())

    assert bodies
    for stage_type, body in bodies:
        assert set(body) - ALLOWED[stage_type] == set(), stage_type
        assert set(body.get("override_settings") or {}) - A1111_OVERRIDE_OPTIONS == set(), stage_type
        scripts = body.get("alwayson_scripts") or {}
        assert set(scripts) <= {"ADetailer"}
        for tab in (scripts.get("ADetailer") or {}).get("args", [])[2:]:
            assert set(tab) - ADETAILER_ARGS == set(), stage_type


def test_the_field_list_check_covers_all_four_builders():
    """The variants above really exercise each builder, including the hires resize and refiner branches."""
    seen: dict[StageType, set[str]] = {}
    for build in CONFIG_VARIANTS.values():
        for stage_type, body in all_bodies(build()):
            seen.setdefault(stage_type, set()).update(body)
            for tab in (body.get("alwayson_scripts") or {}).get("ADetailer", {}).get("args", [])[2:]:
                seen.setdefault(StageType.ADETAILER, set()).update(f"tab.{key}" for key in tab)

    assert set(seen) == set(StageType)
    assert {"hr_resize_x", "hr_resize_y", "hr_scale", "refiner_switch_at"} <= seen[StageType.TXT2IMG]
    assert {"upscaling_resize_w", "upscaling_resize", "upscaler_2"} <= seen[StageType.UPSCALE]
    assert {"tab.ad_sampler", "tab.ad_mask_k", "tab.ad_noise_multiplier"} <= seen[StageType.ADETAILER]


# --- settings that must not leak from one job into the next ---------------------------------------------------


@pytest.mark.parametrize("stage_type", [StageType.TXT2IMG, StageType.IMG2IMG, StageType.ADETAILER])
def test_every_generation_request_resets_clip_skip_and_vae_when_the_config_sets_neither(stage_type):
    """A1111 keeps an earlier job's overrides (restore_afterwards is false): each request says its own."""
    config = example("full_pipeline.json")
    config["txt2img_config"].pop("model")

    overrides = body_for(config, stage_type)["override_settings"]

    assert (overrides["CLIP_stop_at_last_layers"], overrides["sd_vae"]) == (1, "Automatic")
    assert "sd_model_checkpoint" not in overrides


def test_a_vae_of_none_is_sent_as_none_not_automatic():
    config = example("txt2img_only.json")
    config["txt2img_config"]["vae"] = "None"

    assert body_for(config, StageType.TXT2IMG)["override_settings"]["sd_vae"] == "None"


def test_the_adetailer_pass_resets_clip_skip_and_vae_to_those_of_its_generation_stage():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"]["vae"] = "sdxl_vae.safetensors"

    overrides = body_for(raw, StageType.ADETAILER)["override_settings"]

    assert (overrides["CLIP_stop_at_last_layers"], overrides["sd_vae"]) == (2, "sdxl_vae.safetensors")


# --- refiner with hires ------------------------------------------------------------------------------------


def test_refiner_with_hires_asks_a1111_to_run_the_refiner_in_the_first_pass():
    """The switch point is a fraction of the txt2img steps; A1111's default would apply it to the hires pass."""
    body = body_for(example("full_pipeline.json"), StageType.TXT2IMG)

    assert body["override_settings"]["hires_fix_refiner_pass"] == "first pass"
    assert body["refiner_switch_at"] == 0.8
    assert body["enable_hr"] is True


@pytest.mark.parametrize(("refiner", "hires"), [(True, False), (False, True), (False, False)])
def test_without_both_refiner_and_hires_no_refiner_pass_option_is_sent(refiner, hires):
    config = example("full_pipeline.json")
    config |= {"refiner_enabled": refiner, "hires_enabled": hires}

    body = body_for(config, StageType.TXT2IMG)

    assert "hires_fix_refiner_pass" not in body["override_settings"]


# --- sampler names that carry a scheduler --------------------------------------------------------------------


def test_a_sampler_name_carrying_a_scheduler_is_sent_as_sampler_plus_scheduler():
    config = example("txt2img_only.json")
    config["txt2img_config"]["sampler_name"] = "DPM++ 2M Karras"

    body = body_for(config, StageType.TXT2IMG)

    assert (body["sampler_name"], body["scheduler"]) == ("DPM++ 2M", "Karras")


def test_a_queued_plan_with_a_joined_sampler_name_is_split_by_the_payload_builder():
    """A plan that did not come from the sequencer (the queue) may still say "DPM++ 2M Karras"."""
    data = plan_of(example("txt2img_only.json")).model_dump(mode="json")
    data["stages"][0]["config"] |= {"sampler_name": "Euler a Karras", "scheduler": None}
    plan = StageExecutionPlan.from_json(data)

    body = txt2img_body(payload_for(plan, StageType.TXT2IMG))

    assert (body["sampler_name"], body["scheduler"]) == ("Euler a", "Karras")


def test_a_queued_plan_whose_sampler_and_scheduler_disagree_is_refused_naming_the_field():
    data = plan_of(example("full_pipeline.json")).model_dump(mode="json")
    data["stages"][3]["config"]["base"] |= {"sampler_name": "DPM++ 2M Karras"}  # beside scheduler "Karras"
    adetailer = payload_for(StageExecutionPlan.model_validate(data), StageType.ADETAILER)
    adetailer["config"]["base"]["scheduler"] = "Exponential"  # past from_json: the builder still refuses

    with pytest.raises(ConfigError) as caught:
        adetailer_body(adetailer, PREVIOUS_IMAGE)

    assert [p.path for p in caught.value.problems] == ["adetailer.base.scheduler"]


def test_a_hires_sampler_carrying_a_scheduler_is_sent_as_hr_sampler_name_plus_hr_scheduler():
    """A1111 does not split hr_sampler_name: "Euler a Karras" there fails its hires pass with a 500."""
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"]["hr_sampler_name"] = "Euler a Karras"

    body = body_for(raw, StageType.TXT2IMG)

    assert (body["hr_sampler_name"], body["hr_scheduler"]) == ("Euler a", "Karras")


def test_a_plain_hires_sampler_sends_no_hr_scheduler_so_the_first_pass_scheduler_is_kept():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"]["hr_sampler_name"] = "Euler a"

    body = body_for(raw, StageType.TXT2IMG)

    assert body["hr_sampler_name"] == "Euler a"
    assert "hr_scheduler" not in body


@pytest.mark.parametrize(
    "ad_pass",
    [
        pytest.param({"sampler": "DPM++ 2M Karras"}, id="mapped-adetailer_sampler"),
        pytest.param({"ad_args": {"ad_use_sampler": True, "ad_sampler": "DPM++ 2M Karras"}}, id="ad_sampler"),
        pytest.param(
            {
                "ad_args": {
                    "ad_use_sampler": True,
                    "ad_sampler": "DPM++ 2M Karras",
                    "ad_scheduler": "Use same scheduler",
                }
            },
            id="ad_sampler-with-same-scheduler",
        ),
    ],
)
def test_an_adetailer_sampler_carrying_a_scheduler_is_sent_as_ad_sampler_plus_ad_scheduler(ad_pass):
    """ADetailer hands ad_sampler to A1111 as it is; its own default is the joined "DPM++ 2M Karras"."""
    tab = adetailer_tab(GOOD_PASS | ad_pass, path="adetailer.face")

    assert (tab["ad_use_sampler"], tab["ad_sampler"], tab["ad_scheduler"]) == (True, "DPM++ 2M", "Karras")


def test_an_adetailer_sampler_whose_scheduler_disagrees_with_ad_scheduler_is_an_error():
    problems = problems_of(
        {"ad_use_sampler": True, "ad_sampler": "DPM++ 2M Karras", "ad_scheduler": "Exponential"}
    )

    assert len(problems) == 1
    assert problems[0].startswith("adetailer.face.ad_scheduler: disagrees with the scheduler 'Karras'")


# --- limits ADetailer itself does not enforce ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ad_steps", 151, "must be <= 150"),
        ("ad_steps", 100_000, "must be <= 150"),
        ("ad_inpaint_width", 8193, "must be <= 8192"),
        ("ad_inpaint_height", 100_000, "must be <= 8192"),
        ("ad_cfg_scale", 31.0, "must be <= 30"),
        ("ad_dilate_erode", 129, "must be <= 128"),
        ("ad_dilate_erode", -129, "must be >= -128"),
        ("ad_x_offset", 201, "must be <= 200"),
        ("ad_y_offset", -201, "must be >= -200"),
        ("ad_mask_k", 101, "must be <= 100"),
        ("ad_mask_blur", 257, "must be <= 256"),
        ("ad_inpaint_only_masked_padding", 1025, "must be <= 1024"),
    ],
)
def test_an_adetailer_value_over_our_upper_bound_is_an_error_naming_the_bound(key, value, message):
    (problem,) = problems_of({key: value})

    assert problem.startswith(f"adetailer.face.{key}: {message}")


@pytest.mark.parametrize(
    ("key", "limit"), [("ad_prompt", 10_000), ("ad_negative_prompt", 10_000), ("ad_sampler", 512)]
)
def test_an_overlong_adetailer_string_is_an_error_that_does_not_echo_it(key, limit):
    (problem,) = problems_of({key: "x" * (limit + 1)})

    assert problem == f"adetailer.face.{key}: must be at most {limit} characters (got {limit + 1})"


def test_an_adetailer_prompt_of_exactly_the_limit_is_accepted():
    tab = adetailer_tab(GOOD_PASS | {"ad_args": {"ad_prompt": "x" * 10_000}}, path="adetailer.face")

    assert len(tab["ad_prompt"]) == 10_000


# --- output sizes checked once the input image is known -------------------------------------------------------


def test_an_upscale_whose_output_would_be_over_the_size_limit_is_refused_before_sending():
    """The config check knows the size only if every earlier size is known; a queued input may be larger."""
    config = example("full_pipeline.json")
    config["upscale_config"]["upscaling_resize"] = 4.0

    with pytest.raises(ConfigError) as caught:
        body_for(config, StageType.UPSCALE, image=png_b64(4104, 1024))  # -> 16416 wide

    (problem,) = caught.value.problems
    assert problem.path == "upscale.upscaling_resize"
    assert "16416x4096" in problem.message


def test_an_upscale_within_the_limit_is_sent():
    config = example("full_pipeline.json")
    config["upscale_config"]["upscaling_resize"] = 4.0

    body = body_for(config, StageType.UPSCALE, image=png_b64(4096, 2048))  # -> 16384 x 8192, the limit

    assert body["upscaling_resize"] == 4.0


def test_img2img_at_the_size_of_an_input_image_over_the_limit_is_refused():
    config = example("img2img_upscale.json")
    payload = payload_for(config, StageType.IMG2IMG)

    with pytest.raises(ConfigError) as caught:
        img2img_body(payload, png_b64(16392, 64))

    assert [p.path for p in caught.value.problems] == ["img2img.init_images"]


def test_img2img_with_only_one_side_in_a_queued_plan_is_refused_naming_it():
    payload = payload_for(example("full_pipeline.json"), StageType.IMG2IMG)
    payload["config"]["width"] = 512

    with pytest.raises(ConfigError) as caught:
        img2img_body(payload, PREVIOUS_IMAGE)

    assert [p.path for p in caught.value.problems] == ["img2img.width"]


# --- StableNew fields that are mapped -------------------------------------------------------------------------


def test_seed_resize_from_is_sent_when_both_sides_are_given():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"] |= {"seed_resize_from_w": 768, "seed_resize_from_h": 512}

    body = body_for(raw, StageType.TXT2IMG)

    assert (body["seed_resize_from_w"], body["seed_resize_from_h"]) == (768, 512)


def test_seed_resize_from_minus_one_is_not_sent():
    raw = example("stablenew_preset.json")
    raw["execution_config"]["txt2img"] |= {"seed_resize_from_w": -1, "seed_resize_from_h": -1}

    assert "seed_resize_from_w" not in body_for(raw, StageType.TXT2IMG)
