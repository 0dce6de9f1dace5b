"""The plan: StageType, StageExecution and StageExecutionPlan (PR-107's data model).

Models are frozen pydantic models that round-trip through JSON exactly::

    StageExecutionPlan.model_validate_json(plan.model_dump_json()) == plan

A serialized plan carries ``schema_version`` and is at most :data:`MAX_PLAN_JSON_CHARS` long.
:meth:`StageExecutionPlan.from_json` is what a worker uses: it refuses a longer text before parsing
it, an unknown version with :class:`PlanVersionError`, and re-checks the
invariants the sequencer guarantees (canonical order, ADetailer after a generation stage,
refiner/hires only on txt2img, every stage config within limits, the ADetailer stage's ``base``
included, and the size and number of images the stages make) so a plan injected straight into
Redis gets no further than one built by :class:`StageSequencer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from stablenew.errors import ConfigError, FieldProblem, InvalidStagePlanError, PlanVersionError

from ._adetailer import ADetailerStageConfig
from ._config import Img2ImgSection, Txt2ImgSection, UpscaleSection
from ._limits import (
    MAX_INIT_IMAGE_B64,
    MAX_NAME_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    output_limit_problems,
)

PLAN_SCHEMA_VERSION = 1

# A serialized plan is at most this long: one init image at its own maximum, plus 16 MiB for the
# rest (more images, prompts, ADetailer args). ``to_json`` refuses to write a longer plan and
# ``from_json`` refuses to parse one, so a worker never loads an arbitrarily large job.
MAX_PLAN_JSON_CHARS = MAX_INIT_IMAGE_B64 + 16 * 1024 * 1024

ADETAILER_NEEDS_GENERATION = "ADetailer requires at least one generation stage (txt2img or img2img)."


class StageType(str, Enum):
    """The four stage kinds, in canonical order. Refiner and hires are not stages."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"
    ADETAILER = "adetailer"

    @property
    def is_generation(self) -> bool:
        return self in (StageType.TXT2IMG, StageType.IMG2IMG)


CANONICAL_ORDER: tuple[StageType, ...] = tuple(StageType)

_SECTION_MODELS: dict[StageType, type[BaseModel]] = {
    StageType.TXT2IMG: Txt2ImgSection,
    StageType.IMG2IMG: Img2ImgSection,
    StageType.UPSCALE: UpscaleSection,
    StageType.ADETAILER: ADetailerStageConfig,  # the passes and the main pass's ``base``
}


class StageExecution(BaseModel):
    """One stage of a plan: what runs, with which config snapshot and which metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage_type: StageType
    config_key: str
    config: dict[str, Any] = Field(default_factory=dict)

    refiner_enabled: bool = False
    refiner_model_name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    refiner_switch_step: int | None = Field(None, ge=0, le=MAX_STEPS)
    refiner_switch_at: float | None = Field(None, gt=0, lt=1)

    hires_enabled: bool = False
    hires_upscaler_name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    hires_denoise_strength: float | None = Field(None, ge=0, le=1)
    hires_scale_factor: float | None = Field(None, ge=1, le=8)
    hires_second_pass_steps: int | None = Field(None, ge=0, le=MAX_STEPS)
    hires_resize_x: int | None = Field(None, ge=0, le=MAX_SIDE)
    hires_resize_y: int | None = Field(None, ge=0, le=MAX_SIDE)
    hires_sampler_name: str | None = Field(None, max_length=MAX_NAME_CHARS)

    adetailer_enabled: bool = False

    @model_validator(mode="after")
    def _metadata_is_consistent(self) -> StageExecution:
        if self.config_key != self.stage_type.value:
            raise ValueError(f"config_key must be {self.stage_type.value!r} (got {self.config_key!r})")
        if self.stage_type is not StageType.TXT2IMG and (self.refiner_enabled or self.hires_enabled):
            raise ValueError("refiner/hires metadata belongs to the txt2img stage only")
        if self.refiner_enabled and (not self.refiner_model_name or self.refiner_switch_at is None):
            raise ValueError("refiner_enabled needs refiner_model_name and refiner_switch_at")
        if self.hires_enabled and (self.hires_upscaler_name is None or self.hires_denoise_strength is None):
            raise ValueError("hires_enabled needs hires_upscaler_name and hires_denoise_strength")
        if self.adetailer_enabled != (self.stage_type is StageType.ADETAILER):
            raise ValueError("adetailer_enabled is set on the adetailer stage and only there")
        return self


class StageExecutionPlan(BaseModel):
    """An ordered list of stages; the only thing :class:`PipelineRunner` executes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = PLAN_SCHEMA_VERSION
    stages: list[StageExecution] = Field(default_factory=list)
    callback_url: str | None = Field(None, pattern=r"^https?://")
    _ignored_keys: tuple[FieldProblem, ...] = PrivateAttr(default=())

    @property
    def ignored_keys(self) -> tuple[FieldProblem, ...]:
        """Unknown config keys a lenient build let through (never sent, not part of the JSON)."""
        return self._ignored_keys

    @model_validator(mode="before")
    @classmethod
    def _known_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema_version" in data:
            version = data["schema_version"]
            if version != PLAN_SCHEMA_VERSION or isinstance(version, bool):
                raise PlanVersionError(version, PLAN_SCHEMA_VERSION)
        return data

    @model_validator(mode="after")
    def _canonical(self) -> StageExecutionPlan:
        check_plan_invariants(self.stages)
        return self

    def is_empty(self) -> bool:
        return not self.stages

    def has_generation_stage(self) -> bool:
        return any(s.stage_type.is_generation for s in self.stages)

    def get_stage_types(self) -> list[StageType]:
        return [s.stage_type for s in self.stages]

    def __iter__(self) -> Iterator[StageExecution]:  # type: ignore[override]
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def to_json(self) -> str:
        """The wire format: compact JSON, what travels through Redis.

        Raises:
            ConfigError: the plan is longer than :data:`MAX_PLAN_JSON_CHARS` (a worker would refuse it).
        """
        text = self.model_dump_json()
        _check_plan_size(len(text))
        return text

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> StageExecutionPlan:
        """Parse and fully re-validate a plan from the wire (never trust the queue).

        Raises:
            PlanVersionError: unknown ``schema_version``.
            InvalidStagePlanError: stages out of canonical order, ADetailer without generation.
            ConfigError: malformed JSON, longer than :data:`MAX_PLAN_JSON_CHARS` (checked before
                parsing, and as ``to_json`` would write it), unknown fields, or a stage config outside
                the limits.
        """
        if isinstance(data, str | bytes):
            _check_plan_size(len(data))
        try:
            obj = json.loads(data) if isinstance(data, str | bytes) else data
        except ValueError as exc:
            raise ConfigError([FieldProblem("plan", f"is not valid JSON: {exc}", has_value=False)]) from None
        if not isinstance(obj, dict):
            raise ConfigError([FieldProblem("plan", "must be a JSON object", type(obj).__name__)])
        if "schema_version" not in obj:
            raise PlanVersionError(None, PLAN_SCHEMA_VERSION)
        try:
            plan = cls.model_validate(obj)
        except ValidationError as exc:
            raise _plan_error(exc) from None
        problems: list[FieldProblem] = []
        configs: list[dict[str, Any]] = []
        for index, stage in enumerate(plan.stages):
            try:
                section = _SECTION_MODELS[stage.stage_type].model_validate(stage.config)
            except ValidationError as exc:
                problems.extend(_config_problem(index, e) for e in exc.errors(include_url=False))
            else:
                configs.append(section.model_dump())
        if not problems:
            problems = _output_limit_problems(plan.stages, configs)
        if problems:
            raise ConfigError(problems, source="(plan)")
        if not isinstance(data, str | bytes) or len(data) > MAX_PLAN_JSON_CHARS // 8:
            # What counts is the length ``to_json`` writes, which can be longer than the text read
            # (defaults filled in, 1e15 written out in full: less than 8 times longer).
            _check_plan_size(len(plan.model_dump_json()))
        return plan


