"""Redis at its maxmemory with noeviction refuses writes ("OOM command not allowed"). A busy
worker rides such answers out like a lost connection (for STABLENEW_REDIS_RETRY_SECONDS); its job
goes on once there is room again, and never stays ``running`` for good."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from job_checks import wait_until
from plan_configs import TinyConfigs
from redis_servers import own_redis_server
from stablenew.jobs.connection import connect
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
FULL_S = 3.0
_wait = functools.partial(wait_until, timeout=DEADLINE_S)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    with own_redis_server(tmp_path / "redis", persist=False) as (_, url):
        yield url


def _fill_up(client: redis.Redis) -> None:
    """Set maxmemory well under what Redis uses now: every write that may grow it is refused until
    maxmemory is raised. (Just under it is not enough: memory falls by kilobytes as clients' buffers
    are freed, and a job may then finish while the test thinks Redis is full.)"""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(max(used // 2, 1)))


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
        job_id = producer.submit(TinyConfigs.two_stage("redis full")).job_id
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


def test_a_worker_that_gives_up_on_a_full_redis_exits_4_and_its_restart_takes_the_job_back(
    request: pytest.FixtureRequest,
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
        job_id = producer.submit(TinyConfigs.txt2img("redis full for long")).job_id
        _wait("stage 1 runs", lambda: producer.status(job_id).stages[0]["status"] == "running")
        _fill_up(client)
        started = time.monotonic()
        code = worker.proc.wait(timeout=DEADLINE_S)
        gave_up_s = time.monotonic() - started
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
    # Either the dead worker could not record the end (started), or a write went through before it
    # gave up and it handed the job back (queued): never an end it did not reach.
    assert left.status in ("started", "queued"), left.to_dict()
    assert view.status == "finished", view.to_dict()
    request.node.user_properties.append(("worker_exited_after_redis_full_s", round(gave_up_s, 2)))


def test_an_idle_worker_that_gives_up_on_a_full_redis_exits_4_not_0(
    own_redis: str,
    worker_process: Callable[..., Any],
    simulator: SimulatedWebUI,
) -> None:
    """Redis at maxmemory refuses the worker's dequeue (BLMOVE writes): RQ's loop logs the error and
    returns as if the worker had been asked to stop. It must exit 4 naming the cause, so that a
    service manager restarting on failure restarts it, not 0."""
    env = {"STABLENEW_REDIS_URL": own_redis, "STABLENEW_REDIS_RETRY_SECONDS": "1"}
    worker = worker_process("default", webui_url=simulator.url, env=env)
    client = connect(own_redis)
    try:
        _fill_up(client)
        code = worker.proc.wait(timeout=DEADLINE_S)
    finally:
        with contextlib.suppress(redis.RedisError):
            client.config_set("maxmemory", "0")
        client.close()
    assert code == 4, worker.log()[-3000:]
    assert "Redis is full (maxmemory reached)" in worker.log(), worker.log()[-3000:]


def test_a_watched_transaction_on_a_full_redis_ends_with_the_cause_not_an_endless_retry(
    own_redis: str,
) -> None:
    """redis-py turns an OOM answer inside a WATCHed transaction into WatchError once the error is
    one it retries, and RQ's end-of-job code runs the transaction again at once on WatchError: the
    work horse of a worker looped there for as long as Redis stayed full. With the worker's
    connection the loop is paced and ends with the OOM answer once the budget is spent."""
    admin = connect(own_redis)
    worker_side = connect(own_redis, retry_seconds=1)
    admin.set("dependents", "x")
    tries = 0
    try:
        _fill_up(admin)
        started = time.monotonic()
        with worker_side.pipeline() as pipe, pytest.raises(redis.exceptions.OutOfMemoryError):
            while time.monotonic() - started < DEADLINE_S:  # RQ's handle_job_success, in short
                tries += 1
                try:
                    pipe.watch("dependents")
                    pipe.multi()
                    pipe.set("result", "y" * 1000)
                    pipe.execute()
                    break
                except redis.exceptions.WatchError:
                    continue
        spent = time.monotonic() - started
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
        worker_side.close()
    assert spent < 5.0
    assert tries <= 10  # paced by the backoff, not a busy loop
