"""StableNew's own presets and packs (tests/data/stablenew2), with a prompt filled in as its GUI does, pass the
submit-time checks, and the ADetailer request bodies they produce pass ADetailer's real argument model."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from stablenew.config_files import load_config_file
from stablenew.errors import ConfigError, InvalidStagePlanError
from stablenew.jobs.checks import build_checked_plan
from stablenew.pipeline import StageType, build_stage_payload, fill_prompt
from stablenew.webui import adetailer_body

DATA = Path(__file__).parents[1] / "data"
STABLENEW = DATA / "stablenew2"
ADETAILER_SCHEMA = json.loads((DATA / "adetailer" / "args_schema.json").read_text(encoding="utf-8"))

# Files in StableNew's folders that hold no pipeline config: what they are instead.
NOT_PIPELINE_CONFIGS = {
    "presets/settings.json": "StableNew's app settings (launchers, folders)",
    "presets/last_settings.json": "StableNew's GUI session",
    "packs/somethingNew_test_v2.5.json": "a pack whose preset_data is empty",
    "packs/test_lora_embed_pack.json": "a pack whose preset_data is empty",
    "packs/Beautiful_people_fullbody_PhotoMomentum_v26(copy).json": "a pack whose preset_data is empty",
}
NOT_JSON = {"presets/cyberrealistic_v90_clean_realism.json"}  # "key: value" lines upstream too


def stablenew_files() -> list[str]:
    return sorted(str(p.relative_to(STABLENEW)) for p in STABLENEW.glob("*/*.json"))


def config_of(name: str) -> dict[str, Any]:
    raw = load_config_file(STABLENEW / name)
    body = raw["preset_data"] if name.startswith("packs/") else raw
    return fill_prompt(body, prompt="a lighthouse keeper at dusk, detailed face and hands")


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 60, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE_SIZE = (832, 1216)
IMAGE = png_b64(*IMAGE_SIZE)
PIPELINE_CONFIGS = [n for n in stablenew_files() if n not in NOT_PIPELINE_CONFIGS and n not in NOT_JSON]


def test_the_data_holds_every_file_this_test_knows_about() -> None:
    assert set(NOT_PIPELINE_CONFIGS) | NOT_JSON <= set(stablenew_files())
    assert len(PIPELINE_CONFIGS) >= 55


@pytest.mark.parametrize("name", PIPELINE_CONFIGS)
def test_every_stablenew_preset_and_pack_plans_with_a_prompt_filled_in(name: str) -> None:
    plan = build_checked_plan(config_of(name), source=name)

    assert plan.stages[0].stage_type is StageType.TXT2IMG
    assert plan.ignored_keys == ()


@pytest.mark.parametrize("name", PIPELINE_CONFIGS)
def test_every_adetailer_tab_they_send_passes_adetailers_own_argument_model(name: str) -> None:
    plan = build_checked_plan(config_of(name), source=name)
    stages = [s for s in plan.stages if s.stage_type is StageType.ADETAILER]
    if not stages:
        pytest.skip("ADetailer is off in this config")

    payload = build_stage_payload(stages[0], {"images": [IMAGE], "meta": {"seed": 5}}, index=len(plan) - 1)
    body = adetailer_body(payload, IMAGE)

    on, skip_img2img, *tabs = body["alwayson_scripts"]["ADetailer"]["args"]
    assert (on, skip_img2img) == (True, True)
    for tab in tabs:
        jsonschema.validate(tab, ADETAILER_SCHEMA)  # extra=forbid upstream: a failing tab is dropped there
        assert tab.get("ad_tab_enable", True) is True
        assert tab["ad_model"] != "None"
        if tab["ad_inpaint_only_masked"] is False:  # the whole picture: the inpaint size is the image's
            assert tab["ad_use_inpaint_width_height"] is False
            assert (body["width"], body["height"]) == IMAGE_SIZE


def test_the_three_packs_with_a_hands_pass_send_a_hands_tab_with_stablenews_hands_values() -> None:
    plan = build_checked_plan(config_of("packs/A A A.json"))
    (stage,) = [s for s in plan.stages if s.stage_type is StageType.ADETAILER]
    body = adetailer_body(build_stage_payload(stage, {"images": [IMAGE], "meta": {}}, index=1), IMAGE)

    face, hands = body["alwayson_scripts"]["ADetailer"]["args"][2:]
    raw = config_of("packs/A A A.json")["adetailer"]
    assert hands["ad_model"] == raw["adetailer_hands_model"]
    assert hands["ad_mask_k"] == raw["ad_hands_mask_k"]
    assert hands["ad_inpaint_only_masked_padding"] == raw["ad_hands_padding"]
    assert face["ad_mask_k"] == raw["ad_mask_k_largest"]


@pytest.mark.parametrize("name", sorted(NOT_PIPELINE_CONFIGS))
def test_files_that_hold_no_pipeline_config_are_refused_as_having_nothing_to_run(name: str) -> None:
    with pytest.raises(InvalidStagePlanError, match="nothing to run"):
        build_checked_plan(config_of(name), source=name)


def test_a_file_that_is_not_json_is_refused_with_where_it_fails() -> None:
    with pytest.raises(ConfigError, match="invalid JSON at line 1 column 1"):
        load_config_file(STABLENEW / "presets/cyberrealistic_v90_clean_realism.json")
