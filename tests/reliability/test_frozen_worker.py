"""A worker that froze (SIGSTOP: a paused VM, a swapped-out host) and wakes after its job was given
to another worker must not write over its successor.

Each run of a job takes a new ownership token; a run checks it still holds the newest one before
each stage, each state write (atomically), each output file and the webhook, and stops unwritten
otherwise."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from job_checks import wait_until
from plan_configs import TinyConfigs
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.state import StateStore
from stablenew.simulator import SimulatedWebUI
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
_wait = functools.partial(wait_until, timeout=DEADLINE_S)


@pytest.fixture
def slow_simulator() -> Iterator[SimulatedWebUI]:
    sim = SimulatedWebUI(port=0, latency=0.6).start()
    yield sim
    sim.stop()


def test_a_frozen_worker_that_wakes_after_its_job_moved_on_writes_nothing_over_its_successor(
    producer: Producer,
    connection: redis.Redis,
    slow_simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    store = StateStore(connection)
    a = worker_process("default", webui_url=slow_simulator.url)
    job_id = producer.submit(
        {**TinyConfigs.four_stage("frozen"), "callback_url": webhook_receiver.url}
    ).job_id
    _wait("stage 1 runs on A", lambda: producer.status(job_id).stages[0]["status"] == "running")
    horse = a.horse_pid()
    os.kill(horse, signal.SIGSTOP)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        # What RQ's maintenance does once A's heartbeat is overdue: the job is abandoned and retried.
        StartedJobRegistry(
            "default", connection=connection, job_class=StableNewJob, serializer=JSONSerializer
        ).cleanup(timestamp=time.time() + 10**6)
        b = worker_process("default", webui_url=slow_simulator.url)
        _wait("B runs the job", lambda: (s := store.load(job_id)) is not None and s.worker == b.name)
    finally:
        os.kill(a.pid, signal.SIGCONT)
        os.kill(horse, signal.SIGCONT)

    writers = []
    while not producer.status(job_id).done:
        state = store.load(job_id)
        if state is not None:
            writers.append(state.worker)
        time.sleep(0.01)
    _wait("the webhook", lambda: webhook_receiver.deliveries)
    time.sleep(1.5)  # A's stage answer arrived long ago: anything A still wrote or sent shows by now

    view = producer.status(job_id)
    state = store.load(job_id)
    assert view.status == "finished", view.to_dict()
    assert state is not None and state.worker == b.name
    assert a.name not in writers, writers  # the state never flipped back to A
    received = [delivery.json() for delivery in webhook_receiver.deliveries]
    assert len(received) == 1, received
    assert received[0]["status"] == "finished"
    for stage in state.stages:
        for out in stage.outputs:
            data = (tmp_path / "outputs" / out.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == out.sha256, out.path
    assert "superseded" in a.log(), a.log()[-3000:]
    assert a.alive() and b.alive()
