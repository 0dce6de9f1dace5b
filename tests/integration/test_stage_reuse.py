"""Stage reuse and ``rerun`` end to end: the public producer API, a real Redis, real ``stablenew
worker`` processes and the simulator over HTTP. A stage whose request another job already ran takes
that job's files (no WebUI call); anything missing, changed, unfinished or left to chance runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from job_checks import wait_done
from plan_configs import Configs
from stablenew.errors import ConfigError
from stablenew.jobs.producer import JobView, Producer
from stablenew.simulator import GENERATION_ROUTES, SimulatedWebUI

pytestmark = pytest.mark.integration

STAGES = ["txt2img", "img2img", "upscale", "adetailer"]
DENOISE = "adetailer_config.adetailer_denoise"


def generation_calls(simulator: SimulatedWebUI) -> list[str]:
    """The generation calls the simulator received, by stage (ADetailer runs as img2img)."""
    calls = []
    for r in simulator.requests:
        if r.method == "POST" and r.path in GENERATION_ROUTES:
            scripts = r.body.get("alwayson_scripts") if isinstance(r.body, dict) else None
            calls.append("adetailer" if scripts and "ADetailer" in scripts else r.path.rsplit("/", 1)[1])
    return calls


def finished(producer: Producer, job_id: str) -> JobView:
    view = wait_done(producer, job_id)
    assert view.status == "finished", view.to_dict()
    return view


def file_bytes(root: Path, view: JobView, index: int) -> list[bytes]:
    return [(root / out["path"]).read_bytes() for out in view.stages[index]["outputs"]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def worker(worker_process: Any, simulator: SimulatedWebUI) -> Any:
    return worker_process(webui_url=simulator.url)


def test_a_rerun_changing_only_the_adetailer_denoise_makes_one_generation_call(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, root: Path
) -> None:
    # Given a four-stage job that ran
    first = finished(producer, producer.submit(Configs.four_stage()).job_id)
    simulator.clear_requests()

    # When it is rerun with only the ADetailer denoise changed
    second = finished(producer, producer.rerun(first.job_id, {DENOISE: 0.55}).job_id)

    # Then the WebUI ran the ADetailer stage alone, and the three stages before it are the first job's files
    assert generation_calls(simulator) == ["adetailer"]
    assert [s["status"] for s in second.stages] == ["reused", "reused", "reused", "finished"]
    for index in range(3):
        assert second.stages[index]["reused_from"] == {"job_id": first.job_id, "index": index}
        assert file_bytes(root, second, index) == file_bytes(root, first, index)
        assert second.stages[index]["outputs"][0]["path"].startswith(f"{second.job_id}/")
    assert file_bytes(root, second, 3) != file_bytes(root, first, 3)
    adetailer_request = simulator.requests[-1].body
    assert adetailer_request["alwayson_scripts"]["ADetailer"]["args"][2]["ad_denoising_strength"] == 0.55
    manifest = json.loads(Path(second.manifest or "").read_text())
    assert manifest["stages"][1]["reused_from"] == {"job_id": first.job_id, "index": 1}


def test_an_identical_submit_reuses_every_stage_and_no_reuse_runs_them_all(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, root: Path
) -> None:
    first = finished(producer, producer.submit(Configs.three_stage()).job_id)
    simulator.clear_requests()

    again = finished(producer, producer.submit(Configs.three_stage()).job_id)
    assert generation_calls(simulator) == []
    assert [s["status"] for s in again.stages] == ["reused"] * 3
    assert file_bytes(root, again, 2) == file_bytes(root, first, 2)

    fresh = finished(producer, producer.submit(Configs.three_stage(), reuse=False).job_id)
    assert generation_calls(simulator) == ["txt2img", "img2img", "extra-single-image"]
    assert [s["status"] for s in fresh.stages] == ["finished"] * 3
    assert all(s["reused_from"] is None for s in fresh.stages)


@pytest.mark.parametrize("damage", ["delete", "alter"])
def test_a_deleted_or_altered_source_file_makes_the_stage_run_again(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, root: Path, damage: str
) -> None:
    first = finished(producer, producer.submit(Configs.two_stage()).job_id)
    img2img_file = root / first.stages[1]["outputs"][0]["path"]
    if damage == "delete":
        img2img_file.unlink()
    else:
        img2img_file.write_bytes(img2img_file.read_bytes() + b"\0")
    simulator.clear_requests()

    again = finished(producer, producer.submit(Configs.two_stage()).job_id)

    assert generation_calls(simulator) == ["img2img"]
    assert [s["status"] for s in again.stages] == ["reused", "finished"]


def test_a_seed_of_minus_one_is_never_reused_unless_a_rerun_pins_the_seed_it_ran_with(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, root: Path
) -> None:
    config = Configs.four_stage()
    config["txt2img_config"]["seed"] = -1
    first = finished(producer, producer.submit(config).job_id)
    simulator.clear_requests()

    again = finished(producer, producer.submit(config).job_id)
    assert generation_calls(simulator) == ["txt2img", "img2img", "extra-single-image", "adetailer"]
    assert "reused" not in [s["status"] for s in again.stages]
    simulator.clear_requests()

    rerun = finished(producer, producer.rerun(first.job_id, {DENOISE: 0.3}).job_id)
    assert generation_calls(simulator) == ["adetailer"]
    assert rerun.stages[0]["outputs"][0]["seed"] == first.stages[0]["outputs"][0]["seed"]
    assert file_bytes(root, rerun, 0) == file_bytes(root, first, 0)


def test_a_canceled_source_stage_is_never_reused(
    producer: Producer, simulator: SimulatedWebUI, worker: Any
) -> None:
    simulator.set_latency(1.5, route="/sdapi/v1/img2img")
    job_id = producer.submit(Configs.two_stage()).job_id
    wait_for_stage(producer, job_id, 1)
    producer.cancel(job_id)
    canceled = wait_done(producer, job_id)
    assert [s["status"] for s in canceled.stages] == ["finished", "canceled"]
    simulator.set_latency(0.0, route="/sdapi/v1/img2img")
    simulator.clear_requests()

    again = finished(producer, producer.submit(Configs.two_stage()).job_id)

    assert generation_calls(simulator) == ["img2img"]
    assert [s["status"] for s in again.stages] == ["reused", "finished"]


def test_a_failed_source_stage_is_never_reused(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, connection: Any
) -> None:
    from stablenew.jobs.state import StateStore

    first = finished(producer, producer.submit(Configs.two_stage()).job_id)
    store = StateStore(connection)
    state = store.load(first.job_id)
    assert state is not None
    state.stages[1].status = "failed"  # as a later run of that job left it
    store.save(state)
    simulator.clear_requests()

    again = finished(producer, producer.submit(Configs.two_stage()).job_id)

    assert generation_calls(simulator) == ["img2img"]
    assert [s["status"] for s in again.stages] == ["reused", "finished"]


def test_a_stage_of_an_expired_job_is_not_reused(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, connection: Any
) -> None:
    from stablenew.jobs.keys import state_key

    first = finished(producer, producer.submit(Configs.two_stage()).job_id)
    connection.delete(state_key(first.job_id))  # what its TTL does
    simulator.clear_requests()

    again = finished(producer, producer.submit(Configs.two_stage()).job_id)

    assert generation_calls(simulator) == ["txt2img", "img2img"]
    assert [s["status"] for s in again.stages] == ["finished", "finished"]


def test_stablenew_rerun_prints_the_new_job_and_status_says_where_its_stages_came_from(
    producer: Producer, simulator: SimulatedWebUI, worker: Any, run_cli: Any
) -> None:
    first = finished(producer, producer.submit(Configs.four_stage()).job_id)

    done = run_cli("rerun", first.job_id[:10], "--set", f"{DENOISE}=0.5", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["stages"] == STAGES and body["queue"] == "default"
    finished(producer, body["job_id"])

    shown = run_cli("status", body["job_id"])
    assert f"reused from job {first.job_id} stage 0" in shown.stdout
    bad = run_cli("rerun", first.job_id, "--set", f"{DENOISE}=high")
    assert bad.returncode == 2 and "adetailer_denoise" in bad.stderr


def test_a_rerun_change_that_breaks_the_config_names_the_key_and_enqueues_nothing(
    producer: Producer, simulator: SimulatedWebUI, worker: Any
) -> None:
    first = finished(producer, producer.submit(Configs.four_stage()).job_id)

    with pytest.raises(ConfigError) as caught:
        producer.rerun(first.job_id, {DENOISE: 7})

    assert "adetailer_denoise" in str(caught.value)


def wait_for_stage(producer: Producer, job_id: str, index: int) -> None:
    from job_checks import stage_running, wait_for

    wait_for(producer, job_id, stage_running(index), f"stage {index} running")
