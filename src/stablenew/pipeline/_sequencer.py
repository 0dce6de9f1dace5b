"""StageSequencer: the one place that decides which stages run, and in what order.

Canonical order, always: ``txt2img -> img2img -> upscale -> adetailer`` among the enabled
stages. Refiner and hires are metadata attached to the txt2img stage, never stages of their own.

Design choice (PR-107 leaves it open): a config with every stage off yields an *empty plan*,
not an error. The runner returns ``{"images": [], "meta": {}}`` for it and the producer refuses
to enqueue it, so an empty plan never reaches a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stablenew.errors import InvalidStagePlanError

from ._config import PipelineConfig
from ._normalise import parse_config
from ._stage_models import (
    ADETAILER_NEEDS_GENERATION,
    StageExecution,
    StageExecutionPlan,
    StageType,
)


class StageSequencer:
    """Turns a pipeline config (any accepted shape) into a :class:`StageExecutionPlan`."""

    def build_plan(
        self, pipeline_config: Mapping[str, Any] | PipelineConfig, *, lenient: bool = False
    ) -> StageExecutionPlan:
        """Validate ``pipeline_config`` and build its plan.

        ``lenient`` lets unknown keys through as warnings (:func:`parse_config`); the plan lists them in
        :attr:`~StageExecutionPlan.ignored_keys`.

        Raises:
            ConfigError: the config is invalid (every problem listed, with field paths).
            InvalidStagePlanError: ADetailer is enabled without txt2img or img2img.
        """
        cfg = parse_config(pipeline_config, lenient=lenient)
        has_generation = cfg.txt2img_enabled or cfg.img2img_enabled
        if cfg.adetailer_enabled and not has_generation:
            raise InvalidStagePlanError(ADETAILER_NEEDS_GENERATION)

        stages: list[StageExecution] = []
        generation: dict[str, Any] = {}
        if cfg.txt2img_enabled:
            stages.append(self._txt2img(cfg))
            generation = cfg.txt2img.known()
        if cfg.img2img_enabled:
            img2img = _inherit(cfg.img2img.known(), generation)
            stages.append(_stage(StageType.IMG2IMG, img2img))
            generation = img2img
        if cfg.upscale_enabled:
            stages.append(_stage(StageType.UPSCALE, cfg.upscale.known()))
        if cfg.adetailer_enabled:
            adetailer = cfg.adetailer.model_dump(mode="json", include={"face", "hands"})
            adetailer["base"] = {key: generation.get(key) for key in _ADETAILER_BASE}
            stages.append(_stage(StageType.ADETAILER, adetailer, adetailer_enabled=True))
        plan = StageExecutionPlan(stages=stages, callback_url=cfg.callback_url)
        plan._ignored_keys = cfg.ignored_keys
        return plan

    @staticmethod
    def _txt2img(cfg: PipelineConfig) -> StageExecution:
        ref, hires = cfg.refiner, cfg.hires
        metadata: dict[str, Any] = {}
        if ref.enabled:
            metadata |= {
                "refiner_enabled": True,
                "refiner_model_name": ref.model_name,
                "refiner_switch_step": ref.switch_step or None,
                "refiner_switch_at": ref.switch_at,
            }
        if hires.enabled:
            metadata |= {
                "hires_enabled": True,
                "hires_upscaler_name": hires.upscaler,
                "hires_denoise_strength": hires.denoise,
                "hires_scale_factor": hires.scale,
                "hires_second_pass_steps": hires.steps,
                "hires_resize_x": hires.resize_x,
                "hires_resize_y": hires.resize_y,
                "hires_sampler_name": hires.sampler_name,
            }
        return _stage(StageType.TXT2IMG, cfg.txt2img.known(), **metadata)


# What the ADetailer pass inherits from the last generation stage (its prompt, model, sampler...).
_ADETAILER_BASE = (
    "prompt",
    "negative_prompt",
    "model",
    "vae",
    "sampler_name",
    "scheduler",
    "steps",
    "cfg_scale",
    "clip_skip",
    "seed",
)
# What img2img inherits from txt2img when it does not say otherwise.
_IMG2IMG_INHERITS = ("prompt", "negative_prompt", "model", "vae", "clip_skip")


def _inherit(img2img: dict[str, Any], txt2img: dict[str, Any]) -> dict[str, Any]:
    resolved = dict(img2img)
    for key in _IMG2IMG_INHERITS:
        if resolved.get(key) is None:
            resolved[key] = txt2img.get(key)
    for key in ("prompt", "negative_prompt"):
        if resolved[key] is None:
            resolved[key] = ""
    return resolved


def _stage(stage_type: StageType, config: dict[str, Any], **metadata: Any) -> StageExecution:
    return StageExecution(stage_type=stage_type, config_key=stage_type.value, config=config, **metadata)
