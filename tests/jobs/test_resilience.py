"""The pieces that keep a worker useful when its WebUI or its own process fails, in-process:
the circuit breaker's count (:class:`WebUIBreaker`), the "is that worker really dead" check
(:func:`provably_dead`), and what a run records when it tries again or is handed back
(:meth:`RunRecorder.retrying`, :meth:`RunRecorder.requeued`)."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from PIL import Image

from stablenew.errors import WebUIHTTPError, WebUIUnavailable
from stablenew.jobs.keys import breaker_key
from stablenew.jobs.resilience import WebUIBreaker, provably_dead, release_dead_scheduler_locks
from stablenew.pipeline import PipelineRunner, StageExecutionPlan, StageSequencer, StageType
from stablenew.run import JobOutputs, JobState, RunRecorder

HOST = socket.gethostname()


# --------------------------------------------------------------------------------------------
# WebUIBreaker
# --------------------------------------------------------------------------------------------


def test_the_breaker_opens_at_the_threshold_of_failures_in_a_row_and_not_before(
    conn: fakeredis.FakeRedis,
) -> None:
    breaker = WebUIBreaker(conn, "gpu0", threshold=3)

    seen = []
    for _ in range(3):
        seen.append((breaker.is_open(), breaker.record_failure()))

    assert seen == [(False, 1), (False, 2), (False, 3)]
    assert breaker.is_open()
    assert breaker.failures() == 3


def test_a_stage_the_webui_answers_closes_the_breaker_and_the_count_starts_over(
    conn: fakeredis.FakeRedis,
) -> None:
    breaker = WebUIBreaker(conn, "gpu0", threshold=3)
    for _ in range(3):
        breaker.record_failure()

    breaker.record_success()

    assert (breaker.is_open(), breaker.failures()) == (False, 0)
    breaker.record_failure()
    breaker.record_failure()
    assert not breaker.is_open()  # two failures after a success are not three in a row


def test_half_open_lets_one_job_try_and_a_single_further_failure_opens_the_breaker_again(
    conn: fakeredis.FakeRedis,
) -> None:
    breaker = WebUIBreaker(conn, "gpu0", threshold=4)
    for _ in range(6):
        breaker.record_failure()

    breaker.half_open()

    assert not breaker.is_open()
    breaker.record_failure()
    assert breaker.is_open()


def test_a_breaker_with_threshold_one_half_opens_to_closed(conn: fakeredis.FakeRedis) -> None:
    breaker = WebUIBreaker(conn, "gpu0", threshold=1)
    breaker.record_failure()
    assert breaker.is_open()

    breaker.half_open()

    assert (breaker.is_open(), breaker.failures()) == (False, 0)
    breaker.record_failure()
    assert breaker.is_open()


def test_the_worker_and_its_work_horses_share_one_count_and_other_workers_keep_their_own(
    conn: fakeredis.FakeRedis, server: fakeredis.FakeServer
) -> None:
    """The count lives in Redis under the worker's name: a work horse (another client) adds to the
    count its parent reads; a second worker's count is separate. It expires on its own."""
    parent = WebUIBreaker(conn, "gpu0", threshold=2)
    horse = WebUIBreaker(fakeredis.FakeRedis(server=server), "gpu0", threshold=2)
    other = WebUIBreaker(conn, "gpu1", threshold=2)

    horse.record_failure()
    horse.record_failure()

    assert parent.is_open()
    assert not other.is_open()
    assert parent.key == breaker_key("gpu0") != other.key
    assert 0 < conn.ttl(parent.key) <= 24 * 3600


# --------------------------------------------------------------------------------------------
# provably_dead
# --------------------------------------------------------------------------------------------


@pytest.fixture
def live_process() -> Iterator[Any]:
    """Start ``argv`` and make sure it ends with the test. Returns once its command line shows in
    /proc: Popen may return while the kernel is still setting the new program's arguments up."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, f"{argv} never showed its command line"
            time.sleep(0.005)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=5)


def test_a_worker_registered_under_this_very_pid_is_dead() -> None:
    """A restarted container's worker gets the same pid (often 1) as the one that died."""
    assert provably_dead(HOST, os.getpid())


def test_a_worker_whose_pid_no_longer_exists_is_dead() -> None:
    finished = subprocess.Popen(["true"])
    assert finished.wait(timeout=5) == 0  # ended and reaped: its pid is free

    assert provably_dead(HOST, finished.pid)


def test_a_pid_reused_by_a_process_that_is_not_a_worker_is_dead(live_process: Any) -> None:
    sleeper = live_process("sleep", "30")

    assert provably_dead(HOST, sleeper.pid)


def test_a_live_process_that_looks_like_a_worker_is_not_dead(live_process: Any) -> None:
    worker_like = live_process(sys.executable, "-c", "import time; time.sleep(30)", "stablenew", "worker")

    assert not provably_dead(HOST, worker_like.pid)


