"""The queue end to end: the public producer API, a real Redis, real ``stablenew worker`` processes and
the A1111 simulator over real HTTP (issue 4)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import redis
from PIL import Image

from job_checks import stage_running, wait_done, wait_for
from stablenew.config_files import load_config_file
from stablenew.jobs.producer import Producer
from stablenew.jobs.state import StateStore
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
FULL_PIPELINE = EXAMPLES / "full_pipeline.json"
TXT2IMG_ONLY = EXAMPLES / "txt2img_only.json"
STAGES = ["txt2img", "img2img", "upscale", "adetailer"]


def requested(simulator: SimulatedWebUI, stage: str) -> int:
    """How many generation requests the simulator received for ``stage`` (ADetailer runs as img2img)."""
    route = {"upscale": "extra-single-image", "adetailer": "img2img"}.get(stage, stage)
    count = 0
    for r in simulator.requests:
        if r.method != "POST" or r.path != f"/sdapi/v1/{route}":
            continue
        scripts = r.body.get("alwayson_scripts") if isinstance(r.body, dict) else None
        is_adetailer = isinstance(scripts, dict) and "ADetailer" in scripts
        if is_adetailer == (stage == "adetailer"):
            count += 1
    return count


def submit(producer: Producer, path: Path, queue: str = "default") -> str:
    return producer.submit(load_config_file(path), queue=queue, source=str(path)).job_id


def test_a_worker_process_runs_the_full_pipeline_and_writes_verified_outputs_and_a_manifest(
    producer: Producer, simulator: SimulatedWebUI, worker_process, tmp_path: Path
) -> None:
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)

    view = wait_done(producer, job_id)

    assert view.status == "finished", view.to_dict()
    assert view.error is None
    assert [s["type"] for s in view.stages] == STAGES
    assert [s["status"] for s in view.stages] == ["finished"] * 4
    root = tmp_path / "outputs"
    sizes = []
    for stage in view.stages:
        assert stage["attempts"] == 1
        assert len(stage["outputs"]) == 1, stage
        out = stage["outputs"][0]
        path = root / out["path"]
        assert path.parent == root / job_id
        assert hashlib.sha256(path.read_bytes()).hexdigest() == out["sha256"]
        with Image.open(path) as image:
            assert image.size == (out["width"], out["height"])
        sizes.append((out["width"], out["height"]))
    img2img, upscale = sizes[1], sizes[2]
    assert upscale == (2 * img2img[0], 2 * img2img[1])
    assert view.manifest is not None
    manifest = json.loads(Path(view.manifest).read_text())
    assert Path(view.manifest) == root / job_id / "manifest.json"
    assert manifest["job_id"] == job_id
    assert manifest["status"] == "finished"
    assert manifest["worker"] == worker.name
    assert [s["type"] for s in manifest["stages"]] == STAGES
    assert [s["outputs"][0]["sha256"] for s in manifest["stages"]] == [
        s["outputs"][0]["sha256"] for s in view.stages
    ]


def test_workers_on_different_queues_each_run_only_their_own_queue(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process,
) -> None:
    high_worker = worker_process("high", webui_url=simulator.url)
    low_worker = worker_process("low", webui_url=simulator.url)
    high_job = submit(producer, TXT2IMG_ONLY, queue="high")
    low_job = submit(producer, TXT2IMG_ONLY, queue="low")

    high_view = wait_done(producer, high_job)
    low_view = wait_done(producer, low_job)

    assert (high_view.status, high_view.queue) == ("finished", "high")
    assert (low_view.status, low_view.queue) == ("finished", "low")
    store = StateStore(connection)
    for job_id, view, worker in ((high_job, high_view, high_worker), (low_job, low_view, low_worker)):
        state = store.load(job_id)
        assert state is not None
        assert state.worker == worker.name
        assert view.manifest is not None
        assert json.loads(Path(view.manifest).read_text())["worker"] == worker.name


def test_canceling_a_running_job_interrupts_the_webui_and_the_worker_runs_the_next_job(
    producer: Producer, simulator: SimulatedWebUI, worker_process
) -> None:
    simulator.set_latency(3.0)
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(0), "stage 0 running", timeout=30)

    answer = producer.cancel(job_id)
    view = wait_done(producer, job_id, timeout=30)

    assert answer.startswith("cancel requested")
    assert view.status == "canceled", view.to_dict()
    assert [s["status"] for s in view.stages] == ["canceled"] * 4
    assert all(s["outputs"] == [] for s in view.stages)
    assert simulator.interrupted_count >= 1
    assert requested(simulator, "txt2img") == 1
    assert requested(simulator, "img2img") == 0
    assert requested(simulator, "upscale") == 0
    assert requested(simulator, "adetailer") == 0
    assert worker.alive()

    simulator.set_latency(0.0)
    next_job = submit(producer, TXT2IMG_ONLY)
    assert wait_done(producer, next_job).status == "finished"
    assert worker.alive()


def test_a_worker_refuses_to_start_when_the_webui_is_unreachable(run_cli, closed_port: int) -> None:
    result = run_cli(
        "worker", "--name", "no-webui", env={"STABLENEW_WEBUI_URL": f"http://127.0.0.1:{closed_port}"}
    )

    assert result.returncode == 3, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "webui" in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_a_worker_refuses_to_start_when_redis_is_unreachable(run_cli, simulator: SimulatedWebUI) -> None:
    result = run_cli(
        "worker",
        "--name",
        "no-redis",
        env={"STABLENEW_REDIS_URL": "redis://127.0.0.1:1/0", "STABLENEW_WEBUI_URL": simulator.url},
    )

    assert result.returncode == 4, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "redis" in lines[0].lower()
