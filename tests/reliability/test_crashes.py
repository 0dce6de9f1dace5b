"""Crashes and restarts of a real ``stablenew worker``: the whole worker SIGKILLed mid-job and
restarted under its name, only its work horse killed, a warm stop (SIGTERM) during a stage, and a
second worker refused under the name of a live one.

Every case runs the 4-stage example pipeline against the A1111 simulator with a latency, so that
"during stage 2" (index 1, img2img) can be hit. The simulator's request log proves which stages
ran again; the job's folder proves that no output is missing, damaged, duplicated or left half
written.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker

from job_checks import stage_running, verify_outputs, wait_done, wait_for
from stablenew.config_files import load_config_file
from stablenew.jobs.keys import stop_key
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob, make_worker
from stablenew.jobs.state import StateStore
from stablenew.settings import Settings
from stablenew.simulator import RecordedRequest, SimulatedWebUI
from worker_processes import StartWorker, WorkerProcess, descendants

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
FULL_PIPELINE = EXAMPLES / "full_pipeline.json"
TXT2IMG_ONLY = EXAMPLES / "txt2img_only.json"
STAGES = ["txt2img", "img2img", "upscale", "adetailer"]
RETRY_MAX = 3  # the ``producer`` fixture's
RESUME_DEADLINE_S = 15.0  # a restarted namesake resumes the job within this (RQ alone: ~90 s + maintenance)
STOP_DEADLINE_S = 30.0


# ------------------------------------------------------------------------------------------ helpers
def submit(producer: Producer, path: Path, queue: str = "default") -> str:
    return producer.submit(load_config_file(path), queue=queue, source=str(path)).job_id


def generations(simulator: SimulatedWebUI, stage: str, *, prompt: str | None = None) -> list[RecordedRequest]:
    """The generation requests the simulator received for ``stage`` (ADetailer runs as img2img),
    only those whose prompt contains ``prompt`` when given."""
    route = {"upscale": "extra-single-image", "adetailer": "img2img"}.get(stage, stage)
    found = []
    for r in simulator.requests:
        if r.method != "POST" or r.path != f"/sdapi/v1/{route}":
            continue
        body: dict[str, Any] = r.body if isinstance(r.body, dict) else {}
        scripts = body.get("alwayson_scripts")
        if (isinstance(scripts, dict) and "ADetailer" in scripts) != (stage == "adetailer"):
            continue
        if prompt is not None and prompt not in str(body.get("prompt", "")):
            continue
        found.append(r)
    return found


def answered(requests: list[RecordedRequest]) -> int:
    return sum(1 for r in requests if r.status == 200)


def rq_job(connection: redis.Redis, job_id: str) -> StableNewJob:
    job = StableNewJob.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert isinstance(job, StableNewJob)
    return job


def failed_ids(connection: redis.Redis, queue: str = "default") -> list[str]:
    registry = FailedJobRegistry(queue, connection=connection, serializer=JSONSerializer)
    return registry.get_job_ids(cleanup=False)


def wait_dead(pids: set[int], timeout: float = 10.0) -> None:
    """Until none of ``pids`` is a live process (a zombie counts as dead)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = set()
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] != "Z":
                alive.add(pid)
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {sorted(alive)} still alive {timeout} s after SIGKILL")
        time.sleep(0.05)


def wait_registered(connection: redis.Redis, worker: WorkerProcess, timeout: float) -> None:
    """Until ``worker`` itself is registered under its name (the record of a dead namesake, which the
    ``worker_process`` fixture cannot tell from it, does not count)."""
    deadline = time.monotonic() + timeout
    while worker.pid not in [w.pid for w in Worker.all(connection=connection) if w.name == worker.name]:
        assert worker.alive(), f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log()}"
        assert time.monotonic() < deadline, (
            f"worker {worker.name} not registered in {timeout} s:\n{worker.log()}"
        )
        time.sleep(0.02)