@pytest.mark.parametrize(
    ("hostname", "pid"),
    [("another-host.example", None), ("another-host.example", -1), (None, -1), (HOST, None), (HOST, 0)],
    ids=["another host", "another host, dead pid", "no host", "no pid", "pid 0"],
)
def test_a_worker_on_another_host_or_without_a_pid_cannot_be_proven_dead(
    hostname: str | None, pid: int | None
) -> None:
    dead_pid = pid
    if pid == -1:  # a pid that certainly does not exist here: it is still another host's process
        proc = subprocess.Popen(["true"])
        proc.wait(timeout=5)
        dead_pid = proc.pid

    assert not provably_dead(hostname, dead_pid)


# --------------------------------------------------------------------------------------------
# RunRecorder.retrying / requeued
# --------------------------------------------------------------------------------------------


def png_b64(shade: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, 60, 120)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class FlakyWebUI:
    """A stage executor (the WebUI's side) whose stages fail as scripted: ``fail[stage]`` errors
    are raised, in order, before that stage answers."""

    def __init__(self, fail: dict[str, list[Exception]]) -> None:
        self.fail = {stage: list(errors) for stage, errors in fail.items()}
        self.calls: list[str] = []

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(stage_type.value)
        errors = self.fail.get(stage_type.value)
        if errors:
            raise errors.pop(0)
        number = len(self.calls)
        return {"images": [png_b64(number * 41)], "meta": {"seed": 500 + number, "seeds": [500 + number]}}


class Saved:
    """A persist callback keeping a copy of every state saved."""

    def __init__(self) -> None:
        self.states: list[JobState] = []

    def __call__(self, state: JobState, progress_only: bool) -> None:
        if not progress_only:
            self.states.append(state.model_copy(deep=True))


@pytest.fixture
def plan(configs: Any) -> StageExecutionPlan:
    return StageSequencer().build_plan(configs.three_stage())


def test_retrying_records_the_failed_stage_and_the_next_pass_resumes_after_the_finished_ones(
    tmp_path: Path, plan: StageExecutionPlan
) -> None:
    """What the worker's in-run retry does: a transient failure in stage 1 is recorded on that
    stage; the next pass of the same run reuses stage 0's files and runs stage 1 (attempt 2) on."""
    webui = FlakyWebUI({"img2img": [WebUIHTTPError(503, "CUDA out of memory")]})
    saved = Saved()
    recorder = RunRecorder(JobOutputs(tmp_path, "job"), plan, persist=saved)
    runner = PipelineRunner(webui, hooks=recorder)
    with pytest.raises(WebUIHTTPError) as failure:
        runner.run(plan)

    recorder.retrying(failure.value)

    after_failure = saved.states[-1]
    assert [s.status for s in after_failure.stages] == ["finished", "failed", "pending"]
    assert after_failure.stages[1].error == "WebUIHTTPError: WebUI HTTP 503: CUDA out of memory"
    assert after_failure.status == "running"  # the run goes on: nothing is failed yet
    assert recorder.current is None

    runner.run(plan)
    recorder.finished()

    assert webui.calls == ["txt2img", "img2img", "img2img", "upscale"]
    final = saved.states[-1]
    assert final.status == "finished"
    assert [s.status for s in final.stages] == ["finished"] * 3
    assert [s.attempts for s in final.stages] == [1, 2, 1]
    assert [s.error for s in final.stages] == [None] * 3
    assert final.runs == 1


def test_requeued_records_the_job_as_queued_and_its_next_run_resumes_after_the_finished_stages(
    tmp_path: Path, plan: StageExecutionPlan
) -> None:
    """A job handed back (its worker's WebUI is down) is queued, not failed: the stage caught running
    is marked failed with the reason, finished stages are kept and not run again next time."""
    reason = "handed back to the queue: the WebUI of worker gpu0 is failing"
    webui = FlakyWebUI({"upscale": [WebUIUnavailable("cannot reach the WebUI")]})
    saved = Saved()
    outputs = JobOutputs(tmp_path, "job")
    recorder = RunRecorder(outputs, plan, persist=saved)
    with pytest.raises(WebUIUnavailable):
        PipelineRunner(webui, hooks=recorder).run(plan)

    recorder.requeued(reason)

    queued = saved.states[-1]
    assert (queued.status, queued.error) == ("queued", reason)
    assert [s.status for s in queued.stages] == ["finished", "finished", "failed"]
    assert queued.stages[2].error == reason
    assert queued.manifest is None  # the job has not ended

    again = RunRecorder(outputs, plan, state=queued, persist=saved)
    PipelineRunner(webui, hooks=again).run(plan)
    again.finished()

    assert webui.calls == ["txt2img", "img2img", "upscale", "upscale"]
    final = saved.states[-1]
    assert (final.status, final.error, final.runs) == ("finished", None, 2)
    assert [s.attempts for s in final.stages] == [1, 1, 2]


