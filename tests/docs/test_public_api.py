"""The public surface of ``stablenew`` is pinned: changing it is a deliberate act."""

from __future__ import annotations

import subprocess
import sys

import stablenew

EXPECTED = [
    "Canceled", "ConfigError", "InvalidStagePlanError", "JobError", "JobNotAllowed", "JobNotFound",
    "PipelineConfig", "PipelineRunner", "PlanVersionError", "Producer", "RedisUnavailable", "StableNewError",
    "StageExecution", "StageExecutionPlan", "StageExecutor", "StageSequencer", "StageType", "WebUIClient",
    "WebUIError", "WebUIExecutor", "WebUIHTTPError", "WebUIRejected", "WebUITimeout", "WebUIUnavailable",
    "__version__", "load_config_file", "parse_config",
]  # fmt: skip


def test_all_is_sorted_and_pinned() -> None:
    assert stablenew.__all__ == sorted(stablenew.__all__)
    assert stablenew.__all__ == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in stablenew.__all__:
        assert getattr(stablenew, name) is not None


def test_importing_stablenew_loads_no_heavy_modules() -> None:
    code = "import sys, stablenew; print(sorted(m for m in ('rq','redis','pydantic','requests','PIL') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
