"""The ``stablenew`` command as a user runs it: a subprocess, against a real Redis, a real worker
process and the simulator over HTTP where the command needs them."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue

from job_checks import band_job_ids
from stablenew import __version__
from stablenew.cli.parser import build_parser
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
FULL_PIPELINE = EXAMPLES / "full_pipeline.json"
TXT2IMG_ONLY = EXAMPLES / "txt2img_only.json"
CANONICAL = ["txt2img", "img2img", "upscale", "adetailer"]

VIEW_KEYS = {"job_id", "status", "stages", "error", "manifest"}
VIEW_OPTIONAL_KEYS = {"queue", "position", "enqueued_at", "checkpoint", "waiting_for"}
STAGE_KEYS = {
    "index",
    "type",
    "status",
    "progress",
    "started_at",
    "ended_at",
    "attempts",
    "outputs",
    "error",
    "reused_from",
}
OUTPUT_KEYS = {"path", "sha256", "width", "height", "seed"}


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


COMMANDS = _commands()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def example(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def assert_view_contract(view: dict[str, Any]) -> None:
    assert VIEW_KEYS <= set(view) <= VIEW_KEYS | VIEW_OPTIONAL_KEYS, set(view)
    for stage in view["stages"]:
        assert set(stage) == STAGE_KEYS, set(stage)
        for out in stage["outputs"]:
            assert set(out) == OUTPUT_KEYS, set(out)


# ---------------------------------------------------------------------------------- submit
def test_submit_json_prints_the_job_id_queue_and_stages_in_canonical_order(
    run_cli, connection: redis.Redis, tmp_path: Path
) -> None:
    shuffled = dict(reversed(list(example(FULL_PIPELINE).items())))  # adetailer_config comes first
    config = write_config(tmp_path / "shuffled.json", shuffled)

    result = run_cli("submit", str(config), "--queue", "high", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"job_id", "queue", "stages", "checkpoint"}
    assert data["queue"] == "high"
    assert data["checkpoint"] == "sd_xl_base_1.0.safetensors"
    assert data["stages"] == CANONICAL
    # a plan naming a checkpoint waits on that checkpoint's queue of its band
    assert Queue("high.ckpt.sd_xl_base_1.0.safetensors", connection=connection).get_job_ids() == [
        data["job_id"]
    ]


def test_submit_of_a_directory_prints_a_batch_and_enqueues_every_config(
    run_cli, connection: redis.Redis
) -> None:
    expected = sorted(p.name for p in EXAMPLES.glob("*.json"))

    result = run_cli("submit", str(EXAMPLES), "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    assert len(data) == len(expected) >= 2
    assert all(set(item) == {"job_id", "queue", "stages", "source", "checkpoint"} for item in data)
    assert [Path(item["source"]).name for item in data] == expected  # files go in name order
    assert band_job_ids(connection, "default") == [item["job_id"] for item in data]
    assert data[expected.index("full_pipeline.json")]["stages"] == CANONICAL


def test_submit_of_several_files_prints_which_file_became_which_job(run_cli, connection: redis.Redis) -> None:
    result = run_cli("submit", str(TXT2IMG_ONLY), str(FULL_PIPELINE))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == [str(TXT2IMG_ONLY), str(FULL_PIPELINE)]
    job_ids = [line.split()[0] for line in lines]
    assert band_job_ids(connection, "default") == job_ids
    assert json.loads(run_cli("status", job_ids[1], "--json").stdout)["stages"][-1]["type"] == "adetailer"


def test_submit_of_a_directory_with_one_invalid_config_enqueues_nothing_and_names_the_file_and_field(
    run_cli, connection: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(TXT2IMG_ONLY, batch / "a_good.json")
    bad = example(TXT2IMG_ONLY)
    bad["txt2img_config"]["steps"] = 0
    write_config(batch / "b_bad.json", bad)
    shutil.copy(TXT2IMG_ONLY, batch / "c_good.json")

    result = run_cli("submit", str(batch), "--json")

    assert result.returncode == 2, result
    assert "b_bad.json" in result.stderr
    assert "txt2img_config.steps" in result.stderr
    assert "a_good.json" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert connection.keys("rq:*") == []


# ---------------------------------------------------------------------------------- status / list
def test_status_json_of_a_queued_job_has_the_contract_keys(run_cli) -> None:
    job_id = json.loads(run_cli("submit", str(FULL_PIPELINE), "--json").stdout)["job_id"]

    result = run_cli("status", job_id, "--json")

    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert_view_contract(view)
    assert (view["job_id"], view["status"], view["queue"]) == (job_id, "queued", "default")
    assert view["position"] == 1
    assert [s["type"] for s in view["stages"]] == CANONICAL
    assert all(s["status"] == "pending" and s["outputs"] == [] for s in view["stages"])


def test_status_text_and_json_give_the_same_position_counting_higher_priority_queues(run_cli) -> None:
    run_cli("submit", str(TXT2IMG_ONLY), "--queue", "high")
    job_id = json.loads(run_cli("submit", str(TXT2IMG_ONLY), "--queue", "low", "--json").stdout)["job_id"]

    text = run_cli("status", job_id)
    view = json.loads(run_cli("status", job_id, "--json").stdout)

    assert text.returncode == 0, text.stderr
    assert view["position"] == 2
    assert "(queue low, position 2)" in text.stdout.splitlines()[0]


def test_submit_wait_exits_0_when_the_job_finishes_and_status_json_shows_its_outputs(
    run_cli, simulator: SimulatedWebUI, worker_process, tmp_path: Path
) -> None:
    worker_process(webui_url=simulator.url)

    submitted = run_cli("submit", str(FULL_PIPELINE), "--wait", "--json")

    assert submitted.returncode == 0, submitted
    job_id = json.loads(submitted.stdout)["job_id"]
    status = run_cli("status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert_view_contract(view)
    assert view["status"] == "finished"
    assert view["error"] is None
    assert Path(view["manifest"]).is_file()
    assert [s["status"] for s in view["stages"]] == ["finished"] * 4
    for stage in view["stages"]:
        assert len(stage["outputs"]) == 1
        assert (tmp_path / "outputs" / stage["outputs"][0]["path"]).is_file()


def test_submit_wait_and_watch_print_image_paths_as_the_worker_recorded_them_not_under_the_watchers_folder(
    run_cli, simulator: SimulatedWebUI, worker_process, tmp_path: Path
) -> None:
    worker_root = tmp_path / "worker-host" / "outputs"
    worker_process(webui_url=simulator.url, env={"STABLENEW_OUTPUT_DIR": str(worker_root)})

    waited = run_cli("submit", str(TXT2IMG_ONLY), "--wait")
    job_id = waited.stdout.split()[0]
    watched = run_cli("watch", job_id[:8])

    for result in (waited, watched):
        assert result.returncode == 0, result
        summary = result.stdout[result.stdout.index(f"job {job_id}: finished") :]
        image = next(line.split()[2] for line in summary.splitlines() if "txt2img" in line)
        assert image.startswith(f"{job_id}/") and image.endswith(".png")
        assert (worker_root / image).is_file()
        assert f"output root: {worker_root} (on the worker's host" in summary
        assert f"manifest: {worker_root / job_id / 'manifest.json'}" in summary
        assert str(tmp_path / "outputs") not in result.stdout  # the watcher's own output folder


def test_submit_wait_exits_5_when_the_job_fails_permanently(
    run_cli, simulator: SimulatedWebUI, worker_process, tmp_path: Path
) -> None:
    worker_process(webui_url=simulator.url)
    config = example(TXT2IMG_ONLY)
    config["txt2img_config"]["model"] = "nope.safetensors"
    path = write_config(tmp_path / "unknown_model.json", config)

    result = run_cli("submit", str(path), "--wait")

    assert result.returncode == 5, result
    assert "failed" in result.stdout
    assert "nope" in result.stdout
    job_id = result.stdout.split()[0]
    view = json.loads(run_cli("status", job_id, "--json").stdout)
    assert view["status"] == "failed"
    assert "nope" in view["error"]
    assert not [r for r in simulator.requests if r.path == "/sdapi/v1/txt2img"]


def test_list_json_shows_the_submitted_jobs_with_the_status_contract(run_cli) -> None:
    first = json.loads(run_cli("submit", str(TXT2IMG_ONLY), "--json").stdout)["job_id"]
    second = json.loads(run_cli("submit", str(FULL_PIPELINE), "--queue", "low", "--json").stdout)["job_id"]

    result = run_cli("list", "--json")

    assert result.returncode == 0, result.stderr
    views = json.loads(result.stdout)
    assert {v["job_id"]: (v["queue"], v["status"]) for v in views} == {
        first: ("default", "queued"),
        second: ("low", "queued"),
    }
    for view in views:
        assert_view_contract(view)


def test_list_shows_the_job_submitted_last_first_and_pages_on_with_the_printed_cursor(
    run_cli, tmp_path: Path
) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    for i in range(6):
        shutil.copy(TXT2IMG_ONLY, batch / f"old_{i}.json")
    assert run_cli("submit", str(batch), "--queue", "high").returncode == 0
    newest = json.loads(run_cli("submit", str(FULL_PIPELINE), "--queue", "low", "--json").stdout)["job_id"]

    first = run_cli("list", "--limit", "5")
    cursor = first.stdout.splitlines()[-1].split("--cursor ")[1]
    second = run_cli("list", "--limit", "5", "--cursor", cursor, "--json")
    grep = run_cli("list", "--grep", "full_pipeline", "--since", "1h", "--json")

    assert first.returncode == 0, first.stderr
    rows = first.stdout.splitlines()[:-1]
    assert len(rows) == 5
    assert rows[0].startswith(newest)
    assert second.returncode == 0, second.stderr
    assert len(json.loads(second.stdout)) == 2
    assert [v["job_id"] for v in json.loads(grep.stdout)] == [newest]


def test_workers_shows_each_worker_with_its_state_host_and_queues(
    run_cli, worker_process, simulator: SimulatedWebUI
) -> None:
    worker = worker_process("high", webui_url=simulator.url)

    shown = run_cli("workers")
    listed = json.loads(run_cli("workers", "--json").stdout)

    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith(worker.name))
    assert f":{worker.pid}" in line and "high" in line
    assert [(w["name"], w["pid"], w["queues"], w["webui_failures"]) for w in listed] == [
        (worker.name, worker.pid, ["high"], 0)
    ]
    assert listed[0]["state"] in ("idle", "started")
    assert 0 <= listed[0]["heartbeat_age_s"] < 60


def test_workers_without_any_worker_says_so(run_cli) -> None:
    result = run_cli("workers")

    assert (result.returncode, result.stdout.strip()) == (0, "no workers")


def test_status_cancel_and_retry_take_the_short_id_watch_shows(run_cli) -> None:
    job_id = json.loads(run_cli("submit", str(TXT2IMG_ONLY), "--json").stdout)["job_id"]
    short = job_id[:12]

    status = run_cli("status", short, "--json")
    canceled = run_cli("cancel", short)
    retried = run_cli("retry", job_id[:8])

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["job_id"] == job_id
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.startswith(f"{job_id}: canceled")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"{job_id}: requeued")


def test_an_ambiguous_or_too_short_prefix_exits_2_and_says_why(run_cli) -> None:
    for suffix in ("a", "b"):
        assert run_cli("submit", str(TXT2IMG_ONLY), "--id", f"nightly-{suffix}").returncode == 0

    ambiguous = run_cli("watch", "nightly-")
    short = run_cli("status", "nightly")

    assert ambiguous.returncode == 2, ambiguous
    assert "nightly-a" in ambiguous.stderr and "nightly-b" in ambiguous.stderr
    assert short.returncode == 2, short
    assert "at least 8 characters" in short.stderr


def test_cancel_of_an_unknown_job_exits_2_and_names_the_id(run_cli) -> None:
    result = run_cli("cancel", "no-such-job")

    assert result.returncode == 2, result
    assert "no-such-job" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------- plan / help
def test_plan_of_a_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(
    run_cli, tmp_path: Path
) -> None:
    bad = example(TXT2IMG_ONLY)
    bad["txt2img_config"].update({"steps": -3, "width": 100})
    write_config(tmp_path / "bad.json", bad)

    result = run_cli("plan", "bad.json")

    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert all(re.fullmatch(r"error in bad\.json: txt2img_config\.\w+: .+", line) for line in lines), lines
    assert {line.split(": ")[1] for line in lines} == {"txt2img_config.steps", "txt2img_config.width"}
    assert "Traceback" not in result.stderr


def test_plan_of_a_typo_exits_2_naming_the_key_and_the_closest_known_key(run_cli, tmp_path: Path) -> None:
    typo = example(TXT2IMG_ONLY)
    typo["txt2img_config"]["stpes"] = typo["txt2img_config"].pop("steps")
    write_config(tmp_path / "typo.json", typo)

    result = run_cli("plan", "typo.json")

    assert result.returncode == 2, result
    assert (
        result.stderr.strip()
        == 'error in typo.json: txt2img_config.stpes: is not a known key; did you mean "steps"?'
    )


def test_plan_lenient_warns_about_a_typo_on_stderr_and_plans_without_it(run_cli, tmp_path: Path) -> None:
    typo = example(TXT2IMG_ONLY)
    typo["txt2img_config"]["stpes"] = 40
    write_config(tmp_path / "typo.json", typo)

    result = run_cli("plan", "typo.json", "--lenient", "--json")

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        'warning: typo.json: ignored txt2img_config.stpes: is not a known key; did you mean "steps"?'
    )
    assert "stpes" not in result.stdout


def test_plan_of_a_stablenew_preset_takes_the_prompt_it_lacks_from_the_command_line(run_cli) -> None:
    preset = (
        Path(__file__).parents[1]
        / "data"
        / "stablenew2"
        / "presets"
        / "Portrait_CloseUp_Juggernaut_SDXL.json"
    )

    without = run_cli("plan", str(preset))
    result = run_cli(
        "plan", str(preset), "--prompt", "a lighthouse keeper", "--negative-prompt", "blurry", "--json"
    )

    assert without.returncode == 2 and "txt2img.prompt: required" in without.stderr, without
    assert result.returncode == 0, result.stderr
    txt2img = json.loads(result.stdout)["stages"][0]["config"]
    assert (txt2img["prompt"], txt2img["negative_prompt"]) == ("a lighthouse keeper", "blurry")


def test_submit_of_a_known_id_with_another_config_exits_2_and_keeps_the_old_job(
    run_cli, connection: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "a.json", example(TXT2IMG_ONLY))
    assert run_cli("submit", str(config), "--id", "nightly-1").returncode == 0

    again = run_cli("submit", str(config), "--id", "nightly-1")
    other = run_cli("submit", str(config), "--id", "nightly-1", "--prompt", "another prompt")

    assert again.returncode == 0 and "already submitted" in again.stdout, again
    assert other.returncode == 2, other
    assert "nightly-1 already exists with a different plan" in other.stderr
    assert Queue("default", connection=connection).get_job_ids() == ["nightly-1"]


def test_plan_and_submit_read_a_yaml_config_and_name_the_file_and_format_when_it_is_bad(
    run_cli, tmp_path: Path
) -> None:
    import yaml

    write_yaml = tmp_path / "full.yaml"
    write_yaml.write_text(yaml.safe_dump(example(FULL_PIPELINE)))
    (tmp_path / "bad.yml").write_text("txt2img_enabled: true\ntxt2img_enabled: false\n")

    planned = run_cli("plan", "full.yaml", "--json")
    submitted = run_cli("submit", "full.yaml", "--json")
    bad = run_cli("plan", "bad.yml")

    assert planned.returncode == 0, planned.stderr
    assert [s["stage_type"] for s in json.loads(planned.stdout)["stages"]] == CANONICAL
    assert submitted.returncode == 0, submitted.stderr
    assert bad.returncode == 2
    assert bad.stderr.startswith("error in bad.yml: <config>: invalid YAML at line 2 column 1:"), bad.stderr


def test_version_prints_the_package_version(run_cli) -> None:
    result = run_cli("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"stablenew {__version__}"


def test_help_lists_every_command(run_cli) -> None:
    result = run_cli("--help")

    assert result.returncode == 0
    listed = set(re.findall(r"^    (\w+)(?: |$)", result.stdout, flags=re.MULTILINE))
    assert listed == set(COMMANDS)
    assert {"plan", "run", "submit", "status", "watch", "list", "cancel", "retry", "worker"} <= listed


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(run_cli, command: str) -> None:
    result = run_cli(command, "--help")

    assert result.returncode == 0, result.stderr
    assert "example:" in result.stdout
    assert f"stablenew {command}" in result.stdout.split("example:")[1]


# ---------------------------------------------------------------------------------- run (no Redis)
def test_run_against_the_simulator_needs_no_redis_and_writes_a_manifest(
    run_cli, simulator: SimulatedWebUI, tmp_path: Path
) -> None:
    out = tmp_path / "local"

    result = run_cli(
        "run",
        str(FULL_PIPELINE),
        "--webui-url",
        simulator.url,
        "--output-dir",
        str(out),
        env={"STABLENEW_REDIS_URL": "redis://127.0.0.1:1/0"},
    )

    assert result.returncode == 0, result
    manifests = list(out.glob("*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["status"] == "finished"
    assert [s["type"] for s in manifest["stages"]] == CANONICAL
    assert all((out / s["outputs"][0]["path"]).is_file() for s in manifest["stages"])


def test_run_against_a_closed_port_exits_3(run_cli, closed_port: int, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        str(TXT2IMG_ONLY),
        "--webui-url",
        f"http://127.0.0.1:{closed_port}",
        "--output-dir",
        str(tmp_path),
    )

    assert result.returncode == 3, result
    assert "WebUI" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["submit", str(FULL_PIPELINE)], id="submit"),
        pytest.param(["status", "some-job"], id="status"),
        pytest.param(["list"], id="list"),
        pytest.param(["cancel", "some-job"], id="cancel"),
    ],
)
def test_queue_commands_without_redis_exit_4_with_one_line_and_no_password(
    run_cli: Any, closed_port: int, args: list[str]
) -> None:
    result = run_cli(*args, env={"STABLENEW_REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed_port}/0"})

    assert result.returncode == 4, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Redis" in lines[0], result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
