"""What a config must pass before it is enqueued, and how long its job may run.

Pure decisions on the submit side (:func:`build_checked_plan`, :func:`estimate_timeout`), plus
:func:`webui_preflight`, the optional check of a plan's names against a live WebUI.
:class:`~stablenew.jobs.producer.Producer` runs them; the CLI's ``validate`` and ``plan`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem, InvalidStagePlanError
from stablenew.pipeline import (
    ADETAILER_NEEDS_GENERATION,
    PipelineConfig,
    StageExecutionPlan,
    StageSequencer,
    StageType,
    build_stage_payload,
)
from stablenew.settings import Settings
from stablenew.webui import validate_stage_payload

ConfigInput = Mapping[str, Any] | PipelineConfig | StageExecutionPlan

_MIN_TIMEOUT_S = 300


def build_checked_plan(
    config: ConfigInput, *, source: str | None = None, lenient: bool = False
) -> StageExecutionPlan:
    """Validate ``config`` into a plan that is safe to enqueue.

    ``lenient`` turns unknown config keys into warnings (the plan's ``ignored_keys``) instead of errors.

    Raises:
        ConfigError: invalid config, or an ADetailer tab the WebUI would silently drop.
        InvalidStagePlanError: ADetailer without generation, or nothing to run at all.
    """
    try:
        plan = (
            config
            if isinstance(config, StageExecutionPlan)
            else StageSequencer().build_plan(config, lenient=lenient)
        )
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.problems, source=source) from None
        raise
    except InvalidStagePlanError as exc:
        if str(exc) != ADETAILER_NEEDS_GENERATION:
            raise
        where = f"{source}: " if source else ""
        raise InvalidStagePlanError(
            f"{where}adetailer_enabled: {exc} (got adetailer on, txt2img and img2img off)"
        ) from None
    if plan.is_empty():
        raise InvalidStagePlanError(
            f"nothing to run{f' in {source}' if source else ''}: every stage is disabled"
        )
    problems: list[FieldProblem] = []
    for index, stage in enumerate(plan):
        if stage.stage_type is StageType.TXT2IMG and not str(stage.config.get("prompt") or "").strip():
            # A blank prompt is almost always a GUI field left empty: the WebUI would spend the GPU
            # time on an image of nothing in particular.
            prompt = stage.config.get("prompt")
            problems.append(
                FieldProblem("txt2img.prompt", "required, and not blank, for a txt2img stage", prompt)
            )
        try:
            validate_stage_payload(build_stage_payload(stage, None, index=index))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source=source)
    return plan


def estimate_timeout(plan: StageExecutionPlan, *, ceiling: int) -> int:
    """A generous ``job_timeout`` from the plan's work (stages, steps, megapixels, batch)."""
    total = 60.0
    for stage in plan:
        cfg = stage.config
        count = int(cfg.get("batch_size") or 1) * int(cfg.get("n_iter") or 1)
        megapixels = (int(cfg.get("width") or 1024) * int(cfg.get("height") or 1024)) / 1e6
        steps = int(cfg.get("steps") or 30)
        if stage.stage_type is StageType.TXT2IMG and stage.hires_enabled:
            factor = (stage.hires_scale_factor or 2.0) ** 2
            steps += int(stage.hires_second_pass_steps or steps) * int(factor)
        if stage.stage_type is StageType.UPSCALE:
            steps = 30
        total += 60 + count * steps * max(megapixels, 0.25) * 2.0
    return int(min(max(total, _MIN_TIMEOUT_S), ceiling))


def webui_preflight(settings: Settings) -> Callable[[StageExecutionPlan], None]:
    """A ``preflight`` for :class:`~stablenew.jobs.producer.Producer` that asks
    ``settings.webui_url`` whether it has every checkpoint, sampler, scheduler, upscaler and
    ADetailer model a plan names (one inventory fetch, reused for every plan). A missing name
    becomes a :class:`ConfigError` naming the field; an unreachable WebUI raises
    :class:`~stablenew.errors.WebUIUnavailable`."""
    from stablenew.webui import WebUIClient, WebUIExecutor

    return WebUIExecutor(WebUIClient.from_settings(settings, read_timeout=60.0)).preflight


__all__ = ["ConfigInput", "build_checked_plan", "estimate_timeout", "webui_preflight"]
