"""Neutral stage payload -> AUTOMATIC1111 request body. Pure functions, one per stage.

The WebUI ignores unknown keys and silently replaces unknown names (docs/webui-api.md, "Silent
failures"), so every body here is built only from A1111's own field lists
(:mod:`~stablenew.webui._fields`), and :func:`~stablenew.webui._fields.check_fields` refuses anything
else before a request leaves. Decisions that matter:

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
  off and the request runs as a plain img2img at its own denoise. Each tab is checked as ADetailer would
  check it, and against our own upper bounds (:mod:`~stablenew.webui._adetailer_tab`).
- Output sizes known only once the input image is there (img2img at its input's size, an upscale by a
  factor) are checked against the config limits here, before the request is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import size_problems

from ._adetailer_tab import adetailer_tab
from ._fields import (
    EXTRAS_FIELDS,
    IMG2IMG_FIELDS,
    TXT2IMG_FIELDS,
    check_fields,
    hires_sampler_and_scheduler,
    sampler_and_scheduler,
)
from ._images import ImageBytes, image_size

DEFAULT_CLIP_SKIP = 1
DEFAULT_VAE = "Automatic"
# The option that makes refiner_switch_at a fraction of the sampling steps (A1111: of the model's timesteps).
REFINER_BY_STEPS = "refiner_switch_by_sample_steps"
# hires_fix_refiner_pass when refiner and hires are both on: the refiner switch is within the first pass.
REFINER_WITH_HIRES = "first pass"


def _override_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every generation request's overrides: clip skip and VAE always, so none leaks from an earlier job."""
    settings: dict[str, Any] = {}
    if config.get("model"):
        settings["sd_model_checkpoint"] = config["model"]
    settings["sd_vae"] = config.get("vae") or DEFAULT_VAE
    settings["CLIP_stop_at_last_layers"] = config.get("clip_skip") or DEFAULT_CLIP_SKIP
    return settings


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


def img2img_body(payload: Mapping[str, Any], image: str | ImageBytes) -> dict[str, Any]:
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


def upscale_body(payload: Mapping[str, Any], image: str | ImageBytes) -> dict[str, Any]:
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


def adetailer_body(payload: Mapping[str, Any], image: str | ImageBytes) -> dict[str, Any]:
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
