"""Bad input is refused at the door: every config of ``bad_configs/`` (and a few generated at run time, too
big or too deep to keep in the repository) is refused by the Python API and by ``stablenew submit`` with exit
code 2, a message naming the field, no traceback, and not one key written to Redis.

``bad_configs/expected.json`` declares, for each entry, the error it must raise, the field path the message
must name (``<config>`` for the document as a whole), a phrase of the message, and whether only a WebUI can
tell (an unknown sampler, scheduler, upscaler, checkpoint, VAE or ADetailer model: refused by ``--preflight``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue

from job_checks import band_job_ids
from stablenew.cli import main
from stablenew.config_files import MAX_CONFIG_FILE_BYTES, load_config_file
from stablenew.errors import ConfigError, InvalidStagePlanError, StableNewError
from stablenew.jobs.producer import Producer, webui_preflight
from stablenew.pipeline import detect_shape
from stablenew.queues import QUEUES
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

CORPUS = Path(__file__).resolve().parent / "bad_configs"
CATALOGUE_FILE = CORPUS / "expected.json"
CATALOGUE: dict[str, dict[str, Any]] = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))["entries"]
GOOD_CONFIG = Path(__file__).resolve().parents[2] / "producer" / "examples" / "txt2img_only.json"
ERRORS: dict[str, type[StableNewError]] = {
    "ConfigError": ConfigError,
    "InvalidStagePlanError": InvalidStagePlanError,
}
# What the issue asks the corpus to cover, as the catalogue's categories.
REQUIRED_CATEGORIES = {
    "wrong_type",
    "out_of_range",
    "size",
    "adetailer_without_generation",
    "adetailer_tab",
    "prompt",
    "non_object_json",
    "invalid_json",
    "deep_or_huge",
    "unicode_control",
    "path_like",
    "schema_version",
    "preflight",
}
# The out-of-range fields the issue names, as parts of the field paths that must occur among the entries.
REQUIRED_RANGE_FIELDS = (
    "steps",
    "width",
    "height",
    "denoise",
    "cfg_scale",
    "upscaling_resize",
    "upscale_factor",
    "switch_step",
    "switch_at",
)
MAX_MESSAGE_CHARS = 4000  # no error may echo a huge input back


# ------------------------------------------------------------------------------------ generated entries
def _flat(**txt2img: Any) -> dict[str, Any]:
    return {"txt2img_enabled": True, "txt2img_config": {"prompt": "a lighthouse", "steps": 20, **txt2img}}


def _deep_100k(path: Path) -> Path:
    depth = 100_000
    path.write_text('{"txt2img_config": ' + "[" * depth + "]" * depth + "}", encoding="utf-8")
    return path


def _huge_50mb(path: Path) -> Path:
    with path.open("wb") as handle:  # valid JSON as far as it goes, then a sparse 50 MB: never read
        handle.write(b'{"txt2img_enabled": true, "txt2img_config": {"prompt": "')
        handle.truncate(50_000_000)
    assert path.stat().st_size > MAX_CONFIG_FILE_BYTES
    return path


def _endless_device(path: Path) -> Path:
    device = Path("/dev/zero")
    if not device.exists():
        pytest.skip("no /dev/zero on this system")
    return device


def _prompt_5mb(path: Path) -> Path:
    path.write_text(json.dumps(_flat(prompt="x" * 5_000_000)), encoding="utf-8")
    return path


def _styles_100k(path: Path) -> Path:
    config = {"txt2img": {"prompt": "a lighthouse", "styles": [f"style {i}" for i in range(100_000)]}}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


GENERATED: dict[str, Callable[[Path], Path]] = {
    "generated_deep_100k_levels.json": _deep_100k,
    "generated_huge_50mb_file.json": _huge_50mb,
    "generated_endless_device.json": _endless_device,
    "generated_prompt_5mb.json": _prompt_5mb,
    "generated_styles_100k_items.json": _styles_100k,
}


def materialise(name: str, tmp_path: Path) -> Path:
    """The entry's file: the committed one, or the generated one written into ``tmp_path``."""
    if CATALOGUE[name].get("generated"):
        return GENERATED[name](tmp_path / name)
    return CORPUS / name


