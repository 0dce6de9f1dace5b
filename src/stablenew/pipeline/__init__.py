"""The pure core: config validation, the plan, the sequencer and the runner (no I/O).

Every public name of the pipeline is imported from here; the modules behind it are private:

- ``_limits``: limits and value rules (``MAX_*``, ``Name``, ``Prompt``, :func:`text_problem` ...);
- ``_samplers``: sampler names that carry a scheduler (:func:`resolve_sampler`);
- ``_sections``, ``_adetailer``, ``_config``: the config models, :class:`PipelineConfig` and its sections;
- ``_adetailer_args``: ADetailer's own argument names, types and ranges (:data:`ADETAILER_ARGS`);
- ``_keys``: every key a config may carry, and the ones accepted but never sent (:data:`NOT_SENT`);
- ``_fill``: a prompt given on the command line, put in the config's own shape (:func:`fill_prompt`);
- ``_image_data``: whether a string or bytes are an image that decodes to its end;
- ``_normalise``: every accepted config shape onto those models (:func:`parse_config`);
- ``_stage_models``: the plan (:class:`StageExecutionPlan`);
- ``_sequencer``: config -> plan (:class:`StageSequencer`);
- ``_runner``: runs a plan through a :class:`StageExecutor` (:class:`PipelineRunner`).
"""

from ._adetailer import ADetailerBase, ADetailerPass, ADetailerSection, ADetailerStageConfig
from ._adetailer_args import ADETAILER_ARGS
from ._config import (
    MAX_INIT_IMAGE_PIXELS,
    GenerationSection,
    HiresSection,
    Img2ImgSection,
    PipelineConfig,
    RefinerSection,
    Txt2ImgSection,
    UpscaleSection,
)
from ._fill import fill_prompt
from ._image_data import checked_image_data, image_bytes_problem, image_data_problem
from ._keys import KEPT_SECTIONS, NOT_SENT, section_keys
from ._limits import (
    MAX_BATCH,
    MAX_IMAGES,
    MAX_INIT_IMAGE_B64,
    MAX_NAME_CHARS,
    MAX_OUTPUT_PIXELS,
    MAX_OUTPUT_SIDE,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STYLES,
    MIN_SIDE,
    Name,
    Prompt,
    RequiredName,
    Side,
    name_problem,
    output_limit_problems,
    size_problems,
    text_problem,
)
from ._normalise import MAX_DEPTH, detect_shape, parse_config, structure_problem
from ._runner import (
    PipelineRunner,
    StageExecutor,
    StageHooks,
    StageResult,
    build_stage_payload,
)
from ._samplers import (
    A1111_SCHEDULERS,
    SamplerSchedulerConflict,
    resolve_sampler,
    scheduler_key,
    split_sampler_name,
)
from ._sequencer import StageSequencer
from ._stage_models import (
    ADETAILER_NEEDS_GENERATION,
    CANONICAL_ORDER,
    MAX_PLAN_JSON_CHARS,
    PLAN_SCHEMA_VERSION,
    StageExecution,
    StageExecutionPlan,
    StageType,
    check_plan_invariants,
)

__all__ = [
    "A1111_SCHEDULERS",
    "ADETAILER_ARGS",
    "ADETAILER_NEEDS_GENERATION",
    "CANONICAL_ORDER",
    "KEPT_SECTIONS",
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_IMAGES",
    "MAX_INIT_IMAGE_B64",
    "MAX_INIT_IMAGE_PIXELS",
    "MAX_NAME_CHARS",
    "MAX_OUTPUT_PIXELS",
    "MAX_OUTPUT_SIDE",
    "MAX_PLAN_JSON_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_SIDE",
    "MAX_STEPS",
    "MAX_STYLES",
    "MIN_SIDE",
    "NOT_SENT",
    "PLAN_SCHEMA_VERSION",
    "ADetailerBase",
    "ADetailerPass",
    "ADetailerSection",
    "ADetailerStageConfig",
    "GenerationSection",
    "HiresSection",
    "Img2ImgSection",
    "Name",
    "PipelineConfig",
    "PipelineRunner",
    "Prompt",
    "RefinerSection",
    "RequiredName",
    "SamplerSchedulerConflict",
    "Side",
    "StageExecution",
    "StageExecutionPlan",
    "StageExecutor",
    "StageHooks",
    "StageResult",
    "StageSequencer",
    "StageType",
    "Txt2ImgSection",
    "UpscaleSection",
    "build_stage_payload",
    "check_plan_invariants",
    "checked_image_data",
    "detect_shape",
    "fill_prompt",
    "image_bytes_problem",
    "image_data_problem",
    "name_problem",
    "output_limit_problems",
    "parse_config",
    "resolve_sampler",
    "scheduler_key",
    "section_keys",
    "size_problems",
    "split_sampler_name",
    "structure_problem",
    "text_problem",
]
