"""Every key a config may carry: what it maps to, or why it is accepted and never sent.

A key that is neither is an error (a typo such as ``"stpes"`` would otherwise run with the default steps):
:func:`unknown_key_problems` names each one as written, with the closest known key of its section. The keys
StableNew's own presets and packs carry that we deliberately do not send are listed once, in
:data:`NOT_SENT` (one line of reason each; docs/configuration.md and docs/stablenew-keys.md say the same).

Sections StableNew keeps for its own features (prompt randomisation, aesthetic embeddings, video export...)
are accepted whole (:data:`KEPT_SECTIONS`): nothing in them is read, so nothing in them can change a request.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from stablenew.errors import FieldProblem

from ._adetailer_args import ADETAILER_ARGS
from ._config import Img2ImgSection, Txt2ImgSection, UpscaleSection

STAGES = ("txt2img", "img2img", "upscale", "adetailer")
NESTED_SECTIONS = (*STAGES, "pipeline", "hires_fix")
WRAPPER_KEYS = frozenset({"schema", "execution_config", "intent_config", "backend_options"})

# canonical field -> accepted names, in precedence order (first present wins)
GEN_ALIASES: dict[str, tuple[str, ...]] = {
    "model": ("model", "model_name", "sd_model", "sd_model_checkpoint"),
    "vae": ("vae", "vae_name", "sd_vae"),
    "sampler_name": ("sampler_name", "sampler"),
    "scheduler": ("scheduler", "scheduler_name"),
}
HIRES_ALIASES: dict[str, tuple[str, ...]] = {
    "enabled": ("hires_enabled", "enable_hr"),
    "scale": ("hires_scale_factor", "hr_scale"),
    "upscaler": ("hires_upscaler_name", "hr_upscaler"),
    "denoise": ("hires_denoise_strength", "hires_denoise", "denoising_strength"),
    "steps": ("hires_steps", "hr_second_pass_steps"),
    "resize_x": ("hr_resize_x",),
    "resize_y": ("hr_resize_y",),
    "sampler_name": ("hr_sampler_name", "hires_sampler_name"),
}
HIRES_FIX_KEYS = {
    "enabled": "enabled",
    "upscaler": "upscaler_name",
    "scale": "upscale_factor",
    "steps": "steps",
    "denoise": "denoise",
}
REFINER_ALIASES: dict[str, tuple[str, ...]] = {
    "enabled": ("refiner_enabled", "use_refiner"),
    "model_name": ("refiner_model_name", "refiner_checkpoint"),
    "switch_at": ("refiner_switch_at",),
    "switch_step": ("refiner_switch_step", "refiner_switch_steps"),
}
UPSCALE_ALIASES: dict[str, tuple[str, ...]] = {
    "upscaler": ("upscaler", "upscaler_1", "upscaler_name"),
    "upscaling_resize": ("upscaling_resize", "upscale_factor", "scale"),
    "resize_width": ("upscaling_resize_w", "resize_width"),
    "resize_height": ("upscaling_resize_h", "resize_height"),
    "upscaler_2": ("upscaler_2",),
    "upscaler_2_visibility": ("extras_upscaler_2_visibility", "upscaler_2_visibility"),
    "gfpgan_visibility": ("gfpgan_visibility",),
    "codeformer_visibility": ("codeformer_visibility",),
    "codeformer_weight": ("codeformer_weight",),
}
# StableNew's pass vocabulary (``adetailer_<key>``, ``adetailer_hands_<key>`` or bare) -> ADetailerPass field.
AD_PASS_KEYS: dict[str, str] = {
    "model": "model",
    "confidence": "confidence",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "denoise": "denoise",
    "steps": "steps",
    "cfg": "cfg",
    "sampler": "sampler",
    "scheduler": "scheduler",
    "padding": "padding",
    "mask_feather": "mask_feather",
    "inpaint_width": "inpaint_width",
    "inpaint_height": "inpaint_height",
}
AD_SWITCHES = ("enabled", "adetailer_enabled", "enable_hands_pass", "ad_hands_enabled", "enable_face_pass")
# ``ad_*`` names StableNew writes that are not ADetailer's: -> the ADetailer argument or pass field they mean.
AD_RENAMED = {"ad_mask_k_largest": "ad_mask_k"}  # renamed upstream
AD_PASS_SPELLINGS = {
    "ad_mask_feather": "mask_feather"
}  # StableNew's second spelling of adetailer_mask_feather
AD_HANDS_PREFIX = "ad_hands_"  # StableNew's hands tab: ad_hands_<x> is the hands pass's ad_<x>
AD_HANDS_ARGS = {"ad_hands_padding": "ad_inpaint_only_masked_padding"}

TOP = "<top>"
# Keys StableNew writes both at the top of a config and in its "pipeline" section, with one reason.
_WRITTEN_BOTH_PLACES: dict[str, str] = {
    "video_enabled": "StableNew's video export",
    "apply_global_negative_txt2img": "StableNew's global negative terms; prompts are sent as written",
    "apply_global_negative_img2img": "StableNew's global negative terms; prompts are sent as written",
    "apply_global_negative_upscale": "StableNew's global negative terms; prompts are sent as written",
    "apply_global_negative_adetailer": "StableNew's global negative terms; prompts are sent as written",
    "loop_type": "StableNew's batch loops; one config is one job here",
    "loop_count": "StableNew's batch loops; one config is one job here",
    "pack_mode": "StableNew's prompt packs; one config is one job here",
    "images_per_prompt": "StableNew's batching; use txt2img batch_size / n_iter",
    "model_matrix": "StableNew's model variants; one config is one job here",
    "hypernetworks": "StableNew's hypernetwork variants (an options write there)",
    "variant_mode": "StableNew's variants; one config is one job here",
    "output_dir": "StableNew's output folder; ours is STABLENEW_OUTPUT_DIR",
}


# Keys StableNew's presets and packs carry that we accept and never send: section -> key -> why.
NOT_SENT: dict[str, dict[str, str]] = {
    TOP: {
        **_WRITTEN_BOTH_PLACES,
        "lora_strengths": "StableNew's LoRA weights; LoRAs are written in the prompt here",
        "webui_options_write_enabled": "StableNew's switch for POST /options; we never write options",
        "randomization_enabled": "StableNew's prompt randomisation; prompts are sent as written",
        "max_variants": "StableNew's prompt randomisation; prompts are sent as written",
        "preset_name": "the preset's name in StableNew's GUI",
        "preset": "StableNew's GUI session: the preset last chosen",
        "selected_packs": "StableNew's GUI session: the packs last chosen",
        "override_pack": "StableNew's GUI session",
        "comfy_base_url": "StableNew's app settings (ComfyUI launcher)",
        "comfy_workdir": "StableNew's app settings (ComfyUI launcher)",
        "comfy_command": "StableNew's app settings (ComfyUI launcher)",
        "comfy_autostart_enabled": "StableNew's app settings (ComfyUI launcher)",
        "comfy_health_total_timeout_seconds": "StableNew's app settings (ComfyUI launcher)",
        "webui_base_url": "StableNew's app settings; the WebUI address comes from our settings",
        "webui_workdir": "StableNew's app settings (WebUI launcher)",
        "webui_autostart_enabled": "StableNew's app settings (WebUI launcher)",
        "webui_health_initial_timeout_seconds": "StableNew's app settings (WebUI launcher)",
        "webui_health_retry_count": "StableNew's app settings (WebUI launcher)",
        "webui_health_retry_interval_seconds": "StableNew's app settings (WebUI launcher)",
        "webui_health_total_timeout_seconds": "StableNew's app settings (WebUI launcher)",
        "model_dir": "StableNew's app settings (model folder)",
    },
    "txt2img": {
        "subseed": "variation seeds are not part of our plan",
        "subseed_strength": "variation seeds are not part of our plan",
        "hr_checkpoint_name": "StableNew's executor does not send it either; hires runs on the stage's model",
        "hires_use_base_model": "hires runs on the stage's model",
        "face_restoration_enabled": "StableNew's GUI setting, not in its txt2img request",
        "face_restoration_model": "StableNew's GUI setting, not in its txt2img request",
        "face_restoration_weight": "StableNew's GUI setting, not in its txt2img request",
        "hypernetwork": "StableNew writes it as a WebUI option; we never write options",
        "hypernetwork_strength": "StableNew writes it as a WebUI option; we never write options",
    },
    "img2img": {
        "prompt_adjust": "StableNew appends it to the prompt; write the img2img prompt instead",
        "negative_adjust": "StableNew appends it to the negative prompt; write it instead",
        "mask_mode": "inpainting: accepted only when it asks for no mask (a mask is refused)",
        "mask_image_path": "inpainting: accepted only when empty (a mask is refused)",
        "mask_blur": "inpainting: accepted only when 0 (a mask is refused)",
        "hypernetwork": "StableNew writes it as a WebUI option; we never write options",
        "hypernetwork_strength": "StableNew writes it as a WebUI option; we never write options",
    },
    "upscale": {
        "steps": "used only by StableNew's img2img upscale mode; only 'single' runs here",
        "denoising_strength": "used only by StableNew's img2img upscale mode",
        "sampler_name": "used only by StableNew's img2img upscale mode",
        "scheduler": "used only by StableNew's img2img upscale mode",
        "tile_size": "StableNew's GUI setting, not in the extras request",
        "face_restore": "StableNew's GUI setting; use gfpgan_visibility / codeformer_visibility",
        "face_restore_method": "StableNew's GUI setting; use gfpgan_visibility / codeformer_visibility",
        **{
            f"upscale_{name}": "a tiled img2img upscale setting; only 'single' runs here"
            for name in (
                "overlap",
                "tile_width",
                "tile_height",
                "seams_fix",
                "seams_fix_width",
                "seams_fix_denoise",
                "seams_fix_padding",
                "seams_fix_mask_blur",
                "face_restoration_enabled",
                "face_restoration_model",
                "face_restoration_weight",
                "sampler_name",
                "scheduler",
            )
        },
    },
    "adetailer": {
        "face_model": "a GUI copy of adetailer_model (which is sent)",
        "face_padding": "a GUI copy of adetailer_padding (which is sent)",
        "hands_model": "a GUI copy of adetailer_hands_model (which is sent)",
        "hands_padding": "a GUI copy of ad_hands_padding (which is sent)",
        "max_detections": "a GUI setting; ad_mask_k is what ADetailer reads",
        "mask_blur": "a GUI copy of ad_mask_blur",
        "mask_merge_mode": "a GUI copy of ad_mask_merge_invert",
        "mask_filter_method": "a GUI copy of ad_mask_filter_method",
        "mask_k_largest": "a GUI copy of ad_mask_k_largest",
        "mask_min_ratio": "a GUI copy of ad_mask_min_ratio",
        "mask_max_ratio": "a GUI copy of ad_mask_max_ratio",
        "mask_dilate_erode": "a GUI copy of ad_dilate_erode",
        "only_faces": "a GUI switch; the passes say what runs",
        "only_hands": "a GUI switch; the passes say what runs",
        "adetailer_checkpoint_model": "StableNew's model override for the stage; the pass uses the stage's model",
    },
    "pipeline": {
        **_WRITTEN_BOTH_PLACES,
        "n_iter": "StableNew's batching; use txt2img batch_size / n_iter",
        "output_route": "StableNew's output routing",
        "filename_pattern": "StableNew's file naming; ours is fixed (see the run manifest)",
        "image_format": "StableNew's file format; the WebUI's PNG is stored as it comes",
        "seed_mode": "StableNew's seed handling across a batch; the stage's seed is sent",
        "allow_hr_with_stages": "StableNew's GUI rule; hires follows txt2img's enable_hr here",
        "refiner_compare_mode": "StableNew's side-by-side comparison runs",
    },
    "hires_fix": {
        "use_base_model": "hires runs on the stage's model",
        "hires_use_base_model": "hires runs on the stage's model",
        **{
            f"hires_{name}": "a second copy StableNew keeps; the short name beside it is read"
            for name in ("enabled", "upscaler_name", "upscale_factor", "steps", "denoise")
        },
    },
}
# Whole sections StableNew keeps for features of its own; nothing in them is read.
KEPT_SECTIONS: dict[str, str] = {
    "randomization": "StableNew's prompt randomisation (wildcards, matrix); prompts are sent as written",
    "aesthetic": "StableNew's aesthetic embedding; prompts are sent as written",
    "prompt_optimizer": "StableNew's prompt rewriting; prompts are sent as written",
    "video": "StableNew's video export",
    "meta": "the pack's metadata",
    "metadata": "the pack's metadata",
    "api": "StableNew's own WebUI address; ours comes from our settings",
    "pipeline_controls": "an older copy of StableNew's pipeline switches; the `pipeline` section is read",
    "config": "StableNew's GUI session (last_settings.json)",
}

Shape = Literal["flat", "nested"]


def _names(aliases: Mapping[str, tuple[str, ...]]) -> set[str]:
    return {name for names in aliases.values() for name in names}


def _ad_hands_name(arg: str) -> str:
    return AD_HANDS_PREFIX + arg.removeprefix("ad_")


@functools.cache
def section_keys(section: str, shape: Shape) -> frozenset[str]:
    """Every key ``section`` (a stage, ``pipeline``, ``hires_fix`` or ``<top>``) may carry in ``shape``."""
    flags = {"enabled", f"{section}_enabled"} if shape == "nested" else set()
    keys: set[str] = set(NOT_SENT.get(section, {}))
    if section in ("txt2img", "img2img"):
        model = Txt2ImgSection if section == "txt2img" else Img2ImgSection
        keys |= set(model.model_fields) | _names(GEN_ALIASES) | flags
        if section == "txt2img":
            keys |= _names(HIRES_ALIASES) | _names(REFINER_ALIASES)
    elif section == "upscale":
        keys |= set(UpscaleSection.model_fields) | _names(UPSCALE_ALIASES) | flags
    elif section == "adetailer":
        keys |= set(AD_SWITCHES[2:]) | flags
        keys |= set(AD_PASS_KEYS) | {f"adetailer_{k}" for k in AD_PASS_KEYS}
        keys |= {f"adetailer_hands_{k}" for k in AD_PASS_KEYS}
        keys |= set(ADETAILER_ARGS) | set(AD_RENAMED) | set(AD_PASS_SPELLINGS) | set(AD_HANDS_ARGS)
        keys |= {_ad_hands_name(arg) for arg in (*ADETAILER_ARGS, *AD_RENAMED, *AD_PASS_SPELLINGS)}
    elif section == "pipeline":
        keys |= {f"{stage}_enabled" for stage in STAGES}
    elif section == "hires_fix":
        keys |= set(HIRES_FIX_KEYS.values())
    elif section == TOP:
        keys |= {f"{stage}_enabled" for stage in STAGES} | {"callback_url"} | set(KEPT_SECTIONS)
        keys |= _names(HIRES_ALIASES) | _names(REFINER_ALIASES)
        keys |= set(NESTED_SECTIONS) if shape == "nested" else {f"{stage}_config" for stage in STAGES}
    return frozenset(keys)


def unknown_key(path: str, key: str, known: Iterable[str]) -> FieldProblem:
    """``path`` is not a known key; the closest known key of its section is suggested (difflib)."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return FieldProblem(path, f"is not a known key{hint}", has_value=False)


def unknown_key_problems(body: Mapping[str, Any], shape: Shape, *, prefix: str = "") -> list[FieldProblem]:
    """Every key of ``body`` (an unwrapped config of ``shape``) this project does not know, in file order."""
    problems: list[FieldProblem] = []
    top = section_keys(TOP, shape)
    sections = {s: s for s in NESTED_SECTIONS} if shape == "nested" else {f"{s}_config": s for s in STAGES}
    for key, value in body.items():
        if key not in top:
            problems.append(unknown_key(f"{prefix}{key}", key, top))
        elif key in sections and isinstance(value, Mapping):
            known = section_keys(sections[key], shape)
            problems += [unknown_key(f"{prefix}{key}.{k}", k, known) for k in value if k not in known]
    return problems


def wrapper_problems(raw: Mapping[str, Any]) -> list[FieldProblem]:
    """Unknown keys of the v2.6 wrapper itself (``schema``, ``execution_config``, ...)."""
    return [unknown_key(key, key, WRAPPER_KEYS) for key in raw if key not in WRAPPER_KEYS]
