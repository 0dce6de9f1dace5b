"""stablenew: a Redis/RQ pipeline queue for StableNew's Stable Diffusion jobs.

The public API is what ``__all__`` lists; everything else is internal. Names are loaded on first
use (PEP 562) so that ``import stablenew`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Canceled": "stablenew.errors",
    "ConfigError": "stablenew.errors",
    "InvalidStagePlanError": "stablenew.errors",
    "JobError": "stablenew.errors",
    "JobNotAllowed": "stablenew.errors",
    "JobNotFound": "stablenew.errors",
    "PipelineConfig": "stablenew.pipeline",
    "PipelineRunner": "stablenew.pipeline",
    "PlanVersionError": "stablenew.errors",
    "Producer": "stablenew.jobs.producer",
    "RedisUnavailable": "stablenew.errors",
    "StableNewError": "stablenew.errors",
    "StageExecution": "stablenew.pipeline",
    "StageExecutionPlan": "stablenew.pipeline",
    "StageExecutor": "stablenew.pipeline",
    "StageSequencer": "stablenew.pipeline",
    "StageType": "stablenew.pipeline",
    "WebUIClient": "stablenew.webui",
    "WebUIError": "stablenew.errors",
    "WebUIExecutor": "stablenew.webui",
    "WebUIHTTPError": "stablenew.errors",
    "WebUIRejected": "stablenew.errors",
    "WebUITimeout": "stablenew.errors",
    "WebUIUnavailable": "stablenew.errors",
    "load_config_file": "stablenew.config_files",
    "parse_config": "stablenew.pipeline",
}

__all__ = [
    "Canceled",
    "ConfigError",
    "InvalidStagePlanError",
    "JobError",
    "JobNotAllowed",
    "JobNotFound",
    "PipelineConfig",
    "PipelineRunner",
    "PlanVersionError",
    "Producer",
    "RedisUnavailable",
    "StableNewError",
    "StageExecution",
    "StageExecutionPlan",
    "StageExecutor",
    "StageSequencer",
    "StageType",
    "WebUIClient",
    "WebUIError",
    "WebUIExecutor",
    "WebUIHTTPError",
    "WebUIRejected",
    "WebUITimeout",
    "WebUIUnavailable",
    "__version__",
    "load_config_file",
    "parse_config",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:
    from stablenew.config_files import load_config_file
    from stablenew.errors import (
        Canceled,
        ConfigError,
        InvalidStagePlanError,
        JobError,
        JobNotAllowed,
        JobNotFound,
        PlanVersionError,
        RedisUnavailable,
        StableNewError,
        WebUIError,
        WebUIHTTPError,
        WebUIRejected,
        WebUITimeout,
        WebUIUnavailable,
    )
    from stablenew.jobs.producer import Producer
    from stablenew.pipeline import (
        PipelineConfig,
        PipelineRunner,
        StageExecution,
        StageExecutionPlan,
        StageExecutor,
        StageSequencer,
        StageType,
        parse_config,
    )
    from stablenew.webui import WebUIClient, WebUIExecutor
