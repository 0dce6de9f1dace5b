"""ADetailer's own argument model (``ADetailerArgs``, ADetailer v25.3.0), as a table.

One source for the names: the config layer checks ``ad_*`` pass-throughs against it (an unknown name is an
unknown key, with a suggestion), the WebUI layer validates every tab it sends against its types and ranges
(ADetailer validates with ``extra=forbid`` and silently drops a tab that fails).
"""

from __future__ import annotations

from ._limits import MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SIDE, MAX_STEPS, MIN_SIDE

# ADetailerArgs (ADetailer v25.3.0): name -> (type, min, max); for a str, max is its length. None = unbounded.
# ADetailer's own schema has lower bounds only; the upper ones are ours: ADetailer's UI ranges, our config
# limits (steps, sizes, prompt length) and a name length, so an ``ad_*`` pass-through cannot exceed them.
_STR, _BOOL, _INT, _FLOAT = str, bool, int, float
_NAME = (_STR, None, MAX_NAME_CHARS)
ADETAILER_ARGS: dict[str, tuple[type, float | None, float | None]] = {
    "ad_model": _NAME,
    "ad_model_classes": (_STR, None, 1000),
    "ad_tab_enable": (_BOOL, None, None),
    "ad_prompt": (_STR, None, MAX_PROMPT_CHARS),
    "ad_negative_prompt": (_STR, None, MAX_PROMPT_CHARS),
    "ad_confidence": (_FLOAT, 0, 1),
    "ad_mask_filter_method": _NAME,
    "ad_mask_k": (_INT, 0, 100),
    "ad_mask_min_ratio": (_FLOAT, 0, 1),
    "ad_mask_max_ratio": (_FLOAT, 0, 1),
    "ad_dilate_erode": (_INT, -128, 128),
    "ad_x_offset": (_INT, -200, 200),
    "ad_y_offset": (_INT, -200, 200),
    "ad_mask_merge_invert": _NAME,
    "ad_mask_blur": (_INT, 0, 256),
    "ad_denoising_strength": (_FLOAT, 0, 1),
    "ad_inpaint_only_masked": (_BOOL, None, None),
    "ad_inpaint_only_masked_padding": (_INT, 0, 1024),
    "ad_use_inpaint_width_height": (_BOOL, None, None),
    "ad_inpaint_width": (_INT, MIN_SIDE, MAX_SIDE),
    "ad_inpaint_height": (_INT, MIN_SIDE, MAX_SIDE),
    "ad_use_steps": (_BOOL, None, None),
    "ad_steps": (_INT, 1, MAX_STEPS),
    "ad_use_cfg_scale": (_BOOL, None, None),
    "ad_cfg_scale": (_FLOAT, 0, 30),
    "ad_use_checkpoint": (_BOOL, None, None),
    "ad_checkpoint": _NAME,
    "ad_use_vae": (_BOOL, None, None),
    "ad_vae": _NAME,
    "ad_use_sampler": (_BOOL, None, None),
    "ad_sampler": _NAME,
    "ad_scheduler": _NAME,
    "ad_use_noise_multiplier": (_BOOL, None, None),
    "ad_noise_multiplier": (_FLOAT, 0.5, 1.5),
    "ad_use_clip_skip": (_BOOL, None, None),
    "ad_clip_skip": (_INT, 1, 12),
    "ad_restore_face": (_BOOL, None, None),
    "ad_controlnet_model": _NAME,
    "ad_controlnet_module": _NAME,
    "ad_controlnet_weight": (_FLOAT, 0, 1),
    "ad_controlnet_guidance_start": (_FLOAT, 0, 1),
    "ad_controlnet_guidance_end": (_FLOAT, 0, 1),
}
