"""What ``rerun`` changes in a kept config, and which seeds it pins (pure functions).

``stablenew rerun JOB --set KEY=VALUE`` makes a new job from the config JOB was submitted with (kept
as written, see :func:`~stablenew.jobs.keys.config_key`): each KEY is a dotted path in that config
(``adetailer_config.adetailer_denoise``), each VALUE read as JSON, else taken as a string. The new
plan then gets the seed JOB really ran with wherever JOB's config left it to chance (-1), so that
the stages the change does not touch make the same requests again, and are reused instead of run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import StageExecutionPlan
from stablenew.run import JobState


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it reads as JSON (``0.5``, ``true``, ``"x"``, ``[1]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, VALUE read by :func:`parse_value`).

    Raises:
        ConfigError: no ``=``, or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError([FieldProblem("--set", "must be KEY=VALUE (a dotted path in the config)", text)])
    return key.strip(), parse_value(value)


def apply_changes(config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each dotted key set to its value (missing sections are created).

    Raises:
        ConfigError: a key is empty or passes through something that is not a section (naming the key).
    """
    changed = copy.deepcopy(dict(config))
    problems = []
    for key, value in changes.items():
        parts = key.split(".")
        if not all(part.strip() for part in parts):
            problems.append(FieldProblem(key, "is not a dotted path of config keys", value))
            continue
        section: Any = changed
        for depth, part in enumerate(parts[:-1]):
            if part not in section:
                section[part] = {}
            section = section[part]
            if not isinstance(section, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(FieldProblem(key, f"{where} is not a section of the config", value))
                break
        else:
            section[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return changed


def pin_seeds(plan: StageExecutionPlan, ran: JobState | None) -> StageExecutionPlan:
    """``plan`` with the first stage's seed set to the one ``ran`` used, where the plan says -1.

    Only the first stage draws a seed of its own: a later stage with -1 takes the seed of the stage
    before it (img2img, ADetailer), so pinning the first one pins the chain as it ran.
    """
    if ran is None or not plan.stages:
        return plan
    first = plan.stages[0]
    seed = first.config.get("seed")
    if not first.stage_type.is_generation or (seed is not None and seed != -1):
        return plan
    same = next((st for st in ran.stages if st.type == first.stage_type.value), None)
    if same is None or not isinstance(same.seed, int) or same.seed < 0:
        return plan
    pinned = first.model_copy(update={"config": {**first.config, "seed": same.seed}})
    return plan.model_copy(update={"stages": [pinned, *plan.stages[1:]]})


__all__ = ["apply_changes", "parse_assignment", "parse_value", "pin_seeds"]
