"""WebUI faults against a real ``stablenew worker`` process, a real Redis and the simulated WebUI.

Each fault the WebUI can produce is classified by the worker: a transient one (refused or dropped
connection, a 5xx in A1111's error shape, a hang past the read timeout, JSON cut short, a 200 with
no images) is tried again in the same run after its backoff and the job finishes once the WebUI
answers; a permanent one (a 422, image data that is not base64) fails the job at once with the
WebUI's own words. No fault ends the worker process.

A WebUI that fails every call (out of memory) opens the worker's circuit breaker: the job in hand
goes back to the front of its queue unfailed, the worker stops taking jobs and only probes the
WebUI, with growing gaps, and takes the queue up again once the WebUI answers.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from job_checks import wait_done, wait_until
from stablenew.jobs.producer import Producer
from stablenew.jobs.resilience import WebUIBreaker, requeue_count
from stablenew.jobs.state import StateStore
from stablenew.settings import Settings
from stablenew.simulator import Fault, RecordedRequest, SimulatedWebUI

pytestmark = pytest.mark.integration

TXT2IMG = "/sdapi/v1/txt2img"
MEMORY = "/sdapi/v1/memory"
BACKOFF_S = 0.3  # STABLENEW_STAGE_RETRY_BACKOFF of the fault-table workers
REFUSED_BACKOFF_S = 1.0  # room to bring the WebUI back between the refused try and the next one
READ_TIMEOUT_S = 1  # STABLENEW_WEBUI_READ_TIMEOUT: a hang longer than this is a timeout
PROBE_S = 0.2  # STABLENEW_WEBUI_PROBE_INTERVAL of the breaker worker (doubling)
PROBE_MAX_S = 1.6
THRESHOLD = 3
DEADLINE_S = 30.0
wait_for = functools.partial(wait_until, timeout=DEADLINE_S)
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.MULTILINE)

StartWorker = Callable[..., Any]


def config(prompt: str) -> dict[str, Any]:
    """A one-stage plan that the simulator answers in milliseconds; the prompt tells jobs apart."""
    section = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, "seed": 11}
    return {"txt2img_enabled": True, "txt2img_config": section}


def generations(sim: SimulatedWebUI, prompt: str) -> list[RecordedRequest]:
    """The txt2img requests the simulator received for the job with ``prompt``, oldest first."""
    return [
        r
        for r in sim.requests
        if r.method == "POST"
        and r.path == TXT2IMG
        and isinstance(r.body, dict)
        and r.body["prompt"] == prompt
    ]


def retry_lines(log: str, job_id: str) -> list[tuple[float, str]]:
    """(wall-clock time, text) of each "trying again in" line the worker logged for ``job_id``."""
    found = []
    for line in log.splitlines():
        if f"job {job_id}:" in line and "trying again in" in line:
            stamp = _LOG_TIME.match(line)
            assert stamp, f"log line without a time stamp: {line!r}"
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((when, line))
    return found


# --------------------------------------------------------------------------------------------
# The fault table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebUIFault:
    """One way the WebUI fails a generation request, and what the worker must make of it."""

    name: str
    transient: bool
    webui_text: str  # what the WebUI said (or did), to be found in the error or the retry log line
    inject: Callable[[SimulatedWebUI], None] = field(repr=False)
    seen_by_webui: bool = True  # False: the failed try never reached the WebUI (nothing listened)
    interrupts: int = 0  # /sdapi/v1/interrupt calls expected: only a generation of ours still running
    env: dict[str, str] = field(default_factory=dict)


def _inject(fault: Fault) -> Callable[[SimulatedWebUI], None]:
    return lambda sim: sim.inject(fault)


def _go_down(sim: SimulatedWebUI) -> None:
    sim.stop()  # the port is closed: the next connection is refused


FAULTS = [
    WebUIFault(
        "connection refused",
        transient=True,
        webui_text="cannot reach the WebUI",
        inject=_go_down,
        seen_by_webui=False,
        env={"STABLENEW_STAGE_RETRY_BACKOFF": str(REFUSED_BACKOFF_S)},
    ),
    WebUIFault(
        "connection dropped", transient=True, webui_text="cannot reach", inject=_inject(Fault("close"))
    ),
    WebUIFault(
        "HTTP 500 in A1111's error shape",
        transient=True,
        webui_text="WebUI HTTP 500: RuntimeError: simulated failure (HTTP 500)",
        inject=_inject(Fault("status", status=500)),
    ),
    WebUIFault(
        "HTTP 422",
        transient=False,
        webui_text="WebUI rejected the request (HTTP 422): body: simulated validation failure",
        inject=_inject(Fault("status", status=422)),
    ),
    WebUIFault(
        "HTTP 500 no retry can fix",
        transient=False,
        webui_text="WebUI HTTP 500: Exception: Could not find checkpoint with name gone.safetensors",
        inject=_inject(
            Fault(
                "status",
                status=500,
                error="Exception",
                message="Could not find checkpoint with name gone.safetensors",
            )
        ),
    ),
    WebUIFault(
        "a hang past the read timeout",
        transient=True,
        webui_text="within the read timeout",
        inject=_inject(Fault("hang", seconds=60)),
        interrupts=0,  # the WebUI never ran the request (/internal/progress: not active): nothing to stop
        env={"STABLENEW_WEBUI_READ_TIMEOUT": str(READ_TIMEOUT_S)},
    ),
    WebUIFault(
        "malformed JSON",
        transient=True,
        webui_text="""response is not JSON: '{"images": ['""",
        inject=_inject(Fault("malformed_json")),
    ),
    WebUIFault(
        "undecodable image data",
        transient=False,
        webui_text="image 0 is not valid base64",
        inject=_inject(Fault("bad_base64")),
    ),
    WebUIFault(
        "a 200 whose images list is empty",
        transient=True,
        webui_text="/sdapi/v1/txt2img returned no images",
        inject=_inject(Fault("no_images")),
    ),
]


def _registered_pid(connection: redis.Redis, name: str) -> int | None:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
    return worker.pid if worker is not None else None


def _start(worker_process: StartWorker, sim: SimulatedWebUI, fault: WebUIFault) -> Any:
    env = {"STABLENEW_STAGE_RETRY_BACKOFF": str(BACKOFF_S), **fault.env}
    return worker_process("default", webui_url=sim.url, env=env)


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.transient], ids=lambda f: f.name)
def test_a_transient_webui_fault_is_retried_after_its_backoff_and_the_job_finishes(
    fault: WebUIFault,
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
) -> None:
    """The failed try shows in the stage's attempts, the WebUI's log and the worker's log; the next
    try comes no sooner than the configured backoff; the job finishes; the worker lives on."""
    worker = _start(worker_process, simulator, fault)
    backoff = float(fault.env.get("STABLENEW_STAGE_RETRY_BACKOFF", BACKOFF_S))
    # A first job caches the WebUI's inventory, so the fault meets the generation request itself.
    assert wait_done(producer, producer.submit(config("warm-up")).job_id, DEADLINE_S).status == "finished"

    fault.inject(simulator)
    prompt = f"through {fault.name}"
    job_id = producer.submit(config(prompt)).job_id
    if not fault.seen_by_webui:  # the WebUI comes back while the worker waits to try again
        wait_for("the refused try is logged", lambda: retry_lines(worker.log(), job_id))
        simulator.start()
    view = wait_done(producer, job_id, DEADLINE_S)

    assert view.status == "finished", view.to_dict()
    assert view.error is None
    assert view.stages[0]["status"] == "finished"
    assert view.stages[0]["attempts"] == 2, view.stages
    lines = retry_lines(worker.log(), job_id)
    assert len(lines) == 1, lines
    logged_at, line = lines[0]
    assert fault.webui_text in line
    assert f"trying again in {backoff:.1f} s (retry 1 of 2)" in line
    sent = generations(simulator, prompt)
    assert [r.status == 200 for r in sent][-1:] == [True]
    if fault.seen_by_webui:
        assert len(sent) == 2, [(r.status, r.time) for r in sent]
        failed, retried = sent
        assert failed.time < logged_at + 0.001 < retried.time  # the log's clock shows milliseconds
        waited = float(fault.env.get("STABLENEW_WEBUI_READ_TIMEOUT", 0))  # the hang, before giving up
        assert retried.time - failed.time >= waited + backoff
    else:
        assert len(sent) == 1, [(r.status, r.time) for r in sent]
        retried = sent[0]
    assert retried.time - logged_at >= backoff
    assert simulator.interrupted_count == fault.interrupts
    assert worker.alive()
    assert _registered_pid(connection, worker.name) == worker.pid
    assert StateStore(connection).load(job_id).worker == worker.name  # type: ignore[union-attr]


@pytest.mark.parametrize("fault", [f for f in FAULTS if not f.transient], ids=lambda f: f.name)
def test_a_permanent_webui_fault_fails_the_job_at_once_with_the_webuis_words_and_the_worker_runs_on(
    fault: WebUIFault,
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
) -> None:
    """One generation request, no retry (in the run or by RQ), the WebUI's text in the error, the
    breaker untouched, and the same worker process then finishes a good job."""
    worker = _start(worker_process, simulator, fault)
    fault.inject(simulator)
    prompt = f"through {fault.name}"
    job_id = producer.submit(config(prompt)).job_id

    view = wait_done(producer, job_id, DEADLINE_S)

    assert view.status == "failed", view.to_dict()
    assert view.error is not None and fault.webui_text in view.error, view.error
    assert view.stages[0]["status"] == "failed"
    assert view.stages[0]["attempts"] == 1
    assert fault.webui_text in view.stages[0]["error"]
    assert len(generations(simulator, prompt)) == 1
    assert retry_lines(worker.log(), job_id) == []
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert job.retries_left == 0  # RQ will not run it again either
    assert WebUIBreaker(connection, worker.name, threshold=THRESHOLD).failures() == 0

    good = producer.submit(config("after the fault")).job_id
    assert wait_done(producer, good, DEADLINE_S).status == "finished"
    assert worker.alive()
    assert _registered_pid(connection, worker.name) == worker.pid  # the same process, not a restart
    assert StateStore(connection).load(good).worker == worker.name  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# The circuit breaker
# --------------------------------------------------------------------------------------------


def _worker_state(connection: redis.Redis, name: str) -> str | None:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
    return worker.get_state() if worker is not None else None


def test_a_webui_failing_every_call_pauses_the_worker_and_no_job_is_failed_or_burnt(
    request: pytest.FixtureRequest,
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    run_cli: Callable[..., Any],
) -> None:
    """An out-of-memory WebUI (HTTP 500 on every route): after THRESHOLD failed tries the job in hand
    goes back to the front of its queue with its retries intact, the worker turns "suspended" and
    only probes the WebUI, with growing gaps; the four other jobs never reach the WebUI. Once the
    WebUI answers, the worker takes jobs again and all five finish."""
    worker = worker_process(
        "default",
        webui_url=simulator.url,
        env={
            "STABLENEW_WEBUI_FAILURE_THRESHOLD": str(THRESHOLD),
            "STABLENEW_STAGE_RETRY_BACKOFF": "0.1",
            "STABLENEW_WEBUI_PROBE_INTERVAL": str(PROBE_S),
            "STABLENEW_WEBUI_PROBE_MAX": str(PROBE_MAX_S),
        },
    )
    assert wait_done(producer, producer.submit(config("warm-up")).job_id, DEADLINE_S).status == "finished"
    queue = Queue("default", connection=connection, serializer=JSONSerializer)
    simulator.set_outage(Fault("status", status=500))
    prompts = [f"queued job {i}" for i in range(5)]
    ids = [s.job_id for s in producer.submit_many([config(p) for p in prompts])]
    retries_before = Job.fetch(ids[0], connection=connection, serializer=JSONSerializer).retries_left

    wait_for("the worker is suspended", lambda: _worker_state(connection, worker.name) == "suspended")
    last_try = wait_for(
        "the job in hand gave up", lambda: generations(simulator, prompts[0])[THRESHOLD - 1 :]
    )[-1]

    def probes_since() -> list[RecordedRequest]:
        return [r for r in simulator.requests if r.path == MEMORY and r.time > last_try.time]

    wait_for("four probes of the WebUI", lambda: len(probes_since()) >= 4)
    probes = probes_since()

    # (a) Paused: since its first probe only probes reached the WebUI, and it is still suspended.
    during = [r for r in simulator.requests if r.time >= probes[0].time]
    assert {(r.method, r.path) for r in during} == {("GET", MEMORY)}, during
    assert _worker_state(connection, worker.name) == "suspended"
    gaps = [b.time - a.time for a, b in pairwise(probes)]
    for number, gap in enumerate(gaps):  # each wait at least the doubled interval: 0.2, 0.4, 0.8 ...
        assert gap >= min(PROBE_S * 2**number, PROBE_MAX_S) * 0.95, gaps
    # Only the job in hand tried the WebUI: THRESHOLD generation requests, all refused with 500.
    first = generations(simulator, prompts[0])
    assert [r.status for r in first] == [500] * THRESHOLD
    assert all(generations(simulator, p) == [] for p in prompts[1:])
    # (b) No job failed: all five queued, the one handed back at the front, its retries untouched.
    assert FailedJobRegistry("default", connection=connection).count == 0
    assert [producer.status(i).status for i in ids] == ["queued"] * 5
    assert queue.get_job_ids() == ids
    handed = Job.fetch(ids[0], connection=connection, serializer=JSONSerializer)
    assert handed.retries_left == retries_before == 3
    view = producer.status(ids[0])
    assert view.error is not None and "handed back to the queue" in view.error, view.to_dict()
    assert "simulated failure (HTTP 500)" in view.error
    assert requeue_count(connection, ids[0]) == 1
    assert worker.alive()
    # ... and `stablenew workers` tells the operator so.
    shown = run_cli("workers", "--json")
    assert shown.returncode == 0, shown
    listed = {w["name"]: w for w in json.loads(shown.stdout)}
    assert listed[worker.name]["state"] == "suspended"
    assert listed[worker.name]["webui_failures"] >= THRESHOLD
    assert listed[worker.name]["current_job"] is None

    # (c) The WebUI answers again: the worker resumes and the whole queue finishes.
    simulator.set_outage(None)
    back_at = time.time()
    views = [wait_done(producer, i, DEADLINE_S) for i in ids]
    assert [v.status for v in views] == ["finished"] * 5, [v.to_dict() for v in views]
    assert [r.status for r in generations(simulator, prompts[0])] == [500] * THRESHOLD + [200]
    assert all([r.status for r in generations(simulator, p)] == [200] for p in prompts[1:])
    resumed = min(r.time for r in generations(simulator, prompts[0]) if r.status == 200)
    assert resumed > back_at
    request.node.user_properties.append(("breaker_probe_gaps_s", [round(g, 2) for g in gaps]))
    request.node.user_properties.append(("breaker_resumed_after_webui_back_s", round(resumed - back_at, 2)))
    assert _worker_state(connection, worker.name) in ("idle", "busy")
    assert WebUIBreaker(connection, worker.name, threshold=THRESHOLD).failures() == 0
    assert FailedJobRegistry("default", connection=connection).count == 0
    assert worker.alive()


def test_a_suspended_worker_stops_at_once_when_told_and_leaves_every_job_queued(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
) -> None:
    """A WebUI that is gone (every connection dropped) pauses the worker as an out-of-memory one
    does; SIGTERM then ends the probing worker with exit 0, and its jobs wait in the queue unfailed
    for another worker (the one handed back first, its retries intact)."""
    worker = worker_process(
        "default",
        webui_url=simulator.url,
        env={"STABLENEW_WEBUI_FAILURE_THRESHOLD": str(THRESHOLD), "STABLENEW_WEBUI_PROBE_MAX": "0.4"},
    )
    simulator.set_outage(Fault("close"))
    ids = [s.job_id for s in producer.submit_many([config(f"job {i}") for i in range(3)])]
    wait_for("the worker is suspended", lambda: _worker_state(connection, worker.name) == "suspended")
    wait_for(
        "a probe met by a dropped connection",
        lambda: any(r.path == MEMORY and r.status == 0 for r in simulator.requests),
    )

    worker.stop()

    assert worker.proc.returncode == 0, worker.log()
    assert Queue("default", connection=connection, serializer=JSONSerializer).get_job_ids() == ids
    assert [producer.status(i).status for i in ids] == ["queued"] * 3
    assert [Job.fetch(i, connection=connection, serializer=JSONSerializer).retries_left for i in ids] == [
        3
    ] * 3
    assert FailedJobRegistry("default", connection=connection).count == 0
    assert worker.name not in {w.name for w in Worker.all(connection=connection)}


def test_a_webui_that_is_down_fails_no_job_when_the_threshold_exceeds_the_in_run_retries(
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
    tmp_path: Path,
) -> None:
    """The breaker threshold is configurable: set above the in-run tries of one job (here 5 > 1 + 2
    stage retries), the jobs met by the outage before the breaker opens must still not be failed
    (jobs submitted without job-level retries make that visible)."""
    no_retries = Producer(connection, Settings(retry_max=0, output_dir=tmp_path / "outputs"))
    worker = worker_process(
        "default",
        webui_url=simulator.url,
        env={"STABLENEW_WEBUI_FAILURE_THRESHOLD": "5", "STABLENEW_STAGE_RETRIES": "2"},
    )
    simulator.set_outage(Fault("status", status=500))
    ids = [s.job_id for s in no_retries.submit_many([config(f"job {i}") for i in range(3)])]

    wait_for("the worker is suspended", lambda: _worker_state(connection, worker.name) == "suspended")

    assert [no_retries.status(i).status for i in ids] == ["queued"] * 3, [
        no_retries.status(i).to_dict() for i in ids
    ]
    assert FailedJobRegistry("default", connection=connection).count == 0
    simulator.set_outage(None)
    assert [wait_done(no_retries, i, DEADLINE_S).status for i in ids] == ["finished"] * 3


def test_an_out_of_memory_webui_that_still_answers_probes_does_not_burn_through_the_queue(
    producer: Producer,
    connection: redis.Redis,
    simulator: SimulatedWebUI,
    worker_process: StartWorker,
) -> None:
    """A1111 out of memory fails every generation while its other routes (the probe's
    ``/sdapi/v1/memory`` included) answer. The worker must still pause: its trials of the job in
    hand come no faster than the probe backoff, the queued jobs behind it send nothing, and no job
    is failed or loses a retry; once generations work again all five finish."""
    worker = worker_process(
        "default",
        webui_url=simulator.url,
        env={
            "STABLENEW_WEBUI_FAILURE_THRESHOLD": str(THRESHOLD),
            "STABLENEW_WEBUI_PROBE_INTERVAL": str(PROBE_S),
            "STABLENEW_WEBUI_PROBE_MAX": str(PROBE_MAX_S),
        },
    )
    assert wait_done(producer, producer.submit(config("warm-up")).job_id, DEADLINE_S).status == "finished"
    simulator.set_fault_rate(1.0)  # every generation: HTTP 500 or a dropped connection
    prompts = [f"queued job {i}" for i in range(5)]
    ids = [s.job_id for s in producer.submit_many([config(p) for p in prompts])]
    wait_for("the breaker opens", lambda: len(generations(simulator, prompts[0])) >= THRESHOLD)
    time.sleep(3.0)  # the WebUI stays out of memory a while

    tries = generations(simulator, prompts[0])
    # After the breaker opened, each failed trial of the job re-opens it: the next trial must wait.
    trial_gaps = [b.time - a.time for a, b in pairwise(tries[THRESHOLD:])]
    assert all(gap >= PROBE_S for gap in trial_gaps), [round(g, 3) for g in trial_gaps]
    assert [len(generations(simulator, p)) for p in prompts[1:]] == [0] * 4
    retries = [Job.fetch(i, connection=connection, serializer=JSONSerializer).retries_left for i in ids]
    assert retries == [3] * 5
    assert FailedJobRegistry("default", connection=connection).count == 0
    simulator.set_fault_rate(0.0)
    assert [wait_done(producer, i, DEADLINE_S).status for i in ids] == ["finished"] * 5
    assert worker.alive()