def kill_whole_worker(worker: WorkerProcess) -> set[int]:
    """SIGKILL the worker, its scheduler child and its work horse (which leads its own process
    group); returns the pids killed once all are gone."""
    horse = worker.horse_pid()
    family = {worker.pid, horse, *descendants(worker.pid)}
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its scheduler child
    os.kill(horse, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    wait_dead(family)
    return family


# ------------------------------------------------------------------------------------------ whole worker
@pytest.mark.parametrize(
    "record", ["still registered", "expired"], ids=["dead worker still registered", "its record expired"]
)
def test_a_worker_killed_during_stage_two_is_resumed_by_its_namesake_at_once_without_rerunning_stage_one(
    record: str,
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """SIGKILL of parent and horse during img2img: a new worker under the same name registers at
    once, takes the job back and resumes it after txt2img within the deadline; txt2img ran once,
    no retry was used, and every output is whole and listed once. The same when the namesake comes
    back only after the dead worker's record has expired (RQ would by then call the job abandoned
    and use up one of its retries)."""
    simulator.set_latency(1.0)
    first = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)

    killed = kill_whole_worker(first)
    if record == "expired":
        connection.delete(f"rq:worker:{first.name}")
        connection.srem("rq:workers", f"rq:worker:{first.name}")
    simulator.set_latency(0.3)
    started = time.monotonic()
    second = worker_process(webui_url=simulator.url, name=first.name)
    wait_registered(connection, second, timeout=RESUME_DEADLINE_S)
    registered_after = time.monotonic() - started
    wait_for(
        producer,
        job_id,
        lambda v: v.done or v.stages[1]["attempts"] >= 2,
        "stage 1 (img2img) running again",
        timeout=RESUME_DEADLINE_S,
    )
    resumed_after = time.monotonic() - started
    view = wait_done(producer, job_id, timeout=60)
    request.node.user_properties.append(("namesake_registered_after_s", round(registered_after, 2)))
    request.node.user_properties.append(("resumed_after_restart_s", round(resumed_after, 2)))

    assert second.pid not in killed
    assert [w.pid for w in Worker.all(connection=connection) if w.name == first.name] == [second.pid]
    assert resumed_after < RESUME_DEADLINE_S
    manifest = verify_outputs(view, tmp_path / "outputs")
    assert [s["type"] for s in view.stages] == STAGES
    assert [s["attempts"] for s in view.stages] == [1, 2, 1, 1]
    txt2img = generations(simulator, "txt2img")
    assert (len(txt2img), answered(txt2img)) == (1, 1), txt2img
    assert len(generations(simulator, "img2img")) == 2  # the one cut short by the kill, and the rerun
    assert answered(generations(simulator, "upscale")) == len(generations(simulator, "upscale")) == 1
    assert answered(generations(simulator, "adetailer")) == len(generations(simulator, "adetailer")) == 1
    state = StateStore(connection).load(job_id)
    assert state is not None
    assert (state.runs, state.worker) == (2, first.name)
    assert manifest["worker"] == first.name
    job = rq_job(connection, job_id)
    assert job.retries_left == RETRY_MAX  # handed back, not retried by RQ as abandoned
    assert job_id not in failed_ids(connection)
    assert (
        "handed back to queue default.ckpt.sd_xl_base_1.0.safetensors after its worker died" in second.log()
    )
    if record == "expired":
        return  # the dead scheduler's lock expires with its record; nothing more to free
    assert "is dead; taking over its jobs" in second.log()
    # Its scheduler runs too (retries waiting for an interval need it): the dead one's lock was freed.
    holder = connection.get("rq:scheduler-lock:default")
    assert holder is not None
    scheduler_pid = int(connection.hget(f"rq:scheduler:{holder.decode()}", "pid") or 0)
    assert scheduler_pid in descendants(second.pid), (scheduler_pid, second.log())


def test_a_worker_refuses_to_start_under_the_name_of_a_live_worker_and_leaves_its_job_alone(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    run_cli: Callable[..., Any],
) -> None:
    """Only a provably dead namesake is replaced: a second ``stablenew worker --name`` of a live,
    busy worker is refused (exit 2, naming --name) and takes nothing from it."""
    simulator.set_latency(
        8.0
    )  # outlasts the refused start, even on a loaded machine (start-up is mostly imports)
    live = worker_process(webui_url=simulator.url)
    job_id = submit(producer, TXT2IMG_ONLY)
    wait_for(producer, job_id, stage_running(0), "stage 0 running", timeout=30)

    result = run_cli("worker", "--name", live.name, env={"STABLENEW_WEBUI_URL": simulator.url}, timeout=30)
    status_at_refusal = producer.status(job_id).status
    view = wait_done(producer, job_id, timeout=30)

    assert status_at_refusal == "started"
    assert result.returncode == 2, result
    assert f"--name: a live worker already uses this name: give each worker its own (got '{live.name}')" in (
        result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert live.alive()
    assert [w.pid for w in Worker.all(connection=connection) if w.name == live.name] == [live.pid]
    assert view.status == "finished", view.to_dict()
    assert [s["attempts"] for s in view.stages] == [1]
    state = StateStore(connection).load(job_id)
    assert state is not None
    assert (state.runs, state.worker) == (1, live.name)
    assert len(generations(simulator, "txt2img")) == 1


# ------------------------------------------------------------------------------------------ work horse
def test_a_killed_work_horse_is_retried_and_resumes_after_its_finished_stages(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
) -> None:
    """SIGKILL of the work horse alone during img2img: the worker survives, RQ retries the job
    and the rerun resumes after txt2img, whose request is not sent again."""
    simulator.set_latency(1.0)
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)
    horse = worker.horse_pid()

    os.kill(horse, signal.SIGKILL)
    simulator.set_latency(0.3)
    view = wait_done(producer, job_id, timeout=60)

    verify_outputs(view, tmp_path / "outputs")
    assert [s["attempts"] for s in view.stages] == [1, 2, 1, 1]
    txt2img = generations(simulator, "txt2img")
    assert (len(txt2img), answered(txt2img)) == (1, 1), txt2img
    assert len(generations(simulator, "img2img")) == 2
    assert len(generations(simulator, "upscale")) == 1
    assert len(generations(simulator, "adetailer")) == 1
    state = StateStore(connection).load(job_id)
    assert state is not None
    assert state.runs == 2
    assert rq_job(connection, job_id).retries_left == RETRY_MAX - 1
    assert worker.alive()


def test_a_killed_work_horse_without_retries_left_shows_its_running_stage_as_failed(
    connection: redis.Redis, simulator: SimulatedWebUI, worker_process: StartWorker, tmp_path: Path
) -> None:
    """Without a retry left, the horse's death fails the job: the stage it was in shows failed,
    the stages after it skipped, and the error says the work horse was terminated."""
    producer = Producer(connection, Settings(retry_max=0, output_dir=tmp_path / "outputs"))
    simulator.set_latency(1.0)
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)

    os.kill(worker.horse_pid(), signal.SIGKILL)
    view = wait_done(producer, job_id, timeout=30)

    assert view.status == "failed"
    assert view.error is not None and "Work-horse terminated" in view.error
    assert [s["status"] for s in view.stages] == ["finished", "failed", "skipped", "skipped"], view.to_dict()
    assert worker.alive()


