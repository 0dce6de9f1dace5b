"""The A1111 v1.10.1 API as the simulator speaks it: names it ships with, response and error shapes, infotext.

Everything here is data and pure functions; :class:`~stablenew.simulator.SimulatedWebUI` serves it (see
``docs/webui-api.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

A1111_VERSION = "v1.10.1"
ADETAILER_VERSION = "25.3.0"
DEFAULT_MODELS = (
    "sd_xl_base_1.0.safetensors [31e35c80fc]",
    "sd_xl_refiner_1.0.safetensors [7440042bbd]",
    "v1-5-pruned-emaonly.safetensors [6ce0161689]",
)
# A1111 v1.10.1's samplers, in its order (the first is what an unknown name silently becomes). Since v1.9 no name
# carries a scheduler ("DPM++ 2M Karras" is "DPM++ 2M" + scheduler "Karras"); see Catalog.resolve_sampler.
DEFAULT_SAMPLERS = (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC",
    "LCM",
)  # fmt: skip
# A1111 v1.10.1's schedulers (modules/sd_schedulers.py), in its order: name -> (label, aliases).
SCHEDULERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "automatic": ("Automatic", ()), "uniform": ("Uniform", ()), "karras": ("Karras", ()),
    "exponential": ("Exponential", ()), "polyexponential": ("Polyexponential", ()),
    "sgm_uniform": ("SGM Uniform", ("SGMUniform",)), "kl_optimal": ("KL Optimal", ()),
    "align_your_steps": ("Align Your Steps", ()), "simple": ("Simple", ()), "normal": ("Normal", ()),
    "ddim": ("DDIM", ()), "beta": ("Beta", ()),
}  # fmt: skip
DEFAULT_SCHEDULERS = tuple(SCHEDULERS)
DEFAULT_VAES = ("sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors")
DEFAULT_UPSCALERS = (
    "None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "ESRGAN_4x", "4x-UltraSharp", "SwinIR 4x",
)  # fmt: skip
LATENT_UPSCALE_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (nearest-exact)")
DEFAULT_ADETAILER_MODELS = (
    "face_yolov8n.pt", "face_yolov8s.pt", "hand_yolov8n.pt", "person_yolov8n-seg.pt", "person_yolov8s-seg.pt",
    "mediapipe_face_full", "mediapipe_face_short", "mediapipe_face_mesh", "mediapipe_face_mesh_eyes_only",
)  # fmt: skip
# fmt: off
ADETAILER_ARG_KEYS = frozenset((
    "ad_model", "ad_model_classes", "ad_tab_enable", "ad_prompt", "ad_negative_prompt", "ad_confidence",
    "ad_mask_filter_method", "ad_mask_k", "ad_mask_min_ratio", "ad_mask_max_ratio", "ad_dilate_erode",
    "ad_x_offset", "ad_y_offset", "ad_mask_merge_invert", "ad_mask_blur", "ad_denoising_strength",
    "ad_inpaint_only_masked", "ad_inpaint_only_masked_padding", "ad_use_inpaint_width_height", "ad_inpaint_width",
    "ad_inpaint_height", "ad_use_steps", "ad_steps", "ad_use_cfg_scale", "ad_cfg_scale", "ad_use_checkpoint",
    "ad_checkpoint", "ad_use_vae", "ad_vae", "ad_use_sampler", "ad_sampler", "ad_scheduler",
    "ad_use_noise_multiplier", "ad_noise_multiplier", "ad_use_clip_skip", "ad_clip_skip", "ad_restore_face",
    "ad_controlnet_model", "ad_controlnet_module", "ad_controlnet_weight", "ad_controlnet_guidance_start",
    "ad_controlnet_guidance_end",
))
# Options a request's override_settings may name (a few of A1111 v1.10.1's shared_options.py, those StableNew
# and its tests use); any other key with a non-null value fails the request as A1111's Options.set does.
A1111_OPTIONS = frozenset((
    "sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "hires_fix_refiner_pass",
    "refiner_switch_by_sample_steps", "samples_format", "samples_save", "outdir_samples", "eta_noise_seed_delta",
    "sd_vae_overrides_per_model_preferences", "img2img_fix_steps", "randn_source", "token_merging_ratio",
))
MEMORY = {
    "ram": {"free": 48e9, "used": 16e9, "total": 64e9},
    "cuda": {"system": {"free": 20e9, "used": 4e9, "total": 24e9}, "events": {"retries": 0, "oom": 0}},
}
# fmt: on
GENERATION_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image")

_T = TypeVar("_T", int, float)


@dataclass
class Response:
    """One answer to write back: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str]


class HTTPError(Exception):
    """Stop handling a request and answer ``payload`` as JSON with ``status``."""

    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.response = json_response(status, payload, headers)


class Dropped(Exception):
    """Close the connection without writing a response."""


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers or {})


def a1111_error(status: int, error: str, errors: str, detail: str = "") -> HTTPError:
    """The shape of A1111's catch-all exception handler."""
    return HTTPError(status, {"error": error, "detail": detail, "body": "", "errors": errors})


def http_exception(status: int, detail: str) -> HTTPError:
    return a1111_error(status, "HTTPException", f"{status}: {detail}", detail)


def validation_error(loc: list[Any], msg: str, kind: str) -> HTTPError:
    """FastAPI's request validation shape (422)."""
    return HTTPError(422, {"detail": [{"loc": loc, "msg": msg, "type": kind}]})


def num(body: dict[str, Any], key: str, default: _T, kind: type[_T]) -> _T:
    """``body[key]`` coerced as FastAPI would (``default`` when absent or null), else a 422."""
    value = body.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, bool | int | float | str):
            return kind(value)
    except ValueError:
        pass
    name = kind.__name__
    raise validation_error(["body", key], f"value is not a valid {name}", f"type_error.{name}")


def _quote(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, str) and any(c in value for c in ",\n:") else value


def infotext(prompt: str, negative: str, params: dict[str, Any]) -> str:
    """A1111's ``parameters`` text: prompt, negative prompt, then ``Key: value`` pairs (None ones left out)."""
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value is not None)
    return prompt + (f"\nNegative prompt: {negative}" if negative else "") + "\n" + line


def _script_arg(label: str | None, value: Any) -> dict[str, Any]:
    return {"label": label, "value": value, "minimum": None, "maximum": None, "step": None, "choices": None}


def script_info(adetailer_max_tabs: int) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/script-info`` as a WebUI with ADetailer answers it (its entries only): one per tab kind,
    ``args`` one per UI component (the enable accordion, "Skip img2img", one state per tab)."""
    args = [_script_arg("ADetailer", False), _script_arg("Skip img2img", False)]
    args += [_script_arg(None, None) for _ in range(adetailer_max_tabs)]
    return [
        {"name": "adetailer", "is_alwayson": True, "is_img2img": is_img2img, "args": args}
        for is_img2img in (False, True)
    ]
