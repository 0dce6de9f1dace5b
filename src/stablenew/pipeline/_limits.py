"""Limits and value rules: what a value in a config or a plan may be, whichever model holds it.

- Limits (``MAX_*``, ``MIN_SIDE``): steps, prompt and name length, styles, sizes, batch, the init image, and
  the size and number of images each stage makes (``MAX_OUTPUT_SIDE``, ``MAX_OUTPUT_PIXELS``, ``MAX_IMAGES``;
  :func:`output_limit_problems`). They are checked when a config is validated
  (:class:`~stablenew.pipeline._config.PipelineConfig`) and again when a worker reads a plan
  (``StageExecutionPlan.from_json``); a size known only once the input image is there is checked by the
  payload builder (:func:`size_problems`).
- Types are taken as written: a number given as a string (``"20"``) or as ``true``, a flag given as ``1`` or
  ``"yes"``, and NaN or infinity are refused, not converted (:func:`strict_scalar`).
- Text (prompts) may not hold control characters other than tab and newline (:func:`text_problem`), and names
  (checkpoints, VAEs, samplers, upscalers, ADetailer models...) must be safe to use as a path below a models
  folder (:func:`name_problem`).

``Name``, ``RequiredName``, ``Prompt`` and ``Side`` are these rules as annotated types for pydantic fields.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_PROMPT_CHARS = 10_000
MAX_NAME_CHARS = 512  # a checkpoint, VAE, sampler, scheduler, upscaler or style name
MAX_STYLES = 32
MIN_SIDE, MAX_SIDE = 64, 8192
MAX_STEPS = 150
MAX_BATCH = 16
MAX_INIT_IMAGE_B64 = 64 * 1024 * 1024
# What one stage may produce: each side of every image, its pixel count, and the number of images across all
# of the stage's input images (an img2img after a batch of 4 with batch_size 4 makes 16). Checked when a config
# is validated and again when a worker reads a plan (StageExecutionPlan.from_json).
MAX_OUTPUT_SIDE = 16_384
MAX_OUTPUT_PIXELS = 2**27  # 134,217,728 px (128 Mpx), e.g. 16384 x 8192
MAX_IMAGES = MAX_BATCH


# Text may hold tabs and newlines; no other C0 control character, no DEL, no lone UTF-16 surrogate.
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# A name holds no control character at all (C0, DEL, C1) and no lone surrogate.
_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# "..", and what Windows reads as ".." (it drops trailing dots and spaces from a segment: ".. ", "...").
_PARENT = re.compile(r"^\s*\.\.[.\s]*$")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be prompt text, or None. Tabs and newlines are fine; NUL, escape sequences and
    other control characters are not (A1111 would pass them to the tokenizer and into PNG metadata)."""
    found = _TEXT_FORBIDDEN.search(value)
    if found is None:
        return None
    return f"must not contain control character {found.group()!r} (at index {found.start()})"


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a checkpoint, VAE, sampler, scheduler, upscaler, style or ADetailer model name.

    The rule: A1111 lists models by their path below its models folder, so a name may hold a sub-folder
    written with ``/`` or ``\\`` (``"SDXL/base.safetensors"``, ``"SDXL\\base.safetensors"``) and a
    ``" [hash]"`` suffix. It may never hold a control character (NUL included), be an absolute path
    (``/x``, ``\\x``, ``C:...``) or have a ``..`` segment: a name is looked up by the WebUI, and must not be
    able to point it (or anything that joins it to a folder) outside its models folders. Dots inside a
    segment are fine (``"v1.5..final.ckpt"``); a segment of dots only (``".."``, ``"..."``, ``".. "``) is not.
    """
    found = _NAME_FORBIDDEN.search(value)
    if found is not None:
        return f"must not contain control character {found.group()!r} (at index {found.start()})"
    if value.startswith(("/", "\\")) or _DRIVE.match(value):
        return "must be a name, not an absolute path"
    if any(_PARENT.match(segment) for segment in re.split(r"[/\\]", value)):
        return "must not contain a '..' path segment"
    return None


def _clean_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _safe_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types (bool, int, float, str) a field's annotation allows."""
    if annotation in (bool, int, float, str):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        args = typing.get_args(annotation)
        args = args[:1] if typing.get_origin(annotation) is Annotated else args
        return set().union(*(scalar_kinds(arg) for arg in args))
    return set()