# --------------------------------------------------------------------------------------------
# Scheduler locks left by a dead worker
# --------------------------------------------------------------------------------------------


def _hold_lock(conn: fakeredis.FakeRedis, queue: str, scheduler: str, hostname: str, pid: int) -> None:
    """What a running RQ scheduler leaves in Redis: its lock on ``queue`` and its own hash."""
    conn.set(f"rq:scheduler-lock:{queue}", scheduler, ex=61)
    conn.hset(f"rq:scheduler:{scheduler}", mapping={"name": scheduler, "hostname": hostname, "pid": str(pid)})


def test_the_scheduler_locks_of_a_dead_scheduler_on_this_host_are_released(
    conn: fakeredis.FakeRedis,
) -> None:
    """The restarted worker can start its scheduler at once, so retries waiting for their interval
    are not stuck until the dead scheduler's lock expires and a maintenance run notices."""
    finished = subprocess.Popen(["true"])
    assert finished.wait(timeout=5) == 0
    for queue in ("high", "default"):
        _hold_lock(conn, queue, "dead-scheduler", HOST, finished.pid)

    released = release_dead_scheduler_locks(conn, ["high", "default", "low"])

    assert released == ["high", "default"]
    assert conn.get("rq:scheduler-lock:high") is None
    assert conn.get("rq:scheduler-lock:default") is None


def test_the_scheduler_lock_of_a_live_or_remote_scheduler_is_kept(
    conn: fakeredis.FakeRedis, live_process: Any
) -> None:
    worker_like = live_process(sys.executable, "-c", "import time; time.sleep(30)", "stablenew", "worker")
    _hold_lock(conn, "high", "live-scheduler", HOST, worker_like.pid)
    _hold_lock(conn, "default", "remote-scheduler", "another-host.example", 1)

    released = release_dead_scheduler_locks(conn, ["high", "default"])

    assert released == []
    assert conn.get("rq:scheduler-lock:high") == b"live-scheduler"
    assert conn.get("rq:scheduler-lock:default") == b"remote-scheduler"


# --------------------------------------------------------------------------------------------
# Hand-backs need our worker class
# --------------------------------------------------------------------------------------------


def test_under_plain_rq_a_webui_that_is_down_fails_the_job_as_usual_instead_of_handing_it_back(
    producer: Any, run_worker: Any, sim: Any, configs: Any, conn: fakeredis.FakeRedis, monkeypatch: Any
) -> None:
    """Only StableNewWorker re-enqueues a handed-back job without using a retry. Under RQ's own
    worker class the job must not record itself as queued again: RQ retries it, then fails it."""
    from stablenew.jobs.keys import requeues_key
    from stablenew.simulator import Fault

    monkeypatch.setenv("STABLENEW_WEBUI_FAILURE_THRESHOLD", "1")
    sim.set_outage(Fault("close"))
    submission = producer.submit(configs.txt2img())

    performed = run_worker()  # CountingWorker: an rq.SimpleWorker, not StableNewWorker

    assert performed == [submission.job_id] * (1 + producer.settings.retry_max)
    view = producer.status(submission.job_id)
    assert view.status == "failed", view.to_dict()
    assert "handed back" not in (view.error or "")
    assert conn.get(requeues_key(submission.job_id)) is None


# --------------------------------------------------------------------------------------------
# Two start-ups under one name
# --------------------------------------------------------------------------------------------


def _worker(conn: fakeredis.FakeRedis, name: str) -> Any:
    from stablenew.jobs.rq_classes import make_worker

    return make_worker(conn, ["default"], name=name)


def test_a_worker_starting_while_a_namesake_is_starting_up_is_refused(
    conn: fakeredis.FakeRedis, live_process: Any, env: None
) -> None:
    """Two workers started at once under one name must not both take back a dead namesake's jobs."""
    from stablenew.jobs.keys import birth_key

    other = live_process(sys.executable, "-c", "import time; time.sleep(30)", "stablenew", "worker")
    conn.set(birth_key("gpu0"), f"{HOST}:{other.pid}")

    with pytest.raises(ValueError, match="There exists an active worker named 'gpu0'"):
        _worker(conn, "gpu0").register_birth()
    assert conn.get(birth_key("gpu0")) == f"{HOST}:{other.pid}".encode()  # the other keeps it
    assert not conn.exists("rq:worker:gpu0")


def test_a_start_up_lock_left_by_a_dead_process_does_not_block_the_next_start(
    conn: fakeredis.FakeRedis, env: None
) -> None:
    from stablenew.jobs.keys import birth_key

    finished = subprocess.Popen(["true"])
    assert finished.wait(timeout=5) == 0
    conn.set(birth_key("gpu0"), f"{HOST}:{finished.pid}")

    worker = _worker(conn, "gpu0")
    worker.register_birth()

    assert conn.exists("rq:worker:gpu0")
    assert conn.get(birth_key("gpu0")) is None  # released once registered
    worker.register_death()
