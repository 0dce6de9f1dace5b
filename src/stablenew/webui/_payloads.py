"""Neutral stage payload -> AUTOMATIC1111 request body. Pure functions, one per stage.

The WebUI ignores unknown keys and silently replaces unknown names (docs/webui-api.md, "Silent
failures"), so every body here is built only from A1111's own field lists below, and
:func:`check_fields` refuses anything else before a request leaves. Decisions that matter:

- ``sampler_name`` is always sent (omitted = "Euler", unknown = "DPM++ 2M", both silent). A name that
  carries a scheduler ("DPM++ 2M Karras", gone from A1111's sampler list since v1.9) is sent split,
  as ``sampler_name`` + ``scheduler`` (``hr_sampler_name`` + ``hr_scheduler``, ``ad_sampler`` +
  ``ad_scheduler``), so preflight can check both names and the request says what runs. A scheduler
  given beside such a name must agree with it (:func:`~stablenew.pipeline.resolve_sampler`).
- Per-job settings go in ``override_settings`` (never ``POST /options``), with
  ``override_settings_restore_afterwards: false`` so consecutive jobs on one model keep it warm. That
  flag also leaves every other override in A1111's memory for the next request, so every
  txt2img/img2img/ADetailer request carries ``override_settings``, always with
  ``CLIP_stop_at_last_layers`` (the config's clip skip, else 1) and ``sd_vae`` (the config's VAE, else
  "Automatic"): a job that sets clip skip 2 or a VAE can no longer leak it into the next job, and the
  recorded request says what ran. ``sd_model_checkpoint`` is sent when the config names a model; without
  one the job runs on whatever checkpoint is loaded (A1111 reports it in ``info.sd_model_name``).
- Hires always sends ``denoising_strength`` (A1111 fails with 500 without it) and
  ``hr_sampler_name: null`` for "same sampler" (the string "Use same sampler" fails with 500).
- The refiner switch is a fraction in (0, 1) (``refiner_switch_at``); a step was converted to
  ``step / steps`` by the config layer. By default A1111 compares that fraction with the model's timestep
  ratio, not with the sampling steps (Karras at 30 steps and 0.8 switches at step 19, not 24), so a switch
  configured as a step sends ``override_settings.refiner_switch_by_sample_steps: true``, and a fraction
  (a StableNew preset's ``refiner_switch_at``, A1111's own slider) sends it false. The option persists like
  every override, so each refiner request sends it either way. With hires on as well, A1111's option ``hires_fix_refiner_pass``
  decides which pass the refiner joins; its default, "second pass", would apply the fraction to the
  hires steps and leave the first pass without refiner. The config means the first pass, so such a
  request sends ``override_settings.hires_fix_refiner_pass: "first pass"`` (choices: "first pass",
  "second pass", "both passes"): the refiner takes over at the switch point of the first pass, and the
  hires pass runs on the base checkpoint again (A1111 reloads it before the second pass).
- ADetailer runs on img2img with ``skip_img2img`` on: ``args = [true, true, tab, ...]`` (both
  booleans first, else ADetailer also runs its default tab), an explicit inpaint size around each
  mask (``ad_inpaint_only_masked``, the default), or the image's own size when the whole picture is
  inpainted (``ad_inpaint_only_masked: false``), never a ``mask``. A tab ADetailer would skip
  (``ad_tab_enable: false``, ``ad_model: "None"``) is refused: with no live tab ADetailer turns itself
  off and the request runs as a plain img2img at its own denoise. Each tab is validated against ADetailer's
  schema (``extra=forbid`` upstream: a bad tab is silently disabled there, an error here), plus our
  own upper bounds (steps, sizes, prompt lengths) that ADetailer does not have.
- Output sizes known only once the input image is there (img2img at its input's size, an upscale by a
  factor) are checked against the config limits here, before the request is sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import (
    ADETAILER_ARGS,
    SamplerSchedulerConflict,
    resolve_sampler,
    size_problems,
)
from stablenew.webui._images import image_size

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

_NULLABLE_ARGS = frozenset({"ad_checkpoint", "ad_vae"})
_ARG_CHOICES = {
    "ad_mask_filter_method": ("Area", "Confidence"),
    "ad_mask_merge_invert": ("None", "Merge", "Merge and Invert"),
}

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_CLIP_SKIP = 1
DEFAULT_VAE = "Automatic"
# The option that makes refiner_switch_at a fraction of the sampling steps (A1111: of the model's timesteps).
REFINER_BY_STEPS = "refiner_switch_by_sample_steps"
# hires_fix_refiner_pass when refiner and hires are both on: the refiner switch is within the first pass.
REFINER_WITH_HIRES = "first pass"
USE_SAME_SCHEDULER = "Use same scheduler"  # ADetailer's ad_scheduler default


def check_fields(body: Mapping[str, Any], allowed: frozenset[str], route: str) -> None:
    """Refuse a body with a key A1111 does not know (it would be silently ignored)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(f"payload for {route} has keys A1111 does not know: {unknown}")