def strict_scalar(kinds: AbstractSet[type], value: Any) -> Any:
    """Refuse what pydantic's lax mode would convert: ``"20"`` or ``true`` for a number, ``1`` or ``"yes"``
    for a flag, and NaN or infinity. A whole float (``20.0``) stays accepted for an integer."""
    number = bool(kinds & {int, float})
    if isinstance(value, bool):
        if bool not in kinds and number:
            raise ValueError("must be a number, not true/false")
    elif isinstance(value, str):
        if str not in kinds and (number or bool in kinds):
            raise ValueError(f"must be {'a number' if number else 'true or false'}, not a string")
    elif isinstance(value, int | float):
        if bool in kinds and not number:
            raise ValueError("must be true or false")
        if isinstance(value, float) and number and not math.isfinite(value):
            raise ValueError("must be a finite number")
    return value


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % 8:
        raise ValueError("must be a multiple of 8")
    return value


Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_safe_name)]
RequiredName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_safe_name)]
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_clean_text)]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE), AfterValidator(_multiple_of_8)]


def output_limit_problems(
    chain: Sequence[tuple[str, Mapping[str, Any]]], hires: Mapping[str, Any] | None
) -> list[tuple[str, str, Any]]:
    """Every output-size or image-count limit a chain of stages breaks, as ``(field, message, value)``.

    ``chain`` holds ``(stage, config)`` for the enabled txt2img / img2img / upscale stages in canonical order
    (ADetailer keeps its input's size and count); ``hires`` is the hires section (``scale``, ``resize_x``,
    ``resize_y``) when hires is on. ``field`` is canonical (``"hires.scale"``, ``"upscale.upscaling_resize"``).
    A size that depends on an image not known yet (img2img first, without its own size) is left to the payload
    builder, which checks it once the image is there. A later stage is judged as if the earlier ones were
    within the limits, so one mistake is reported once.
    """
    problems: list[tuple[str, str, Any]] = []
    size: tuple[int, int] | None = None
    count = 0
    for stage, config in chain:
        checks: list[tuple[str, Any]] = []  # (field, value) that set the size this stage makes
        if stage == "upscale":
            if config.get("resize_width") and config.get("resize_height"):
                size = (int(config["resize_width"]), int(config["resize_height"]))
                checks.append(("upscale.resize_width", config["resize_width"]))
            elif size is not None:
                factor = float(config.get("upscaling_resize") or 1)
                size = (int(size[0] * factor) // 8 * 8, int(size[1] * factor) // 8 * 8)
                checks.append(("upscale.upscaling_resize", config.get("upscaling_resize")))
        else:
            inputs = count if stage == "img2img" and count else max(1, len(config.get("init_images") or []))
            batch, n_iter = int(config.get("batch_size") or 1), int(config.get("n_iter") or 1)
            problems.extend(_count_problems(stage, batch, n_iter, inputs))
            count = min(inputs * batch * n_iter, MAX_IMAGES)
            if config.get("width") and config.get("height"):
                size = (int(config["width"]), int(config["height"]))
            if stage == "txt2img" and hires is not None and size is not None:
                size, field, value = _hires_output(size, hires)
                checks.append((field, value))
        for field, value in checks:
            assert size is not None
            found = size_problems(size)
            problems.extend((field, message, value) for message in found)
            if found:
                size = None  # unknown from here on: the next stage's size would only repeat the problem
    return problems


def _count_problems(stage: str, batch: int, n_iter: int, inputs: int) -> list[tuple[str, str, Any]]:
    """Too many images in one request, or across all of a stage's ``inputs`` (one request per input)."""
    if batch * n_iter > MAX_BATCH:
        message = f"batch_size x n_iter = {batch} x {n_iter} = {batch * n_iter} is over {MAX_BATCH}"
        return [(f"{stage}.batch_size", message, batch)]
    if inputs * batch * n_iter > MAX_IMAGES:
        message = (
            f"makes {inputs * batch * n_iter} images ({inputs} input images x batch_size {batch} x n_iter "
            f"{n_iter}), over {MAX_IMAGES}"
        )
        return [(f"{stage}.batch_size", message, batch)]
    return []


def _hires_output(size: tuple[int, int], hires: Mapping[str, Any]) -> tuple[tuple[int, int], str, Any]:
    """The hires pass's output size as A1111 computes it (``calculate_target_resolution``), and its field."""
    width, height = size
    resize_x, resize_y = int(hires.get("resize_x") or 0), int(hires.get("resize_y") or 0)
    if resize_x or resize_y:
        target = (resize_x or resize_y * width // height, resize_y or resize_x * height // width)
        return target, ("hires.resize_x" if resize_x else "hires.resize_y"), resize_x or resize_y
    scale = float(hires.get("scale") or 1)
    return (int(width * scale), int(height * scale)), "hires.scale", hires.get("scale")


def size_problems(size: tuple[int, int]) -> list[str]:
    """Why an output of ``size`` (width, height) is too large, if it is."""
    width, height = size
    problems = []
    if max(width, height) > MAX_OUTPUT_SIDE:
        problems.append(f"makes a {width}x{height} image, over {MAX_OUTPUT_SIDE} px per side")
    elif width * height > MAX_OUTPUT_PIXELS:
        problems.append(f"makes a {width}x{height} image ({width * height} px), over {MAX_OUTPUT_PIXELS} px")
    return problems
