"""The ADetailer stage's config: its passes (face, hands) and the ``base`` its main pass takes over.

:class:`ADetailerSection` is what a config holds (``adetailer`` in
:class:`~stablenew.pipeline._config.PipelineConfig`); :class:`ADetailerStageConfig` is what a plan carries,
the same passes plus the :class:`ADetailerBase` the sequencer fills in.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._limits import (
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    Name,
    Prompt,
    RequiredName,
    name_problem,
    text_problem,
)
from ._samplers import SAME_SCHEDULER, UNSET_NAMES, split_sampler_of
from ._sections import Section, unset_vae

# The ``ad_*`` pass-throughs that name a model, sampler or scheduler (the rest are numbers, flags or text).
_AD_NAME_ARGS = frozenset(
    {
        "ad_model",
        "ad_checkpoint",
        "ad_vae",
        "ad_sampler",
        "ad_scheduler",
        "ad_controlnet_model",
        "ad_controlnet_module",
        "ad_mask_filter_method",
        "ad_mask_merge_invert",
    }
)


class ADetailerPass(Section):
    """One ADetailer pass (a tab), in StableNew's ``adetailer_*`` vocabulary.

    The payload builder maps these names to ADetailer's ``ad_*`` args; ``ad_*`` keys given in the
    config are passed through there and validated against ADetailer's schema.
    """

    model: RequiredName = "face_yolov8n.pt"
    confidence: float = Field(0.3, ge=0, le=1)
    prompt: Prompt = ""
    negative_prompt: Prompt = ""
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
        unset = UNSET_NAMES | SAME_SCHEDULER | {"use same sampler"}
        if isinstance(value, str) and value.strip().lower() in unset:
            return None
        return value

    @field_validator("ad_args")
    @classmethod
    def _safe_ad_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Names and text passed through as ``ad_*`` follow the rules of the mapped fields (types and
        ranges are checked against ADetailer's schema by the payload builder)."""
        for key, value in args.items():
            if not isinstance(value, str):
                continue
            problem = name_problem(value) if key in _AD_NAME_ARGS else text_problem(value)
            if problem:
                raise ValueError(f"{key}: {problem} (got {value!r})")
        return args

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> ADetailerPass:
        split_sampler_of(self, "sampler", "scheduler")
        return self

    @model_validator(mode="after")
    def _not_skipped(self) -> ADetailerPass:
        # ADetailer skips such a tab; with no live tab it turns itself off and the request runs as a plain
        # img2img at its own denoise (0.75 by default): a regenerated image, answered with HTTP 200.
        if self.ad_args.get("ad_tab_enable") is False:
            raise ValueError("ad_tab_enable: switches the pass off, so ADetailer would skip it (got False)")
        model = self.ad_args.get("ad_model", self.model)
        if isinstance(model, str) and model.strip().lower() == "none":
            key = "ad_model" if "ad_model" in self.ad_args else "model"
            raise ValueError(f"{key}: names no detector, so ADetailer would skip the pass (got {model!r})")
        return self


class ADetailerSection(Section):
    """The ADetailer stage: a face pass and an optional hands pass."""

    face: ADetailerPass = Field(default_factory=ADetailerPass)
    hands: ADetailerPass | None = None


class ADetailerBase(BaseModel):
    """What the ADetailer stage's main (skip-img2img) pass takes from the last generation stage.

    The sequencer fills it; a worker re-validates it (:class:`ADetailerStageConfig`) so a plan from the queue
    cannot carry an unchecked size, prompt or batch through it: unknown keys are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Prompt | None = None
    negative_prompt: Prompt | None = None
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
        return unset_vae(value)

    @model_validator(mode="after")
    def _sampler_carrying_a_scheduler(self) -> ADetailerBase:
        split_sampler_of(self, "sampler_name", "scheduler")
        return self


class ADetailerStageConfig(ADetailerSection):
    """The ADetailer stage's config as a plan carries it: the passes plus their ``base``."""

    base: ADetailerBase = Field(default_factory=ADetailerBase)