def _override_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every generation request's overrides: clip skip and VAE always, so none leaks from an earlier job."""
    settings: dict[str, Any] = {}
    if config.get("model"):
        settings["sd_model_checkpoint"] = config["model"]
    settings["sd_vae"] = config.get("vae") or DEFAULT_VAE
    settings["CLIP_stop_at_last_layers"] = config.get("clip_skip") or DEFAULT_CLIP_SKIP
    return settings


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


def _generation_common(config: Mapping[str, Any], seed: int, *, path: str) -> dict[str, Any]:
    sampler, scheduler = sampler_and_scheduler(config, path=path)
    body: dict[str, Any] = {
        "prompt": config.get("prompt") or "",
        "negative_prompt": config.get("negative_prompt") or "",
        "seed": seed,
        "sampler_name": sampler,
        "batch_size": config.get("batch_size", 1),
        "n_iter": config.get("n_iter", 1),
        "steps": config["steps"],
        "cfg_scale": config["cfg_scale"],
        "send_images": True,
        "save_images": False,
    }
    if scheduler:
        body["scheduler"] = scheduler
    if config.get("styles"):
        body["styles"] = list(config["styles"])
    resize_w, resize_h = config.get("seed_resize_from_w") or -1, config.get("seed_resize_from_h") or -1
    if resize_w > 0 and resize_h > 0:  # A1111 uses them only as a pair
        body["seed_resize_from_w"], body["seed_resize_from_h"] = resize_w, resize_h
    body["override_settings"] = _override_settings(config)
    body["override_settings_restore_afterwards"] = False
    return body