def _check_plan_size(length: int) -> None:
    if length > MAX_PLAN_JSON_CHARS:
        message = (
            f"is {length:,} characters of JSON, over the limit of {MAX_PLAN_JSON_CHARS:,} "
            f"({MAX_PLAN_JSON_CHARS // 2**20} MiB); embed fewer or smaller init images"
        )
        raise ConfigError([FieldProblem("plan", message, has_value=False)], source="(plan)")


def check_plan_invariants(stages: list[StageExecution]) -> None:
    """Canonical order, no duplicates, ADetailer needs a generation stage.

    Raises:
        InvalidStagePlanError: naming the rule that is broken.
    """
    types = [s.stage_type for s in stages]
    if len(set(types)) != len(types):
        raise InvalidStagePlanError(f"a stage appears twice: {[t.value for t in types]}")
    if types != sorted(types, key=CANONICAL_ORDER.index):
        order = " -> ".join(t.value for t in CANONICAL_ORDER)
        raise InvalidStagePlanError(f"stages {[t.value for t in types]} are not in canonical order {order}")
    if StageType.ADETAILER in types and not any(t.is_generation for t in types):
        raise InvalidStagePlanError(ADETAILER_NEEDS_GENERATION)


def _config_problem(index: int, err: Any) -> FieldProblem:
    """A stage config error at ``stages.<i>.config.<field>``; a section-level check names its own field."""
    path: list[Any] = ["stages", index, "config", *err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    field, sep, rest = message.partition(": ")
    if sep and err.get("type") == "value_error" and field.isidentifier():
        return FieldProblem(".".join(str(p) for p in (*path, field)), rest, has_value=False)
    return FieldProblem(".".join(str(p) for p in path), message, err.get("input"))


# The plan's own name of each hires field the output limits may point at.
_HIRES_PLAN_FIELDS = {
    "scale": "hires_scale_factor",
    "resize_x": "hires_resize_x",
    "resize_y": "hires_resize_y",
}


def _output_limit_problems(stages: list[StageExecution], configs: list[dict[str, Any]]) -> list[FieldProblem]:
    """The config-time output-size and image-count limits, re-checked on a plan as it came off the queue.

    ``configs`` are the stages' configs as their section models validated them.
    """
    chain: list[tuple[str, dict[str, Any]]] = []
    index_of: dict[str, int] = {}
    hires: dict[str, Any] | None = None
    for index, (stage, config) in enumerate(zip(stages, configs, strict=True)):
        if stage.stage_type is StageType.ADETAILER:
            continue
        chain.append((stage.stage_type.value, config))
        index_of[stage.stage_type.value] = index
        if stage.hires_enabled:
            hires = {key: getattr(stage, name) for key, name in _HIRES_PLAN_FIELDS.items()}
    problems = []
    for field, message, value in output_limit_problems(chain, hires):
        section, _, key = field.partition(".")
        if section == "hires":
            path = f"stages.{index_of['txt2img']}.{_HIRES_PLAN_FIELDS[key]}"
        else:
            path = f"stages.{index_of[section]}.config.{key}"
        problems.append(FieldProblem(path, message, value))
    return problems


def _plan_error(exc: ValidationError) -> Exception:
    problems: list[FieldProblem] = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidStagePlanError):
            return cause
        path = ".".join(str(p) for p in err["loc"]) or "plan"
        problems.append(FieldProblem(path, str(err["msg"]).removeprefix("Value error, "), err.get("input")))
    return ConfigError(problems, source="(plan)")