def entries(*, preflight: bool | None = None, names: tuple[str, ...] | None = None) -> list[Any]:
    chosen = [
        name
        for name, entry in CATALOGUE.items()
        if (preflight is None or entry["preflight"] is preflight) and (names is None or name in names)
    ]
    return [pytest.param(name, id=name.removesuffix(".json")) for name in chosen]


# ------------------------------------------------------------------------------------ queue snapshots
Snapshot = dict[str, Any]


def snapshot(connection: redis.Redis) -> Snapshot:
    """Every queue's length and every RQ key: what a refused submit must leave as it was."""
    return {
        "queues": {name: Queue(name, connection=connection).count for name in QUEUES},
        "keys": sorted(connection.keys("rq:*")),
    }


@pytest.fixture
def before(producer: Producer, connection: redis.Redis) -> Snapshot:
    """One good job already queued, so that "unchanged" is not merely "empty"."""
    producer.submit(load_config_file(GOOD_CONFIG), queue="low")
    state = snapshot(connection)
    assert state["queues"]["low"] == 1 and state["keys"]
    return state


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path) -> None:
    """The in-process CLI on the test Redis; flags it writes into os.environ are undone after the test."""
    for name in [n for n in os.environ if n.startswith("STABLENEW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STABLENEW_REDIS_URL", redis_url)
    monkeypatch.setenv("STABLENEW_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("STABLENEW_WEBUI_URL", "http://127.0.0.1:9")  # replaced by --webui-url where used


# ------------------------------------------------------------------------------------ assertions
def assert_names_the_field(exc: StableNewError, entry: dict[str, Any]) -> None:
    """The declared error type, a problem at the declared field path, the declared phrase, no huge echo."""
    text = str(exc)
    assert type(exc) is ERRORS[entry["error"]], f"{type(exc).__name__}: {text}"
    if isinstance(exc, ConfigError):
        paths = [problem.path or "<config>" for problem in exc.problems]
        assert entry["field"] in paths, f"no problem at {entry['field']!r}: {text}"
    elif entry["field"]:
        assert f"{entry['field']}: " in text, text
    assert entry["says"] in text, text
    assert len(text) < MAX_MESSAGE_CHARS, text[:500]


def assert_cli_refused(code: int, out: str, err: str, entry: dict[str, Any], source: Path) -> None:
    """Exit 2, nothing on stdout, one error line naming the file and the field, no traceback."""
    assert code == 2, (code, out, err)
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err, err
    assert entry["says"] in err, err
    assert len(err) < MAX_MESSAGE_CHARS, err[:500]
    if entry["field"]:
        assert f"{entry['field']}: " in err, err
        assert str(source) in err, err


# ------------------------------------------------------------------------------------ the catalogue
def test_every_file_of_the_corpus_is_catalogued_and_every_catalogued_file_exists() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if p != CATALOGUE_FILE}
    committed = {name for name, entry in CATALOGUE.items() if not entry.get("generated")}
    assert on_disk == committed
    assert {name for name, entry in CATALOGUE.items() if entry.get("generated")} == set(GENERATED)


def test_the_corpus_has_over_40_files_and_covers_every_kind_of_bad_input_the_issue_lists() -> None:
    assert sum(1 for entry in CATALOGUE.values() if not entry.get("generated")) >= 40
    categories = {entry["category"] for entry in CATALOGUE.values()}
    assert categories >= REQUIRED_CATEGORIES, REQUIRED_CATEGORIES - categories
    range_fields = " ".join(
        e["field"] for e in CATALOGUE.values() if e["category"] in ("out_of_range", "size") and e["field"]
    )
    assert all(part in range_fields for part in REQUIRED_RANGE_FIELDS), range_fields
    for entry in CATALOGUE.values():
        assert entry["error"] in ERRORS
        assert entry["says"], entry
        assert entry["field"] or entry["error"] == "InvalidStagePlanError", entry
        assert entry["preflight"] == (entry["category"] == "preflight"), entry


def test_the_corpus_uses_both_config_shapes_and_holds_files_that_are_not_json_at_all() -> None:
    shapes: set[str] = set()
    not_json = 0
    for name, entry in CATALOGUE.items():
        if entry.get("generated"):
            continue
        try:
            raw = json.loads((CORPUS / name).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            not_json += 1
            continue
        if isinstance(raw, dict):
            body = raw.get("execution_config", raw)
            shapes.add(detect_shape(body) if isinstance(body, dict) else "wrapper")
            if "schema" in raw:
                shapes.add("wrapper")
    assert shapes >= {"flat", "nested", "wrapper"}
    assert not_json >= 5


# ------------------------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("name", entries())
def test_the_python_api_refuses_each_bad_config_naming_the_field_and_enqueues_nothing(
    name: str,
    request: pytest.FixtureRequest,
    producer: Producer,
    connection: redis.Redis,
    before: Snapshot,
    tmp_path: Path,
) -> None:
    entry = CATALOGUE[name]
    submitter = producer
    if entry["preflight"]:
        simulator: SimulatedWebUI = request.getfixturevalue("simulator")
        check = webui_preflight(Settings(webui_url=simulator.url))
        submitter = Producer(connection, producer.settings, preflight=check)
    path = materialise(name, tmp_path)

    with pytest.raises(StableNewError) as caught:
        submitter.submit(load_config_file(path), source=str(path))

    assert_names_the_field(caught.value, entry)
    assert snapshot(connection) == before


@pytest.mark.parametrize("name", entries(preflight=True))
def test_a_name_only_the_webui_can_check_is_enqueued_without_preflight(
    name: str, producer: Producer, connection: redis.Redis, before: Snapshot
) -> None:
    """Without a preflight the producer cannot know the WebUI's names: the worker refuses such a job."""
    submission = producer.submit(load_config_file(CORPUS / name))

    assert band_job_ids(connection, "default") == [submission.job_id]  # its checkpoint's queue, if any
    assert snapshot(connection)["queues"]["low"] == before["queues"]["low"]


def _nested_dict(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        node = {"a": node}
    return node


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        pytest.param(_flat(cfg_scale=float("nan")), "txt2img_config.cfg_scale", "finite", id="nan"),
        pytest.param(_flat(steps=float("inf")), "txt2img_config.steps", "finite", id="infinity"),
        pytest.param(
            {**_flat(), "metadata": _nested_dict(100_000)}, "metadata.a.a", "nested", id="deep-dict"
        ),
        pytest.param({**_flat(), "metadata": {1: "one"}}, "metadata", "not a string", id="int-key"),
    ],
)
def test_the_python_api_refuses_values_no_json_file_can_hold(
    producer: Producer,
    connection: redis.Redis,
    before: Snapshot,
    config: dict[str, Any],
    field: str,
    says: str,
) -> None:
    """A dict handed to the API directly: NaN, infinity, a non-string key, 100,000 levels (no RecursionError)."""
    with pytest.raises(ConfigError) as caught:
        producer.submit(config)

    [problem] = caught.value.problems
    assert problem.path.startswith(field), problem
    assert says in str(caught.value)
    assert snapshot(connection) == before


@pytest.mark.parametrize(
    "txt2img",
    [
        pytest.param({"model": "SDXL/sd_xl_base_1.0.safetensors [31e35c80fc]"}, id="sub-folder-and-hash"),
        pytest.param({"model": "SDXL\\sd_xl_base_1.0.safetensors"}, id="windows-sub-folder"),
        pytest.param({"vae": "v1.5..final.vae.pt"}, id="dots-inside-a-name"),
        pytest.param({"prompt": "line one\nline two\tand a tab"}, id="newline-and-tab-in-a-prompt"),
        pytest.param({"prompt": "東京の夜景, 🌃, café"}, id="non-ascii-prompt"),
        pytest.param({"steps": 20.0, "seed": 7.0}, id="whole-floats-for-integers"),
        pytest.param({"styles": ["Cinematic/Moody", "Film grain"]}, id="styles-with-a-folder"),
    ],
)
def test_near_misses_of_the_rules_are_accepted_from_a_file_with_a_byte_order_mark(
    producer: Producer, connection: redis.Redis, tmp_path: Path, txt2img: dict[str, Any]
) -> None:
    """The rules refuse only what they must: these are fine, and a BOM some editors write is too."""
    path = tmp_path / "near_miss.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_flat(**txt2img)).encode("utf-8"))

    submission = producer.submit(load_config_file(path))

    config = submission.plan.stages[0].config
    assert {key: config[key] for key in txt2img} == txt2img
    assert band_job_ids(connection, "default") == [submission.job_id]  # its checkpoint's queue, if any


# ------------------------------------------------------------------------------------ the CLI, in process
@pytest.mark.parametrize("name", entries(preflight=False))
def test_submit_exits_2_naming_the_field_of_each_bad_config_and_enqueues_nothing(
    name: str,
    cli_env: None,
    connection: redis.Redis,
    before: Snapshot,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = materialise(name, tmp_path)

    code = main(["submit", str(path), "--queue", "high"])

    out, err = capsys.readouterr()
    assert_cli_refused(code, out, err, CATALOGUE[name], path)
    assert snapshot(connection) == before


@pytest.mark.parametrize("name", entries(preflight=True))
def test_submit_with_preflight_exits_2_naming_the_field_the_webui_lacks_and_enqueues_nothing(
    name: str,
    cli_env: None,
    simulator: SimulatedWebUI,
    connection: redis.Redis,
    before: Snapshot,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = CORPUS / name

    code = main(["submit", str(path), "--preflight", "--webui-url", simulator.url])

    out, err = capsys.readouterr()
    assert_cli_refused(code, out, err, CATALOGUE[name], path)
    assert snapshot(connection) == before
    asked = {r.path for r in simulator.requests}
    assert "/sdapi/v1/samplers" in asked  # the WebUI was asked for its names...
    assert not asked & {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image"}  # ...only


# ------------------------------------------------------------------------------------ the real command
SUBPROCESS_SAMPLE = (
    "type_steps_string_flat.json",
    "path_model_absolute_nested.json",
    "json_garbage_bytes.json",
    "plan_adetailer_only_nested.json",
    "generated_deep_100k_levels.json",
    "generated_huge_50mb_file.json",
)


@pytest.mark.integration
@pytest.mark.parametrize("name", entries(names=SUBPROCESS_SAMPLE))
def test_the_real_submit_command_exits_2_naming_the_field_and_enqueues_nothing(
    name: str, run_cli: Any, connection: redis.Redis, before: Snapshot, tmp_path: Path
) -> None:
    path = materialise(name, tmp_path)

    result = run_cli("submit", str(path), "--json")

    assert_cli_refused(result.returncode, result.stdout, result.stderr, CATALOGUE[name], path)
    assert snapshot(connection) == before


@pytest.mark.integration
def test_the_real_submit_command_with_preflight_exits_2_naming_the_unknown_sampler(
    run_cli: Any, simulator: SimulatedWebUI, connection: redis.Redis, before: Snapshot
) -> None:
    name = "preflight_unknown_sampler_flat.json"
    path = CORPUS / name

    result = run_cli("submit", str(path), "--preflight", "--webui-url", simulator.url)

    assert_cli_refused(result.returncode, result.stdout, result.stderr, CATALOGUE[name], path)
    assert "'Euler Imaginary'" in result.stderr
    assert snapshot(connection) == before
