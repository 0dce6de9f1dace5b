"""The config models: PipelineConfig and its sections, one validated model for every config shape StableNew produces.

Accepted inputs (see docs/configuration.md and docs/stablenew-keys.md):

1. the flat PR-107 shape (``txt2img_enabled``, ``txt2img_config``, ``refiner_*``, ``hires_*`` ...);
2. StableNew's nested preset (sections ``txt2img``, ``img2img``, ``upscale``, ``adetailer``,
   ``pipeline``, ``hires_fix``) with A1111 key names and StableNew's aliases;
3. the layered wrapper ``{"schema": "stablenew.config.v2.6", "execution_config": {<shape 2>}}``.

``parse_config`` (:mod:`stablenew.pipeline._normalise`) maps each shape onto these models' layout, then
validates it with them. Keys StableNew carries that we deliberately do not use are kept (``extras``) but never
sent to the WebUI (the table of :mod:`stablenew.pipeline._keys`; any other key is an error); keys that would
ask for something this pipeline cannot do are refused instead of ignored (img2img inpainting keys, an
``upscale_mode`` other than "single", img2img ``width`` without ``height``).

Also decided here, so the plan already carries the result:

- a sampler name carrying a scheduler ("DPM++ 2M Karras", A1111's pre-1.9 spelling) is split into
  sampler + scheduler (``resolve_sampler``, :mod:`stablenew.pipeline._samplers`); a scheduler given beside it
  must agree;
- every field follows the limits and value rules of :mod:`stablenew.pipeline._limits` (ranges, types taken
  as written, text without control characters, names safe as paths), and the stages enabled together stay
  within the size and number of images one stage may make (:func:`~stablenew.pipeline._limits.output_limit_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from stablenew.errors import FieldProblem

from ._adetailer import ADetailerSection
from ._image_data import image_data_problem
from ._limits import (
    MAX_BATCH,
    MAX_INIT_IMAGE_B64,
    MAX_OUTPUT_SIDE,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STYLES,
    MIN_SIDE,
    Name,
    Prompt,
    RequiredName,
    Side,
    output_limit_problems,
)
from ._samplers import UNSET_NAMES, split_sampler_of
from ._sections import Section, unset_vae

SUPPORTED_WRAPPER_SCHEMAS = frozenset({"stablenew.config.v2.6"})


class GenerationSection(Section):
    """Fields shared by the txt2img and img2img stages.

    A sampler name that carries a scheduler ("DPM++ 2M Karras", the pre-1.9 A1111 spelling) is split into
    ``sampler_name`` + ``scheduler`` (see :func:`resolve_sampler`). ``seed_resize_from_w/h`` (A1111's "resize
    seed from"; -1 or 0 = off) are given together or not at all.
    """

    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    steps: int = Field(30, ge=1, le=MAX_STEPS)
    cfg_scale: float = Field(7.0, ge=1, le=30)
    sampler_name: RequiredName = "DPM++ 2M"
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
        if isinstance(value, str) and value.strip().lower() in UNSET_NAMES:
            return None
        return value

    @field_validator("vae", mode="before")
    @classmethod
    def _vae(cls, value: Any) -> Any:
        return unset_vae(value)

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> GenerationSection:
        split_sampler_of(self, "sampler_name", "scheduler")
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


MAX_INIT_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE


def _decodable_image(value: str) -> str:
    problem = image_data_problem(value, max_pixels=MAX_INIT_IMAGE_PIXELS)
    if problem is not None:
        raise ValueError(problem)
    return value


# Base64 image data that decodes to its end, never a URL or a path: the WebUI would fetch a URL itself.
InitImage = Annotated[
    str, Field(min_length=16, max_length=MAX_INIT_IMAGE_B64), AfterValidator(_decodable_image)
]


class Img2ImgSection(GenerationSection):
    """The img2img stage. ``width``/``height`` default to the input image's size; give both or neither.

    Inpainting (StableNew's ``mask_mode``, ``mask_image_path``, ``mask_blur``) is refused, not ignored.
    """

    denoising_strength: float = Field(0.5, ge=0, le=1)
    width: Side | None = None
    height: Side | None = None
    prompt: Prompt | None = None  # type: ignore[assignment]
    negative_prompt: Prompt | None = None  # type: ignore[assignment]
    init_images: list[InitImage] = Field(default_factory=list, max_length=MAX_BATCH)

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


class UpscaleSection(Section):
    """The upscale stage (``/sdapi/v1/extra-single-image``)."""

    upscaler: RequiredName = "R-ESRGAN 4x+"
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


class HiresSection(Section):
    """Hires fix metadata for the txt2img stage."""

    enabled: bool = False
    upscaler: RequiredName = "Latent"
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
        if isinstance(value, str) and value.strip().lower() in UNSET_NAMES | {"use same sampler"}:
            return None
        return value


class RefinerSection(Section):
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
    _ignored_keys: tuple[FieldProblem, ...] = PrivateAttr(default=())

    @property
    def ignored_keys(self) -> tuple[FieldProblem, ...]:
        """The unknown keys a lenient :func:`parse_config` let through (never sent); empty otherwise."""
        return self._ignored_keys

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
