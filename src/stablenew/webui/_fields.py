"""What A1111's routes take: each stage's route, the fields of its request body, and the sampler and
scheduler a config asks for.

The WebUI ignores unknown keys and silently replaces unknown names (docs/webui-api.md, "Silent
failures"), so :func:`check_fields` refuses a body with a key outside its route's list before it leaves.
A sampler name that carries a scheduler ("DPM++ 2M Karras") is split into the two names a request sends
(:func:`sampler_and_scheduler`), which preflight checks and the payload builders send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import SamplerSchedulerConflict, resolve_sampler

TXT2IMG_FIELDS = frozenset(
    """prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h seed_resize_from_w
    sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces tiling
    do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin s_noise
    override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at
    disable_extra_networks firstpass_image comments enable_hr firstphase_width firstphase_height hr_scale
    hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler
    hr_prompt hr_negative_prompt force_task_id sampler_index script_name script_args send_images save_images
    alwayson_scripts infotext""".split()
)
_SHARED_PREFIX = """prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h
    seed_resize_from_w sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces
    tiling do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin
    s_noise override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at
    disable_extra_networks firstpass_image comments""".split()
IMG2IMG_FIELDS = frozenset(
    _SHARED_PREFIX
    + """init_images resize_mode image_cfg_scale mask mask_blur_x mask_blur_y mask_blur mask_round
    inpainting_fill inpaint_full_res inpaint_full_res_padding inpainting_mask_invert initial_noise_multiplier
    latent_mask force_task_id sampler_index include_init_images script_name script_args send_images
    save_images alwayson_scripts infotext""".split()
)
EXTRAS_FIELDS = frozenset(
    """resize_mode show_extras_results gfpgan_visibility codeformer_visibility codeformer_weight
    upscaling_resize upscaling_resize_w upscaling_resize_h upscaling_crop upscaler_1 upscaler_2
    extras_upscaler_2_visibility upscale_first image""".split()
)

STAGE_ROUTES = {
    "txt2img": "/sdapi/v1/txt2img",
    "img2img": "/sdapi/v1/img2img",
    "upscale": "/sdapi/v1/extra-single-image",
    "adetailer": "/sdapi/v1/img2img",
}

DEFAULT_SAMPLER = "DPM++ 2M"
USE_SAME_SCHEDULER = "Use same scheduler"  # ADetailer's ad_scheduler default


def check_fields(body: Mapping[str, Any], allowed: frozenset[str], route: str) -> None:
    """Refuse a body with a key A1111 does not know (it would be silently ignored)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(f"payload for {route} has keys A1111 does not know: {unknown}")


def sampler_and_scheduler(config: Mapping[str, Any], *, path: str) -> tuple[str, str | None]:
    """The sampler and scheduler a generation config asks for, a scheduler carried by the name split off.

    Raises:
        ConfigError: the name's scheduler disagrees with the given one (naming ``{path}.scheduler``).
    """
    given = config.get("scheduler")
    try:
        sampler, scheduler = resolve_sampler(config.get("sampler_name") or DEFAULT_SAMPLER, given)
    except SamplerSchedulerConflict as exc:
        raise ConfigError([FieldProblem(f"{path}.scheduler", str(exc), given)]) from None
    return sampler or DEFAULT_SAMPLER, scheduler


def hires_sampler_and_scheduler(hires: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``hr_sampler_name`` and ``hr_scheduler``: None = the first pass's (A1111's "Use same ...")."""
    return resolve_sampler(hires.get("sampler_name") or None, None)