def txt2img_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /sdapi/v1/txt2img`` body: generation fields + hires + refiner metadata."""
    config = payload["config"]
    body = _generation_common(config, config.get("seed", -1), path="txt2img")
    body["width"] = config["width"]
    body["height"] = config["height"]
    hires = payload.get("hires")
    if hires:
        body["enable_hr"] = True
        if hires.get("resize_x") or hires.get("resize_y"):
            # A1111 derives a side given as 0 from the aspect ratio; hr_scale is then ignored.
            body["hr_resize_x"] = hires.get("resize_x") or 0
            body["hr_resize_y"] = hires.get("resize_y") or 0
        else:
            body["hr_scale"] = hires["scale"]
        body["hr_upscaler"] = hires["upscaler"]
        body["hr_second_pass_steps"] = hires.get("second_pass_steps") or 0
        body["denoising_strength"] = hires["denoise"]
        hr_sampler, hr_scheduler = hires_sampler_and_scheduler(hires)
        body["hr_sampler_name"] = hr_sampler  # None = same sampler
        if hr_scheduler:  # unsent = the first pass's scheduler
            body["hr_scheduler"] = hr_scheduler
    refiner = payload.get("refiner")
    if refiner:
        body["refiner_checkpoint"] = refiner["model_name"]
        body["refiner_switch_at"] = refiner["switch_at"]
        # A1111 compares the fraction with the model's timestep ratio unless this option is on; it
        # persists (restore_afterwards is false), so every refiner request says which one it means.
        body["override_settings"][REFINER_BY_STEPS] = refiner.get("switch_step") is not None
        if hires:
            body["override_settings"]["hires_fix_refiner_pass"] = REFINER_WITH_HIRES
    check_fields(body, TXT2IMG_FIELDS, "txt2img")
    return body


def _chained_seed(config: Mapping[str, Any], payload: Mapping[str, Any]) -> int:
    """A stage's own seed, else the previous stage's resolved seed (reproducible chains)."""
    seed = config.get("seed")
    seed = -1 if seed is None else seed
    if seed == -1 and isinstance(payload.get("input_seed"), int):
        return int(payload["input_seed"])
    return int(seed)


def _check_output(size: tuple[int, int], field: str, value: Any) -> None:
    problems = size_problems(size)
    if problems:
        raise ConfigError([FieldProblem(field, problem, value) for problem in problems])


def img2img_body(payload: Mapping[str, Any], image: str) -> dict[str, Any]:
    """``POST /sdapi/v1/img2img`` body for one input image; size defaults to the image's size.

    Raises:
        ConfigError: only one of width/height is given, or the image's size is over the output limits.
    """
    config = payload["config"]
    body = _generation_common(config, _chained_seed(config, payload), path="img2img")
    width, height = config.get("width"), config.get("height")
    if bool(width) != bool(height):
        given = "width" if width else "height"
        raise ConfigError(
            [FieldProblem(f"img2img.{given}", "must be given with the other side", width or height)]
        )
    if not width or not height:
        width, height = image_size(image)
        _check_output((width, height), "img2img.init_images", f"{width}x{height}")
    body |= {
        "init_images": [image],
        "denoising_strength": config["denoising_strength"],
        "width": width,
        "height": height,
    }
    check_fields(body, IMG2IMG_FIELDS, "img2img")
    return body


def upscale_body(payload: Mapping[str, Any], image: str) -> dict[str, Any]:
    """``POST /sdapi/v1/extra-single-image`` body for one image.

    Raises:
        ConfigError: the upscaled image would be over the output limits.
    """
    config = payload["config"]
    body: dict[str, Any] = {
        "image": image,
        "upscaler_1": config["upscaler"],
        "upscaler_2": config.get("upscaler_2") or "None",
        "extras_upscaler_2_visibility": config.get("upscaler_2_visibility", 0.0),
        "gfpgan_visibility": config.get("gfpgan_visibility", 0.0),
        "codeformer_visibility": config.get("codeformer_visibility", 0.0),
        "codeformer_weight": config.get("codeformer_weight", 0.0),
        "show_extras_results": True,
    }
    if config.get("resize_width") and config.get("resize_height"):
        body |= {
            "resize_mode": 1,
            "upscaling_resize_w": config["resize_width"],
            "upscaling_resize_h": config["resize_height"],
            "upscaling_crop": True,
        }
        _check_output(
            (config["resize_width"], config["resize_height"]), "upscale.resize_width", config["resize_width"]
        )
    else:
        factor = config["upscaling_resize"]
        body |= {"resize_mode": 0, "upscaling_resize": factor}
        width, height = image_size(image)
        size = (int(width * factor) // 8 * 8, int(height * factor) // 8 * 8)  # A1111 floors to multiples of 8
        _check_output(size, "upscale.upscaling_resize", factor)
    check_fields(body, EXTRAS_FIELDS, "extra-single-image")
    return body


def adetailer_tab(ad_pass: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """One ADetailer tab from a StableNew pass (``adetailer_*`` names) plus ``ad_*`` pass-throughs.

    With ``ad_inpaint_only_masked: false`` (inpaint the whole picture), ADetailer with skip img2img
    stretches the whole image to the inpaint size and returns it at that size (``docs/webui-api.md``): the
    tab then leaves ``ad_use_inpaint_width_height`` off, so the inpaint size is the request's own width and
    height, which :func:`adetailer_body` sets to the input image's size. The image keeps its size.

    Raises:
        ConfigError: the tab would be silently disabled by ADetailer (unknown key, null string,
            out-of-range value, wrong type), or asks for something that breaks skip-img2img.
    """
    tab: dict[str, Any] = {
        "ad_model": ad_pass["model"],
        "ad_confidence": ad_pass["confidence"],
        "ad_prompt": ad_pass.get("prompt") or "",
        "ad_negative_prompt": ad_pass.get("negative_prompt") or "",
        "ad_denoising_strength": ad_pass["denoise"],
        "ad_mask_blur": ad_pass["mask_feather"],
        "ad_inpaint_only_masked": True,
        "ad_inpaint_only_masked_padding": ad_pass["padding"],
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": ad_pass["inpaint_width"],
        "ad_inpaint_height": ad_pass["inpaint_height"],
    }
    if ad_pass.get("steps") is not None:
        tab |= {"ad_use_steps": True, "ad_steps": ad_pass["steps"]}
    if ad_pass.get("cfg") is not None:
        tab |= {"ad_use_cfg_scale": True, "ad_cfg_scale": ad_pass["cfg"]}
    if ad_pass.get("sampler"):
        tab |= {"ad_use_sampler": True, "ad_sampler": ad_pass["sampler"]}
        if ad_pass.get("scheduler"):
            tab["ad_scheduler"] = ad_pass["scheduler"]
    tab |= dict(ad_pass.get("ad_args") or {})
    if tab.get("ad_inpaint_only_masked") is False:
        # the request's width x height (the image's) is the inpaint size; any other would resize the image
        tab["ad_use_inpaint_width_height"] = False
        for key in ("ad_inpaint_width", "ad_inpaint_height"):
            tab.pop(key, None)
    problems = _split_ad_sampler(tab, path=path) + validate_adetailer_tab(tab, path=path)
    if problems:
        raise ConfigError(problems)
    return tab


def _split_ad_sampler(tab: dict[str, Any], *, path: str) -> list[FieldProblem]:
    """``ad_sampler: "DPM++ 2M Karras"`` -> ``ad_sampler: "DPM++ 2M"`` + ``ad_scheduler: "Karras"``.

    ADetailer (25.x) hands ``ad_sampler`` and ``ad_scheduler`` to A1111's processing as they are; its own
    default ``ad_sampler`` is the joined "DPM++ 2M Karras". Split, the names can be checked by preflight and
    the request says what runs. An ``ad_scheduler`` other than "Use same scheduler" must agree.
    """
    sampler, given = tab.get("ad_sampler"), tab.get("ad_scheduler")
    if not isinstance(sampler, str) or not (given is None or isinstance(given, str)):
        return []  # the type check reports it
    try:
        base, scheduler = resolve_sampler(sampler, given)
    except SamplerSchedulerConflict as exc:
        return [FieldProblem(f"{path}.ad_scheduler", str(exc), given)]
    tab["ad_sampler"] = base
    if scheduler is not None:
        tab["ad_scheduler"] = scheduler
    return []


def validate_adetailer_tab(tab: Mapping[str, Any], *, path: str) -> list[FieldProblem]:
    """Every reason ADetailer would silently drop this tab (its schema is ``extra=forbid``)."""
    problems: list[FieldProblem] = []
    for key, value in tab.items():
        where = f"{path}.{key}"
        spec = ADETAILER_ARGS.get(key)
        if spec is None:
            hint = " (renamed upstream to ad_mask_k)" if key == "ad_mask_k_largest" else ""
            problems.append(FieldProblem(where, f"is not an ADetailer argument{hint}", value))
            continue
        kind, low, high = spec
        if value is None:
            if key not in _NULLABLE_ARGS:
                problems.append(FieldProblem(where, "must not be null", value))
            continue
        if not _is_kind(value, kind):
            problems.append(FieldProblem(where, f"must be of type {kind.__name__}", value))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(FieldProblem(where, "must be a finite number", value))
            continue
        if isinstance(value, str):
            if high is not None and len(value) > high:
                message = f"must be at most {high:g} characters (got {len(value)})"
                problems.append(FieldProblem(where, message, has_value=False))
        elif not isinstance(value, bool):
            if low is not None and value < low:
                problems.append(FieldProblem(where, f"must be >= {low}", value))
            if high is not None and value > high:
                problems.append(FieldProblem(where, f"must be <= {high}", value))
        if key in _ARG_CHOICES and value not in _ARG_CHOICES[key]:
            problems.append(FieldProblem(where, f"must be one of {list(_ARG_CHOICES[key])}", value))
    if tab.get("ad_inpaint_only_masked") is False and tab.get("ad_use_inpaint_width_height") is not False:
        problems.append(
            FieldProblem(
                f"{path}.ad_use_inpaint_width_height",
                "must be false with ad_inpaint_only_masked false (else the image is resized to the inpaint size)",
                tab.get("ad_use_inpaint_width_height"),
            )
        )
    if tab.get("ad_tab_enable") is False:
        problems.append(
            FieldProblem(f"{path}.ad_tab_enable", "switches the pass off, so ADetailer would skip it", False)
        )
    if tab.get("ad_model") in (None, "None"):
        problems.append(
            FieldProblem(f"{path}.ad_model", "names no detector, so the pass would do nothing", "None")
        )
    return problems


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def adetailer_body(payload: Mapping[str, Any], image: str) -> dict[str, Any]:
    """``POST /sdapi/v1/img2img`` running ADetailer alone on ``image`` (skip img2img on)."""
    config = payload["config"]
    base = dict(config.get("base") or {})
    base.setdefault("steps", 20)
    base.setdefault("cfg_scale", 7.0)
    for key in ("steps", "cfg_scale"):
        if base[key] is None:
            base[key] = 20 if key == "steps" else 7.0
    tabs = [adetailer_tab(config["face"], path="adetailer.face")]
    if config.get("hands"):
        tabs.append(adetailer_tab(config["hands"], path="adetailer.hands"))
    body = _generation_common(base, _chained_seed(base, payload), path="adetailer.base")
    width, height = image_size(image)
    body |= {
        "init_images": [image],
        "width": width,
        "height": height,
        "alwayson_scripts": {"ADetailer": {"args": [True, True, *tabs]}},
    }
    check_fields(body, IMG2IMG_FIELDS, "img2img (ADetailer)")
    return body


def validate_stage_payload(payload: Mapping[str, Any]) -> None:
    """Build a stage's request bodies on a placeholder image, to fail at submit, not on a GPU.

    Raises:
        ConfigError: an ADetailer tab ADetailer would silently drop, or a sampler name whose scheduler
            disagrees with the scheduler given.
    """
    stage = payload["stage"]
    config = payload["config"]
    if stage == "adetailer":
        sampler_and_scheduler(config.get("base") or {}, path="adetailer.base")
        adetailer_tab(config["face"], path="adetailer.face")
        if config.get("hands"):
            adetailer_tab(config["hands"], path="adetailer.hands")
    elif stage == "txt2img":
        txt2img_body(payload)
    elif stage == "img2img":
        sampler_and_scheduler(config, path="img2img")


STAGE_ROUTES = {
    "txt2img": "/sdapi/v1/txt2img",
    "img2img": "/sdapi/v1/img2img",
    "upscale": "/sdapi/v1/extra-single-image",
    "adetailer": "/sdapi/v1/img2img",
}
