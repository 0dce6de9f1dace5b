"""YAML configs (.yaml/.yml): the same job as the JSON example, and the same hardening."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stablenew.config_files import MAX_CONFIG_FILE_BYTES, load_config_file
from stablenew.errors import ConfigError
from stablenew.jobs.checks import build_checked_plan

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "producer" / "examples"
FULL = EXAMPLES_DIR / "full_pipeline.json"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    return "\n".join(f"{caught.value.source}: {p}" for p in caught.value.problems)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_a_yaml_config_loads_as_the_same_job_as_its_json_twin(tmp_path: Path, suffix: str) -> None:
    config = json.loads(FULL.read_text())
    path = write(tmp_path, yaml.safe_dump(config, sort_keys=False), f"full{suffix}")

    loaded = load_config_file(path)

    assert loaded == load_config_file(FULL)
    assert build_checked_plan(loaded).to_json() == build_checked_plan(load_config_file(FULL)).to_json()


def test_a_value_that_looks_like_a_date_stays_text(tmp_path: Path) -> None:
    path = write(tmp_path, "txt2img_enabled: true\ntxt2img_config:\n  prompt: 2026-12-07\n")

    assert load_config_file(path)["txt2img_config"]["prompt"] == "2026-12-07"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "txt2img_enabled: true\ntxt2img_config:\n  steps: 20\n  steps: 30\n",
            "line 4 column 3: 'steps' is given more than once",
            id="duplicate key",
        ),
        pytest.param("a: &x [1, 2]\nb: *x\n", "line 2 column 4: aliases (*name) are not allowed", id="alias"),
        pytest.param(
            "txt2img_config: !!python/object/apply:os.system ['true']\n",
            "line 1 column 17",
            id="python tag",
        ),
        pytest.param("txt2img_config: !custom {}\n", "line 1 column 17", id="custom tag"),
        pytest.param(
            "seed: !!binary aGVsbG8=\n", "the tag tag:yaml.org,2002:binary is not allowed", id="binary"
        ),
        pytest.param("seed: !!set {1: null}\n", "the tag tag:yaml.org,2002:set is not allowed", id="set"),
        pytest.param("cfg_scale: .nan\n", ".nan is not a finite number", id="nan"),
        pytest.param("cfg_scale: -.inf\n", "-.inf is not a finite number", id="infinity"),
        pytest.param("1: one\n", "keys must be strings (got 1)", id="number key"),
        pytest.param("txt2img_config: {steps: 30\n", "invalid YAML at line", id="unclosed"),
        pytest.param("a: 1\n---\nb: 2\n", "invalid YAML", id="two documents"),
    ],
)
def test_yaml_that_json_could_not_hold_is_refused_naming_the_file_format_and_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = load_error(write(tmp_path, text, "bad.yaml"))

    assert "bad.yaml" in message
    assert "invalid YAML" in message
    assert expected in message


def test_a_yaml_list_is_not_a_config(tmp_path: Path) -> None:
    assert "must be a YAML mapping" in load_error(write(tmp_path, "- 1\n- 2\n"))


def test_yaml_nested_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "extra: " + "[" * 40 + "]" * 40 + "\n")

    assert "nest" in load_error(path)


def test_an_oversized_yaml_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_CONFIG_FILE_BYTES + 1)

    assert "too large" in load_error(path)


def test_yaml_in_a_file_not_named_yaml_says_which_formats_are_read(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "txt2img_enabled: true\n", "config.txt"))

    assert "config.txt" in message
    assert "invalid JSON at line 1 column 1" in message
    assert "YAML in a .yaml/.yml file" in message
