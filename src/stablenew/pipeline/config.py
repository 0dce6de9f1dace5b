"""PipelineConfig: one validated model for every config shape StableNew produces.

Accepted inputs (see DESIGN.md section 3 and STABLENEW_CONFIG.md):

1. the flat PR-107 shape (``txt2img_enabled``, ``txt2img_config``, ``refiner_*``, ``hires_*`` ...);
2. StableNew's nested preset (sections ``txt2img``, ``img2img``, ``upscale``, ``adetailer``,
   ``pipeline``, ``hires_fix``) with A1111 key names and StableNew's aliases;
3. the layered wrapper ``{"schema": "stablenew.config.v2.6", "execution_config": {<shape 2>}}``.

:func:`parse_config` first *normalises* the input into the canonical layout, remembering where each
value came from, then validates it with pydantic. Every problem is reported at once in a single
:class:`~stablenew.errors.ConfigError`, each naming the field as the user wrote it and the bad value.
Keys we do not use are kept (``extras``) but never sent to the WebUI; keys that would ask for something
this pipeline cannot do are refused instead of ignored (img2img inpainting keys, an ``upscale_mode``
other than "single", img2img ``width`` without ``height``).

Also decided here, so the plan already carries the result:

- a sampler name carrying a scheduler ("DPM++ 2M Karras", A1111's pre-1.9 spelling) is split into
  sampler + scheduler (:func:`resolve_sampler`); a scheduler given beside it must agree;
- limits: steps, prompt length, sizes, batch, and the size and number of images each stage makes
  (``MAX_OUTPUT_SIDE``, ``MAX_OUTPUT_PIXELS``, ``MAX_IMAGES``; :func:`output_limit_problems`). A worker
  re-checks them on the plan it reads (``StageExecutionPlan.from_json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stablenew.errors import ConfigError, FieldProblem

SUPPORTED_WRAPPER_SCHEMAS = frozenset({"stablenew.config.v2.6"})

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

_UNSET_NAMES = frozenset({"", "none", "automatic", "null"})

# --------------------------------------------------------------------------------------------
# Sampler names that carry a scheduler ("DPM++ 2M Karras")
# --------------------------------------------------------------------------------------------

# A1111 v1.10's schedulers (modules/sd_schedulers.py): name -> its label, then its aliases.
A1111_SCHEDULERS: dict[str, tuple[str, ...]] = {
    "automatic": ("Automatic",),
    "uniform": ("Uniform",),
    "karras": ("Karras",),
    "exponential": ("Exponential",),
    "polyexponential": ("Polyexponential",),
    "sgm_uniform": ("SGM Uniform", "SGMUniform"),
    "kl_optimal": ("KL Optimal",),
    "align_your_steps": ("Align Your Steps",),
    "simple": ("Simple",),
    "normal": ("Normal",),
    "ddim": ("DDIM",),
    "beta": ("Beta",),
}
_SCHEDULER_OF = {
    spelling.lower(): name for name, spellings in A1111_SCHEDULERS.items() for spelling in (name, *spellings)
}
# Longest first, so "DPM++ 2M SGM Uniform" loses " SGM Uniform", not " Uniform".
_SCHEDULER_SUFFIXES = sorted(_SCHEDULER_OF, key=len, reverse=True)
_SAME_SCHEDULER = frozenset({"use same scheduler", "inherit"})


class SamplerSchedulerConflict(ValueError):
    """A sampler name ends with a scheduler that disagrees with the scheduler given beside it."""


def split_sampler_name(sampler: str) -> tuple[str, str | None]:
    """``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", "Karras")``; a name without a trailing scheduler -> ``(name, None)``.

    Since v1.9 A1111 lists samplers and schedulers apart ("DPM++ 2M" + "Karras") and only accepts the old joined
    names by splitting off a trailing scheduler label, name or alias (``sd_samplers.get_sampler_and_scheduler``).
    This split is the same, except that it ignores case and tries the longest suffix first.
    """
    lowered = sampler.lower()
    for suffix in _SCHEDULER_SUFFIXES:
        if lowered.endswith(" " + suffix):
            base = sampler[: -len(suffix) - 1].rstrip()
            if base:
                return base, A1111_SCHEDULERS[_SCHEDULER_OF[suffix]][0]
    return sampler, None


def scheduler_key(scheduler: str) -> str:
    """The A1111 scheduler name a label, name or alias means (``"SGM Uniform"`` -> ``"sgm_uniform"``)."""
    text = scheduler.strip().lower()
    return _SCHEDULER_OF.get(text, text)


def resolve_sampler(sampler: str | None, scheduler: str | None) -> tuple[str | None, str | None]:
    """Split a scheduler off ``sampler`` into ``scheduler``: ``("DPM++ 2M Karras", None)`` -> ``("DPM++ 2M", "Karras")``.

    A scheduler given beside it (not unset, "Automatic", "Use same scheduler" or "inherit") is kept; it must
    name the same scheduler. A name without a trailing scheduler is returned unchanged.

    Raises:
        SamplerSchedulerConflict: the name's scheduler and the given one differ.
    """
    if not sampler:
        return sampler, scheduler
    base, named = split_sampler_name(sampler)
    if named is None:
        return sampler, scheduler
    if scheduler is None or scheduler.strip().lower() in _UNSET_NAMES | _SAME_SCHEDULER:
        return base, None if scheduler_key(named) == "automatic" else named
    if scheduler_key(scheduler) != scheduler_key(named):
        raise SamplerSchedulerConflict(
            f"disagrees with the scheduler {named!r} that the sampler name {sampler!r} ends with"
        )
    return base, scheduler


def _split_sampler_of(model: BaseModel, sampler_field: str, scheduler_field: str) -> None:
    """Store a sampler name's trailing scheduler in the scheduler field (the section's one derived value)."""
    given = getattr(model, scheduler_field)
    try:
        sampler, scheduler = resolve_sampler(getattr(model, sampler_field), given)
    except SamplerSchedulerConflict as exc:
        raise ValueError(f"{scheduler_field}: {exc} (got {given!r})") from None
    # The sections are frozen; this is set once, during validation.
    object.__setattr__(model, sampler_field, sampler)
    object.__setattr__(model, scheduler_field, scheduler)


class _Section(BaseModel):
    """Base for stage sections: unknown keys are kept (StableNew configs carry many)."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=True)

    def known(self) -> dict[str, Any]:
        """The declared fields only, without the kept-but-unused extras.

        Pydantic keeps declared fields in ``__dict__`` and extras apart (``__pydantic_extra__``), so this
        is a plain copy: it runs several times per submitted config."""
        return dict(self.__dict__)


Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