# ------------------------------------------------------------------------------------------ warm stop
def test_sigterm_during_stage_two_lets_it_finish_hands_the_job_back_to_the_front_and_exits_cleanly(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A warm stop during img2img: img2img finishes and is saved, the job goes back to the front of
    its queue as queued (no retry used, not failed), the worker exits 0, and the next worker runs
    only upscale and ADetailer before the job queued behind it."""
    prompt = load_config_file(FULL_PIPELINE)["txt2img_config"]["prompt"]
    simulator.set_latency(1.0)
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)
    behind = submit(producer, TXT2IMG_ONLY)

    signaled = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = worker.proc.wait(timeout=STOP_DEADLINE_S)
    request.node.user_properties.append(("warm_stop_exit_after_s", round(time.monotonic() - signaled, 2)))

    assert code == 0, worker.log()
    view = producer.status(job_id)
    assert (view.status, view.position) == ("queued", 1), view.to_dict()
    assert producer.status(behind).position == 2
    assert [s["status"] for s in view.stages] == ["finished", "finished", "pending", "pending"], (
        view.to_dict()
    )
    saved = view.stages[1]["outputs"]
    assert len(saved) == 1
    path = tmp_path / "outputs" / saved[0]["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == saved[0]["sha256"]
    state = StateStore(connection).load(job_id)
    assert state is not None
    assert state.status == "queued"
    assert rq_job(connection, job_id).retries_left == RETRY_MAX
    assert job_id not in failed_ids(connection)
    assert len(generations(simulator, "upscale")) == 0

    simulator.set_latency(0.2)
    successor = worker_process(webui_url=simulator.url)
    view = wait_done(producer, job_id, timeout=60)
    assert wait_done(producer, behind, timeout=60).status == "finished"

    verify_outputs(view, tmp_path / "outputs")
    assert [s["attempts"] for s in view.stages] == [1, 1, 1, 1]
    txt2img = generations(simulator, "txt2img", prompt=prompt)
    assert (len(txt2img), answered(txt2img)) == (1, 1)
    assert len(generations(simulator, "img2img")) == 1
    assert len(generations(simulator, "upscale")) == 1
    assert len(generations(simulator, "adetailer")) == 1
    # Front of the queue: the handed-back job ran to its end before the job queued behind it began.
    behind_txt2img = [r for r in generations(simulator, "txt2img") if r not in txt2img]
    assert len(behind_txt2img) == 1
    assert generations(simulator, "adetailer")[0].time < behind_txt2img[0].time
    state = StateStore(connection).load(job_id)
    assert state is not None
    assert (state.runs, state.worker) == (2, successor.name)


def test_a_refused_namesake_leaves_the_stop_request_of_the_live_worker_in_place(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
) -> None:
    """A worker told to stop during img2img still hands its job back after that stage when a second
    worker under its name is refused meanwhile: the refused one must not clear the live one's stop
    request (``stablenew:stop:<name>``)."""
    simulator.set_latency(1.0)
    live = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)
    live.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not connection.exists(stop_key(live.name)):
        assert time.monotonic() < deadline, f"no stop request recorded:\n{live.log()}"
        time.sleep(0.01)

    namesake = make_worker(connection, name=live.name, settings=Settings(output_dir=tmp_path / "outputs"))
    with pytest.raises(ValueError, match="There exists an active worker"):
        namesake.register_birth()
    stop_kept = bool(connection.exists(stop_key(live.name)))
    code = live.proc.wait(timeout=STOP_DEADLINE_S)
    view = producer.status(job_id)

    assert code == 0
    assert [s["status"] for s in view.stages] == ["finished", "finished", "pending", "pending"], (
        view.to_dict()
    )
    assert view.status == "queued"
    assert stop_kept, "the refused namesake deleted the live worker's stop request"


def test_a_temporary_file_left_by_a_horse_killed_mid_write_is_gone_once_the_job_resumes(
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
) -> None:
    """A work horse killed inside an output write (between writing the temporary file and renaming
    it, a window too short to hit from outside) leaves a hidden partial ``.<name>.<random>.tmp`` in
    the job's folder. The test puts such a file there and kills the horse during img2img; once the
    job has resumed and finished, the folder holds its outputs and manifest only."""
    simulator.set_latency(1.0)
    worker = worker_process(webui_url=simulator.url)
    job_id = submit(producer, FULL_PIPELINE)
    wait_for(producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)
    folder = tmp_path / "outputs" / job_id
    whole = (folder / "00-txt2img-00.png").read_bytes()
    (folder / ".01-img2img-00.png.k3x9q2mz.tmp").write_bytes(whole[: len(whole) // 2])

    os.kill(worker.horse_pid(), signal.SIGKILL)
    simulator.set_latency(0.3)
    view = wait_done(producer, job_id, timeout=60)

    assert [s["attempts"] for s in view.stages] == [1, 2, 1, 1]
    verify_outputs(view, tmp_path / "outputs")
