"""PipelineRunner: executes a StageExecutionPlan, stage by stage, chaining images forward.

The runner is pure orchestration. It knows the thing that really runs a stage only through
the :class:`StageExecutor` protocol (the WebUI executor in production, a stub in tests), and it
touches no network, Redis or disk itself.

The *neutral payload* handed to ``executor.run_stage(stage_type, payload)``::

    {
      "stage": "img2img",                 # the stage type's value
      "index": 1,                         # position in the plan
      "config": {...},                    # the stage's validated config snapshot
      "refiner": {...} | None,            # txt2img only, when enabled
      "hires": {...} | None,              # txt2img only, when enabled
      "input_images": ["<b64>", ...],     # the previous stage's images ([] for the first stage)
      "input_seed": 1234 | None,          # the previous stage's resolved seed
      "input_from_previous": "txt2img" | None,
    }

An executor returns ``{"images": [...], "meta": {...}}``; ``meta["seed"]`` (if present) is the
seed the stage really used, and is what the next stage receives as ``input_seed``. It may add
``"decoded"``: the images' bytes, in order, when it decoded them anyway (the WebUI executor checks
each image to its end), so that the hook that writes them need not decode them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ._config import PipelineConfig
from ._sequencer import StageSequencer
from ._stage_models import StageExecution, StageExecutionPlan, StageType

StageResult = dict[str, Any]


class StageExecutor(Protocol):
    """Runs one stage. Returns ``{"images": [b64, ...], "meta": {...}}``."""

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> StageResult: ...


class StageHooks(Protocol):
    """Optional observer of a run (the worker persists state and honours cancel through it)."""

    def before_stage(self, index: int, stage: StageExecution) -> StageResult | None:
        """Return a stored result to skip the stage (resume), or None to run it."""

    def after_stage(self, index: int, stage: StageExecution, result: StageResult) -> None:
        """Called once a stage ran. ``result["images"]`` is emptied when the next stage starts (the
        images are handed over to it): a hook that keeps them must copy the list."""


class PipelineRunner:
    """Runs plans. ``run`` accepts a plan or any config shape the sequencer accepts."""

    def __init__(
        self,
        executor: StageExecutor,
        sequencer: StageSequencer | None = None,
        hooks: StageHooks | None = None,
    ) -> None:
        self._executor = executor
        self._sequencer = sequencer or StageSequencer()
        self._hooks = hooks

    def run(self, plan_or_config: StageExecutionPlan | Mapping[str, Any] | PipelineConfig) -> StageResult:
        """Run every stage in order and return the last stage's ``images`` and ``meta``.

        An empty plan (every stage off) returns ``{"images": [], "meta": {}}`` without calling the
        executor. ``meta["stages"]`` holds every stage's meta, in order.
        """
        if isinstance(plan_or_config, StageExecutionPlan):
            plan = plan_or_config
        else:
            plan = self._sequencer.build_plan(plan_or_config)
        if plan.is_empty():
            return {"images": [], "meta": {}}

        last_image_meta: StageResult | None = None
        history: list[dict[str, Any]] = []
        for index, stage in enumerate(plan):
            stored = self._hooks.before_stage(index, stage) if self._hooks else None
            if stored is not None:
                last_image_meta = stored
            else:
                last_image_meta = self._call_stage(stage, last_image_meta, index=index)
                if self._hooks:
                    self._hooks.after_stage(index, stage, last_image_meta)
            history.append(dict(last_image_meta.get("meta") or {}))

        assert last_image_meta is not None
        meta = dict(last_image_meta.get("meta") or {})
        meta["stages"] = history
        return {"images": list(last_image_meta.get("images") or []), "meta": meta}

    def _call_stage(
        self,
        stage: StageExecution,
        last_image_meta: StageResult | None,
        *,
        index: int = 0,
    ) -> StageResult:
        """Build the neutral payload for ``stage`` and hand it to the executor."""
        payload = build_stage_payload(stage, last_image_meta, index=index)
        if last_image_meta is not None and isinstance(last_image_meta.get("images"), list):
            # Handed over to the payload: the runner keeps no second reference to multi-MB images
            # (the previous stage's hooks have already stored them).
            last_image_meta["images"].clear()
        result = self._executor.run_stage(stage.stage_type, payload)
        if not isinstance(result, Mapping) or not isinstance(result.get("images"), list):
            raise TypeError(f"executor returned {type(result).__name__} without an 'images' list")
        return dict(result)


def build_stage_payload(
    stage: StageExecution,
    last_image_meta: Mapping[str, Any] | None,
    *,
    index: int = 0,
) -> dict[str, Any]:
    """The neutral payload: stage config + refiner/hires metadata + the previous stage's output."""
    previous_meta: Mapping[str, Any] = (last_image_meta or {}).get("meta") or {}
    return {
        "stage": stage.stage_type.value,
        "index": index,
        "config": dict(stage.config),
        "refiner": _refiner(stage),
        "hires": _hires(stage),
        "input_images": list((last_image_meta or {}).get("images") or []),
        "input_seed": previous_meta.get("seed"),
        "input_from_previous": previous_meta.get("stage") if last_image_meta else None,
    }


def _refiner(stage: StageExecution) -> dict[str, Any] | None:
    if not stage.refiner_enabled:
        return None
    return {
        "model_name": stage.refiner_model_name,
        "switch_at": stage.refiner_switch_at,
        "switch_step": stage.refiner_switch_step,
    }


def _hires(stage: StageExecution) -> dict[str, Any] | None:
    if not stage.hires_enabled:
        return None
    return {
        "upscaler": stage.hires_upscaler_name,
        "denoise": stage.hires_denoise_strength,
        "scale": stage.hires_scale_factor,
        "second_pass_steps": stage.hires_second_pass_steps,
        "resize_x": stage.hires_resize_x,
        "resize_y": stage.hires_resize_y,
        "sampler_name": stage.hires_sampler_name,
    }