def _unset_vae(value: Any) -> Any:
    """Unset ("Automatic", empty) becomes None, sent as "Automatic"; "None" (no external VAE) stays "None"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return "None"
        if text in _UNSET_NAMES:
            return None
    return value


class GenerationSection(_Section):
    """Fields shared by the txt2img and img2img stages.

    A sampler name that carries a scheduler ("DPM++ 2M Karras", the pre-1.9 A1111 spelling) is split into
    ``sampler_name`` + ``scheduler`` (see :func:`resolve_sampler`). ``seed_resize_from_w/h`` (A1111's "resize
    seed from"; -1 or 0 = off) are given together or not at all.
    """

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    steps: int = Field(30, ge=1, le=MAX_STEPS)
    cfg_scale: float = Field(7.0, ge=1, le=30)
    sampler_name: str = Field("DPM++ 2M", min_length=1, max_length=MAX_NAME_CHARS)
    scheduler: Name | None = None
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    seed_resize_from_w: int = Field(-1, ge=-1, le=MAX_SIDE)
    seed_resize_from_h: int = Field(-1, ge=-1, le=MAX_SIDE)
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)
    n_iter: int = Field(1, ge=1, le=MAX_BATCH)
    model: Name | None = None
    vae: Name | None = None
    clip_skip: int | None = Field(None, ge=1, le=12)
    styles: list[Name] = Field(default_factory=list, max_length=MAX_STYLES)

    @field_validator("scheduler", "model", mode="before")
    @classmethod
    def _unset_names(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _UNSET_NAMES:
            return None
        return value

    @field_validator("vae", mode="before")
    @classmethod
    def _vae(cls, value: Any) -> Any:
        return _unset_vae(value)

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> GenerationSection:
        _split_sampler_of(self, "sampler_name", "scheduler")
        return self

    @model_validator(mode="after")
    def _seed_resize_together(self) -> GenerationSection:
        width_on, height_on = self.seed_resize_from_w > 0, self.seed_resize_from_h > 0
        if width_on != height_on:
            given, missing = "seed_resize_from_w", "seed_resize_from_h"
            if height_on:
                given, missing = missing, given
            raise ValueError(
                f"{given}: given without {missing}; give both or neither (got {getattr(self, given)!r})"
            )
        return self


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % 8:
        raise ValueError("must be a multiple of 8")
    return value


Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE), AfterValidator(_multiple_of_8)]


class Txt2ImgSection(GenerationSection):
    """The txt2img stage. Hires and refiner live in their own sections (metadata, not stages)."""

    width: Side = 1024
    height: Side = 1024


# StableNew's inpainting keys (img2img section): a mask needs a mask image, which this pipeline has no way to carry.
_INPAINTING_KEYS = ("mask_image_path", "mask_mode", "mask_blur")
_MASK_OFF = frozenset({"", "none", "off", "disabled", "false"})


def _asks_for_inpainting(key: str, value: Any) -> bool:
    if value is None or value is False:
        return False
    if key == "mask_blur":
        return not (isinstance(value, int | float) and value <= 0)
    return not (isinstance(value, str) and value.strip().lower() in _MASK_OFF)


class Img2ImgSection(GenerationSection):
    """The img2img stage. ``width``/``height`` default to the input image's size; give both or neither.

    Inpainting (StableNew's ``mask_mode``, ``mask_image_path``, ``mask_blur``) is refused, not ignored.
    """

    denoising_strength: float = Field(0.5, ge=0, le=1)
    width: Side | None = None
    height: Side | None = None
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)  # type: ignore[assignment]
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)  # type: ignore[assignment]
    init_images: list[Annotated[str, Field(min_length=16, max_length=MAX_INIT_IMAGE_B64)]] = Field(
        default_factory=list, max_length=MAX_BATCH
    )

    @model_validator(mode="after")
    def _size_given_whole(self) -> Img2ImgSection:
        if (self.width is None) != (self.height is None):
            given, missing = ("width", "height") if self.width is not None else ("height", "width")
            raise ValueError(
                f"{given}: given without {missing}; give both, or neither to keep the input image's size "
                f"(got {getattr(self, given)!r})"
            )
        return self

    @model_validator(mode="after")
    def _no_inpainting(self) -> Img2ImgSection:
        extras = self.model_extra or {}
        for key in _INPAINTING_KEYS:
            if _asks_for_inpainting(key, extras.get(key)):
                raise ValueError(
                    f"{key}: inpainting is not supported (a mask would be silently ignored) (got {extras[key]!r})"
                )
        return self


class UpscaleSection(_Section):
    """The upscale stage (``/sdapi/v1/extra-single-image``)."""

    upscaler: str = Field("R-ESRGAN 4x+", min_length=1, max_length=MAX_NAME_CHARS)
    upscaling_resize: float = Field(2.0, ge=1, le=8)
    resize_width: int | None = Field(None, ge=MIN_SIDE, le=MAX_OUTPUT_SIDE)
    resize_height: int | None = Field(None, ge=MIN_SIDE, le=MAX_OUTPUT_SIDE)
    upscaler_2: Name | None = None
    upscaler_2_visibility: float = Field(0.0, ge=0, le=1)
    gfpgan_visibility: float = Field(0.0, ge=0, le=1)
    codeformer_visibility: float = Field(0.0, ge=0, le=1)
    codeformer_weight: float = Field(0.0, ge=0, le=1)
    upscale_mode: str = "single"

    @field_validator("upscale_mode")
    @classmethod
    def _single_only(cls, value: str) -> str:
        # StableNew's "img2img" mode upscales through an img2img pass; that is an img2img stage here.
        if value.strip().lower() != "single":
            raise ValueError(
                "is not supported: only 'single' (one extras upscale); use an img2img stage instead"
            )
        return "single"

    @model_validator(mode="after")
    def _both_or_neither(self) -> UpscaleSection:
        if (self.resize_width is None) != (self.resize_height is None):
            raise ValueError("resize_width and resize_height must be given together")
        return self


class ADetailerPass(_Section):
    """One ADetailer pass (a tab), in StableNew's ``adetailer_*`` vocabulary.

    The payload builder maps these names to ADetailer's ``ad_*`` args; ``ad_*`` keys given in the
    config are passed through there and validated against ADetailer's schema.
    """

    model: str = Field("face_yolov8n.pt", min_length=1, max_length=MAX_NAME_CHARS)
    confidence: float = Field(0.3, ge=0, le=1)
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    denoise: float = Field(0.4, ge=0, le=1)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg: float | None = Field(None, ge=0, le=30)
    sampler: Name | None = None
    scheduler: Name | None = None
    padding: int = Field(32, ge=0, le=1024)
    mask_feather: int = Field(4, ge=0, le=256)
    inpaint_width: int = Field(1024, ge=MIN_SIDE, le=MAX_SIDE)
    inpaint_height: int = Field(1024, ge=MIN_SIDE, le=MAX_SIDE)
    ad_args: dict[str, Any] = Field(default_factory=dict, max_length=64)  # ADetailer has 42 args

    @field_validator("sampler", "scheduler", mode="before")
    @classmethod
    def _unset_names(cls, value: Any) -> Any:
        # StableNew says "inherit" (and ADetailer "Use same ...") for "as the main pass": ADetailer's default.
        unset = _UNSET_NAMES | _SAME_SCHEDULER | {"use same sampler"}
        if isinstance(value, str) and value.strip().lower() in unset:
            return None
        return value

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> ADetailerPass:
        _split_sampler_of(self, "sampler", "scheduler")
        return self


class ADetailerSection(_Section):
    """The ADetailer stage: a face pass and an optional hands pass."""

    face: ADetailerPass = Field(default_factory=ADetailerPass)
    hands: ADetailerPass | None = None


class ADetailerBase(BaseModel):
    """What the ADetailer stage's main (skip-img2img) pass takes from the last generation stage.

    The sequencer fills it; a worker re-validates it (:class:`ADetailerStageConfig`) so a plan from the queue
    cannot carry an unchecked size, prompt or batch through it: unknown keys are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(None, ge=1, le=30)
    sampler_name: Name | None = None
    scheduler: Name | None = None
    seed: int | None = Field(None, ge=-1, le=2**32 - 1)
    model: Name | None = None
    vae: Name | None = None
    clip_skip: int | None = Field(None, ge=1, le=12)

    @field_validator("vae", mode="before")
    @classmethod
    def _vae(cls, value: Any) -> Any:
        return _unset_vae(value)

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> ADetailerBase:
        _split_sampler_of(self, "sampler_name", "scheduler")
        return self


class ADetailerStageConfig(ADetailerSection):
    """The ADetailer stage's config as a plan carries it: the passes plus their ``base``."""

    base: ADetailerBase = Field(default_factory=ADetailerBase)


class HiresSection(_Section):
    """Hires fix metadata for the txt2img stage."""

    enabled: bool = False
    upscaler: str = Field("Latent", min_length=1, max_length=MAX_NAME_CHARS)
    scale: float = Field(2.0, ge=1, le=8)
    steps: int = Field(0, ge=0, le=MAX_STEPS)
    denoise: float = Field(0.5, ge=0, le=1)
    resize_x: int | None = Field(None, ge=0, le=MAX_SIDE)
    resize_y: int | None = Field(None, ge=0, le=MAX_SIDE)
    # A name that carries a scheduler ("Euler a Karras") is sent as hr_sampler_name + hr_scheduler.
    sampler_name: Name | None = None

    @field_validator("sampler_name", mode="before")
    @classmethod
    def _same_sampler(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _UNSET_NAMES | {"use same sampler"}:
            return None
        return value


class RefinerSection(_Section):
    """Refiner metadata for the txt2img stage.

    The switch may be given as a step (``switch_step``) or as a fraction (``switch_at``); the
    validated model always holds the fraction A1111 needs, and the step it came from.
    """

    enabled: bool = False
    model_name: Name | None = None
    switch_at: float | None = Field(None, gt=0, lt=1)
    switch_step: int | None = Field(None, ge=0)


class PipelineConfig(BaseModel):
    """The validated, canonical pipeline config. Build it with :func:`parse_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    txt2img_enabled: bool = True
    img2img_enabled: bool = False
    upscale_enabled: bool = False
    adetailer_enabled: bool = False
    txt2img: Txt2ImgSection = Field(default_factory=Txt2ImgSection)
    img2img: Img2ImgSection = Field(default_factory=Img2ImgSection)
    upscale: UpscaleSection = Field(default_factory=UpscaleSection)
    adetailer: ADetailerSection = Field(default_factory=ADetailerSection)
    hires: HiresSection = Field(default_factory=HiresSection)
    refiner: RefinerSection = Field(default_factory=RefinerSection)
    callback_url: str | None = Field(None, pattern=r"^https?://")
    extras: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _img2img_needs_an_image(self) -> PipelineConfig:
        if self.img2img_enabled and not self.txt2img_enabled and not self.img2img.init_images:
            raise ValueError(
                "img2img.init_images: required when img2img is the first stage "
                "(give init_images, or init_image_path in a config file)"
            )
        return self

    @model_validator(mode="after")
    def _refiner_switch(self) -> PipelineConfig:
        ref = self.refiner
        if not ref.enabled:
            return self
        if not ref.model_name:
            raise ValueError("refiner.model_name: required when the refiner is enabled")
        steps = self.txt2img.steps
        step = ref.switch_step
        if step == 0 and ref.switch_at is not None:
            step = None  # 0 means "unused" in StableNew's presets when a fraction is given
        if step is not None:
            if not 1 <= step <= steps - 1:
                raise ValueError(
                    f"refiner.switch_step: must be within 1..{steps - 1} (steps={steps}) (got {step})"
                )
            fraction = step / steps
            if ref.switch_at is not None and abs(ref.switch_at - fraction) > 0.5 / steps:
                raise ValueError(
                    f"refiner.switch_at: disagrees with switch_step {step}/{steps}={fraction:.3f} "
                    f"(got {ref.switch_at})"
                )
            # The section is frozen; this is its one derived value, set once during validation.
            object.__setattr__(ref, "switch_at", fraction)
        elif ref.switch_at is None:
            raise ValueError("refiner.switch_at: give refiner_switch_at (0..1) or refiner_switch_step")
        return self

    @model_validator(mode="after")
    def _outputs_within_limits(self) -> PipelineConfig:
        chain: list[tuple[str, Mapping[str, Any]]] = []
        for stage in ("txt2img", "img2img", "upscale"):
            if getattr(self, f"{stage}_enabled"):
                chain.append((stage, getattr(self, stage).known()))
        hires = self.hires.known() if self.hires.enabled and self.txt2img_enabled else None
        problems = output_limit_problems(chain, hires)
        if problems:
            field, message, value = problems[0]
            raise ValueError(f"{field}: {message} (got {value!r})")
        return self


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


# --------------------------------------------------------------------------------------------
# Normalisation: any accepted shape -> canonical dict + where each value came from.
# --------------------------------------------------------------------------------------------

_STAGES = ("txt2img", "img2img", "upscale", "adetailer")
_NESTED_SECTIONS = (*_STAGES, "pipeline", "hires_fix")

# canonical field -> accepted names, in precedence order (first present wins)
_GEN_ALIASES: dict[str, tuple[str, ...]] = {
    "model": ("model", "model_name", "sd_model", "sd_model_checkpoint"),
    "vae": ("vae", "vae_name", "sd_vae"),
    "sampler_name": ("sampler_name", "sampler"),
    "scheduler": ("scheduler", "scheduler_name"),
}
_HIRES_ALIASES: dict[str, tuple[str, ...]] = {
    "enabled": ("hires_enabled", "enable_hr"),
    "scale": ("hires_scale_factor", "hr_scale"),
    "upscaler": ("hires_upscaler_name", "hr_upscaler"),
    "denoise": ("hires_denoise_strength", "hires_denoise", "denoising_strength"),
    "steps": ("hires_steps", "hr_second_pass_steps"),
    "resize_x": ("hr_resize_x",),
    "resize_y": ("hr_resize_y",),
    "sampler_name": ("hr_sampler_name", "hires_sampler_name"),
}
_HIRES_FIX_KEYS = {
    "enabled": "enabled",
    "upscaler": "upscaler_name",
    "scale": "upscale_factor",
    "steps": "steps",
    "denoise": "denoise",
}
_REFINER_ALIASES: dict[str, tuple[str, ...]] = {
    "enabled": ("refiner_enabled", "use_refiner"),
    "model_name": ("refiner_model_name", "refiner_checkpoint"),
    "switch_at": ("refiner_switch_at",),
    "switch_step": ("refiner_switch_step", "refiner_switch_steps"),
}
_UPSCALE_ALIASES: dict[str, tuple[str, ...]] = {
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
_AD_PASS_KEYS: dict[str, str] = {
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
# Keys StableNew carries in the txt2img/img2img sections that we map elsewhere (not extras).
_REMAPPED_GEN_KEYS = {n for names in _GEN_ALIASES.values() for n in names}


class _Normaliser:
    """Builds the canonical dict and remembers each canonical path's source path."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.origin: dict[tuple[str, ...], str] = {}
        self.problems: list[FieldProblem] = []
        # How to name a canonical field the user did not write, in the shape they used.
        self.unwritten: dict[tuple[str, ...], str] = {}

    def put(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        self.origin[path] = source

    def pick(self, section: Mapping[str, Any], names: tuple[str, ...], prefix: str) -> tuple[str, Any] | None:
        for name in names:
            if name in section and section[name] is not None:
                return (f"{prefix}{name}", section[name])
        return None

    def source_of(self, loc: tuple[str | int, ...]) -> str:
        parts = tuple(str(p) for p in loc)
        for cut in range(len(parts), 0, -1):
            if parts[:cut] in self.origin:
                rest = parts[cut:]
                return ".".join((self.origin[parts[:cut]], *rest))
        written = self.unwritten.get(parts)
        return written if written else ".".join(parts)


def _as_mapping(value: Any, path: str, norm: _Normaliser) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        norm.problems.append(FieldProblem(path, "must be an object", value))
        return {}
    return value


def _generation(norm: _Normaliser, stage: str, section: Mapping[str, Any], prefix: str) -> None:
    for canonical, names in _GEN_ALIASES.items():
        found = norm.pick(section, names, prefix)
        if found:
            norm.put((stage, canonical), found[1], found[0])
    hires_keys = {n for names in _HIRES_ALIASES.values() for n in names}
    refiner_keys = {n for names in _REFINER_ALIASES.values() for n in names}
    for key, value in section.items():
        if key in _REMAPPED_GEN_KEYS or key in ("enabled",):
            continue
        if stage == "txt2img" and (key in hires_keys or key in refiner_keys):
            continue  # hires/refiner metadata, collected separately
        # Declared fields are validated; anything else is kept as an extra and never sent.
        norm.put((stage, key), value, f"{prefix}{key}")


def _hires(norm: _Normaliser, sources: list[tuple[Mapping[str, Any], str]]) -> None:
    """Hires fields from txt2img/top-level aliases (``sources`` in precedence order)."""
    for canonical, names in _HIRES_ALIASES.items():
        for section, prefix in sources:
            found = norm.pick(section, names, prefix)
            if found:
                norm.put(("hires", canonical), found[1], found[0])
                break


def _refiner(norm: _Normaliser, sources: list[tuple[Mapping[str, Any], str]]) -> None:
    for canonical, names in _REFINER_ALIASES.items():
        for section, prefix in sources:
            found = norm.pick(section, names, prefix)
            if found:
                norm.put(("refiner", canonical), found[1], found[0])
                break
    ref = norm.out.get("refiner", {})
    if "enabled" not in ref:
        # Neither flag given: an A1111-style config enables the refiner by naming a checkpoint.
        name = ref.get("model_name")
        enabled = isinstance(name, str) and name.strip().lower() not in _UNSET_NAMES
        norm.put(("refiner", "enabled"), enabled, norm.origin.get(("refiner", "model_name"), "refiner"))
    name = ref.get("model_name")
    if isinstance(name, str) and name.strip().lower() in _UNSET_NAMES:
        ref["model_name"] = None


def _upscale(norm: _Normaliser, section: Mapping[str, Any], prefix: str) -> None:
    used: set[str] = set()
    for canonical, names in _UPSCALE_ALIASES.items():
        used.update(names)
        found = norm.pick(section, names, prefix)
        if found:
            norm.put(("upscale", canonical), found[1], found[0])
    for key, value in section.items():
        if key not in used and key not in ("enabled",):
            norm.put(("upscale", key), value, f"{prefix}{key}")


def _adetailer(norm: _Normaliser, section: Mapping[str, Any], prefix: str) -> None:
    """Flat ``adetailer_*`` / ``adetailer_hands_*`` / ``ad_*`` keys -> face and hands passes."""
    hands_on = any(bool(section.get(k)) for k in ("enable_hands_pass", "ad_hands_enabled"))
    face_args: dict[str, Any] = {}
    for key, value in section.items():
        if key in ("enabled", "adetailer_enabled", "enable_hands_pass", "ad_hands_enabled"):
            continue
        if key.startswith("adetailer_hands_"):
            name = key.removeprefix("adetailer_hands_")
            if name in _AD_PASS_KEYS and hands_on:
                norm.put(("adetailer", "hands", _AD_PASS_KEYS[name]), value, f"{prefix}{key}")
            elif name not in _AD_PASS_KEYS:
                norm.put(("adetailer", key), value, f"{prefix}{key}")
        elif key.startswith("adetailer_"):
            name = key.removeprefix("adetailer_")
            if name in _AD_PASS_KEYS:
                norm.put(("adetailer", "face", _AD_PASS_KEYS[name]), value, f"{prefix}{key}")
            else:
                norm.put(("adetailer", key), value, f"{prefix}{key}")
        elif key.startswith("ad_"):
            target = "ad_mask_k" if key == "ad_mask_k_largest" else key  # renamed upstream
            face_args[target] = value
            norm.origin[("adetailer", "face", "ad_args", target)] = f"{prefix}{key}"
        elif key in _AD_PASS_KEYS:
            norm.put(("adetailer", "face", _AD_PASS_KEYS[key]), value, f"{prefix}{key}")
        else:
            norm.put(("adetailer", key), value, f"{prefix}{key}")
    if face_args:
        norm.put(("adetailer", "face", "ad_args"), face_args, f"{prefix}ad_*")
    if hands_on:
        hands = norm.out.setdefault("adetailer", {}).setdefault("hands", {})
        hands.setdefault("model", "hand_yolov8n.pt")


def _flag(value: Any, path: str, norm: _Normaliser) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    norm.problems.append(FieldProblem(path, "must be true or false", value))
    return None


def _normalise_flat(raw: Mapping[str, Any], norm: _Normaliser) -> None:
    norm.unwritten = {
        ("refiner", "model_name"): "refiner_model_name",
        ("refiner", "switch_at"): "refiner_switch_at",
        ("refiner", "switch_step"): "refiner_switch_step",
        ("img2img", "init_images"): "img2img_config.init_images",
    }
    for stage in _STAGES:
        flag = _flag(raw.get(f"{stage}_enabled"), f"{stage}_enabled", norm)
        norm.put((f"{stage}_enabled",), bool(flag), f"{stage}_enabled")
    txt = _as_mapping(raw.get("txt2img_config"), "txt2img_config", norm)
    _generation(norm, "txt2img", txt, "txt2img_config.")
    _generation(
        norm, "img2img", _as_mapping(raw.get("img2img_config"), "img2img_config", norm), "img2img_config."
    )
    _upscale(norm, _as_mapping(raw.get("upscale_config"), "upscale_config", norm), "upscale_config.")
    _adetailer(norm, _as_mapping(raw.get("adetailer_config"), "adetailer_config", norm), "adetailer_config.")
    _hires(norm, [(raw, ""), (txt, "txt2img_config.")])
    _refiner(norm, [(raw, ""), (txt, "txt2img_config.")])
    used = {f"{s}_{suffix}" for s in _STAGES for suffix in ("enabled", "config")}
    used |= {n for names in (*_HIRES_ALIASES.values(), *_REFINER_ALIASES.values()) for n in names}
    used.add("callback_url")
    _extras(raw, used, norm)


def _normalise_nested(raw: Mapping[str, Any], norm: _Normaliser) -> None:
    norm.unwritten = {
        ("refiner", "model_name"): "txt2img.refiner_checkpoint",
        ("refiner", "switch_at"): "txt2img.refiner_switch_at",
        ("refiner", "switch_step"): "txt2img.refiner_switch_steps",
        ("img2img", "init_images"): "img2img.init_images",
    }
    pipeline = _as_mapping(raw.get("pipeline"), "pipeline", norm)
    sections = {s: _as_mapping(raw.get(s), s, norm) for s in _STAGES}
    for stage in _STAGES:
        candidates = [
            (pipeline.get(f"{stage}_enabled"), f"pipeline.{stage}_enabled"),
            (sections[stage].get("enabled"), f"{stage}.enabled"),
            (sections[stage].get(f"{stage}_enabled"), f"{stage}.{stage}_enabled"),
            (raw.get(f"{stage}_enabled"), f"{stage}_enabled"),
        ]
        value: bool | None = None
        where = f"pipeline.{stage}_enabled"
        for candidate, path in candidates:
            value = _flag(candidate, path, norm)
            if value is not None:
                where = path
                break
        if value is None:
            value = stage == "txt2img"  # StableNew: txt2img is on unless something says otherwise
        norm.put((f"{stage}_enabled",), value, where)
    _generation(norm, "txt2img", sections["txt2img"], "txt2img.")
    _generation(norm, "img2img", sections["img2img"], "img2img.")
    _upscale(norm, sections["upscale"], "upscale.")
    _adetailer(norm, sections["adetailer"], "adetailer.")
    hires_fix = _as_mapping(raw.get("hires_fix"), "hires_fix", norm)
    _hires(norm, [(sections["txt2img"], "txt2img."), (raw, "")])
    for canonical, key in _HIRES_FIX_KEYS.items():  # hires_fix fills what txt2img left unsaid
        if canonical not in norm.out.get("hires", {}) and key in hires_fix:
            norm.put(("hires", canonical), hires_fix[key], f"hires_fix.{key}")
    _refiner(norm, [(sections["txt2img"], "txt2img."), (raw, "")])
    _extras(raw, set(_NESTED_SECTIONS) | {"callback_url"}, norm)


def _extras(raw: Mapping[str, Any], used: set[str], norm: _Normaliser) -> None:
    if "callback_url" in raw and raw["callback_url"] is not None:
        norm.put(("callback_url",), raw["callback_url"], "callback_url")
    extras = {k: v for k, v in raw.items() if k not in used}
    if extras:
        norm.put(("extras",), extras, "extras")


def _unwrap(raw: Mapping[str, Any], norm: _Normaliser) -> Mapping[str, Any]:
    if "schema" not in raw and "execution_config" not in raw:
        return raw
    schema = raw.get("schema")
    if schema not in SUPPORTED_WRAPPER_SCHEMAS:
        supported = ", ".join(sorted(SUPPORTED_WRAPPER_SCHEMAS))
        norm.problems.append(
            FieldProblem("schema", f"unknown config schema (supported: {supported})", schema)
        )
        return {}
    return _as_mapping(raw.get("execution_config"), "execution_config", norm)


def detect_shape(raw: Mapping[str, Any]) -> Literal["flat", "nested"]:
    """``nested`` when any StableNew preset section is present, else ``flat``."""
    if any(s in raw for s in _NESTED_SECTIONS):
        return "nested"
    return "flat"


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must not be empty",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "list_type": "must be a list",
    "string_pattern_mismatch": "must be an http(s) URL",
    "extra_forbidden": "is not a known field",
    "too_long": "must have at most {max_length} items",
}


def _problem_from_error(err: Mapping[str, Any], norm: _Normaliser) -> FieldProblem:
    loc: tuple[str | int, ...] = tuple(err.get("loc", ()))
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    template = _MESSAGES.get(kind)
    if template is not None:
        message = template.format(**ctx) if ctx else template
        if kind == "string_too_long":
            return FieldProblem(
                norm.source_of(loc), message + f" (got {len(str(err.get('input')))})", has_value=False
            )
        return FieldProblem(norm.source_of(loc), message, err.get("input"))
    text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    # Model-level messages carry their own "field: message (got x)" text.
    field, sep, rest = text.partition(": ")
    if sep and "." in field and " " not in field:
        return FieldProblem(norm.source_of(tuple(field.split("."))), rest, has_value=False)
    if sep and kind == "value_error" and field.isidentifier():  # a section-level check naming its field
        return FieldProblem(norm.source_of((*loc, field)), rest, has_value=False)
    if " (got " in text:
        return FieldProblem(norm.source_of(loc), text, has_value=False)
    return FieldProblem(norm.source_of(loc), text, err.get("input"))


def parse_config(raw: Mapping[str, Any] | PipelineConfig, *, source: str | None = None) -> PipelineConfig:
    """Validate a config of any accepted shape into a :class:`PipelineConfig`.

    Raises:
        ConfigError: listing every problem, each with the field path as written and the bad value.
    """
    if isinstance(raw, PipelineConfig):
        return raw
    norm = _Normaliser()
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [FieldProblem("", "a pipeline config must be a JSON object", type(raw).__name__)], source=source
        )
    body = _unwrap(raw, norm)
    if detect_shape(body) == "nested":
        _normalise_nested(body, norm)
    else:
        _normalise_flat(body, norm)
    try:
        cfg = PipelineConfig.model_validate(norm.out)
    except ValidationError as exc:
        problems = [_problem_from_error(e, norm) for e in exc.errors(include_url=False)]
        raise ConfigError([*norm.problems, *problems], source=source) from None
    if norm.problems:
        raise ConfigError(norm.problems, source=source)
    return cfg


__all__ = [
    "A1111_SCHEDULERS",
    "ADetailerBase",
    "ADetailerPass",
    "ADetailerSection",
    "ADetailerStageConfig",
    "GenerationSection",
    "HiresSection",
    "Img2ImgSection",
    "PipelineConfig",
    "RefinerSection",
    "SamplerSchedulerConflict",
    "Txt2ImgSection",
    "UpscaleSection",
    "detect_shape",
    "output_limit_problems",
    "parse_config",
    "resolve_sampler",
    "scheduler_key",
    "size_problems",
    "split_sampler_name",
]
