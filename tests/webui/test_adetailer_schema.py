"""Our ADetailer argument table against the schema exported from the real ``adetailer`` package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stablenew.webui import ADETAILER_ARGS, validate_adetailer_tab

SCHEMA_PATH = Path(__file__).parents[1] / "data" / "adetailer" / "args_schema.json"
_JSON_TYPES = {"string": str, "boolean": bool, "integer": int, "number": float}
_INTERNAL = {"is_api"}  # set by ADetailer itself, never sent by a client


@pytest.fixture(scope="module")
def properties() -> dict[str, dict[str, Any]]:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False  # extra=forbid: an unknown key disables the tab
    return dict(schema["properties"])


def test_our_table_names_exactly_adetailers_arguments(properties):
    assert set(ADETAILER_ARGS) == set(properties) - _INTERNAL


def test_each_argument_has_adetailers_type(properties):
    wrong = {
        key: (kind.__name__, properties[key]["type"])
        for key, (kind, _low, _high) in ADETAILER_ARGS.items()
        if _JSON_TYPES[properties[key]["type"]] is not kind
    }
    assert wrong == {}


def test_our_ranges_lie_within_adetailers(properties):
    # ours may be tighter (config limits), never looser than what ADetailer accepts
    looser = {}
    for key, (kind, low, high) in ADETAILER_ARGS.items():
        if kind in (str, bool):
            continue
        spec = properties[key]
        if "minimum" in spec and (low is None or low < spec["minimum"]):
            looser[key] = ("min", low, spec["minimum"])
        if "exclusiveMinimum" in spec and (low is None or low <= spec["exclusiveMinimum"]):
            looser[key] = ("min", low, spec["exclusiveMinimum"])
        if "maximum" in spec and (high is None or high > spec["maximum"]):
            looser[key] = ("max", high, spec["maximum"])
    assert looser == {}


def test_adetailers_defaults_pass_our_checks(properties):
    defaults = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
    tab = {key: value for key, value in defaults.items() if key not in _INTERNAL}
    tab["ad_model"] = "face_yolov8n.pt"  # "None" is the default but means "skip this tab"
    assert validate_adetailer_tab(tab, path="adetailer.face") == []


@pytest.mark.parametrize("key", ["ad_mask_filter_method", "ad_mask_merge_invert"])
def test_choice_arguments_offer_adetailers_choices(properties, key):
    good = properties[key]["enum"]
    for value in good:
        tab = {"ad_model": "face_yolov8n.pt", key: value}
        assert validate_adetailer_tab(tab, path="t") == []
    assert validate_adetailer_tab({"ad_model": "face_yolov8n.pt", key: "Largest"}, path="t") != []
