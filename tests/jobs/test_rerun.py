"""What ``rerun`` changes in a kept config and which seed it pins (pure functions)."""

from __future__ import annotations

import pytest

from plan_configs import Configs
from stablenew.errors import ConfigError
from stablenew.jobs.rerun import apply_changes, parse_assignment, pin_seeds
from stablenew.pipeline import StageSequencer
from stablenew.run import JobState


def test_a_value_is_read_as_json_else_as_text() -> None:
    assert parse_assignment("a.b=0.5") == ("a.b", 0.5)
    assert parse_assignment("a=true") == ("a", True)
    assert parse_assignment('a=["x", 1]') == ("a", ["x", 1])
    assert parse_assignment("a=R-ESRGAN 4x+") == ("a", "R-ESRGAN 4x+")
    assert parse_assignment("a=x=y") == ("a", "x=y")


def test_an_assignment_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="--set"):
        parse_assignment("=1")
    with pytest.raises(ConfigError, match="--set"):
        parse_assignment("just-a-key")


def test_changes_set_dotted_keys_on_a_copy_creating_missing_sections() -> None:
    config = Configs.four_stage()
    changed = apply_changes(config, {"adetailer_config.adetailer_denoise": 0.5, "hires_fix.enabled": False})

    assert changed["adetailer_config"]["adetailer_denoise"] == 0.5
    assert changed["hires_fix"] == {"enabled": False}
    assert "adetailer_denoise" not in config["adetailer_config"]


def test_a_change_through_a_value_that_is_not_a_section_names_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_changes(Configs.txt2img(), {"txt2img_config.prompt.x": 1})
    assert "txt2img_config.prompt.x" in str(caught.value)


def ran_with(plan, seed: int) -> JobState:
    state = JobState.for_plan("old", plan)
    state.stages[0].seed = seed
    return state


def test_the_seed_the_first_stage_ran_with_is_pinned_where_the_config_says_minus_one() -> None:
    plan = StageSequencer().build_plan(
        Configs.two_stage() | {"txt2img_config": Configs.txt2img(seed=-1)["txt2img_config"]}
    )
    pinned = pin_seeds(plan, ran_with(plan, 4242))

    assert pinned.stages[0].config["seed"] == 4242
    assert pinned.stages[1].config == plan.stages[1].config  # img2img follows its input's seed


def test_a_fixed_seed_is_never_replaced() -> None:
    plan = StageSequencer().build_plan(Configs.two_stage())
    assert pin_seeds(plan, ran_with(plan, 4242)) == plan
