"""One job the WebUI keeps failing must not stall the queue behind it.

A1111 answers some bad inputs (an init image it cannot decode, say) with a 500 that looks like an
outage. The worker then opens its breaker, hands the job back and probes; the probe is answered. A
job that fails again right after that answered probe, while the WebUI still generates a test image,
is the problem, not the WebUI: it fails for good and the jobs behind it run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from plan_configs import TinyConfigs
from stablenew.jobs.producer import Producer
from stablenew.jobs.resilience import WebUIBreaker
from stablenew.simulator import Fault, SimulatedWebUI

pytestmark = pytest.mark.integration

IMG2IMG = "/sdapi/v1/img2img"
THRESHOLD = 3
DEADLINE_S = 20.0


def test_a_job_failing_again_right_after_an_answered_probe_fails_and_the_jobs_behind_it_run(
    request: pytest.FixtureRequest,
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
) -> None:
    worker = worker_process(
        "default",
        webui_url=simulator.url,
        env={
            "STABLENEW_WEBUI_FAILURE_THRESHOLD": str(THRESHOLD),
            "STABLENEW_STAGE_RETRY_BACKOFF": "0.1",
            "STABLENEW_WEBUI_PROBE_INTERVAL": "0.2",
            "STABLENEW_WEBUI_PROBE_MAX": "1.6",
        },
    )
    simulator.inject(Fault("status", route=IMG2IMG, status=500, count=1000))
    started = time.monotonic()
    bad = producer.submit(
        TinyConfigs.two_stage("the bad one")
    ).job_id  # its img2img fails: no other job sends one
    good = [s.job_id for s in producer.submit_many([TinyConfigs.txt2img(f"good {i}") for i in range(3)])]

    deadline = started + DEADLINE_S
    while time.monotonic() < deadline and not all(producer.status(j).done for j in [bad, *good]):
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    views = {j: producer.status(j) for j in [bad, *good]}
    assert [views[j].status for j in good] == ["finished"] * 3, {j: v.to_dict() for j, v in views.items()}
    assert views[bad].status == "failed", views[bad].to_dict()
    assert views[bad].error is not None and "simulated failure (HTTP 500)" in views[bad].error
    assert "this job" in views[bad].error  # says the job, not the WebUI, is at fault
    job = Job.fetch(bad, connection=connection, serializer=JSONSerializer)
    assert job.retries_left == 0  # not tried again: the WebUI answers, the job fails on it
    tries = [r for r in simulator.requests if r.method == "POST" and r.path == IMG2IMG]
    assert len(tries) == THRESHOLD + 1, len(tries)  # one run's tries, then one trial after the probe
    assert WebUIBreaker(connection, worker.name, threshold=THRESHOLD).failures() == 0
    assert worker.alive()
    request.node.user_properties.append(("bad_job_queue_of_3_drained_s", round(elapsed, 2)))
