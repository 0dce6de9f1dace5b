"""The RQ names our classes rely on, pinned against the installed rq.

StableNewJob and StableNewWorker override or call some of RQ's methods, a few of them private. An rq
release that renames one, or changes the parameters we pass or receive, fails here, by name,
instead of somewhere deep in a worker.
"""

from __future__ import annotations

import inspect
import time

import fakeredis
import pytest
import redis
import rq
from rq import Queue, Worker
from rq.job import Job, JobStatus

from stablenew.jobs.keys import cancel_key, requeues_key
from stablenew.jobs.rq_classes import StableNewJob, StableNewWorker, make_worker
from stablenew.settings import Settings
from stablenew.simulator import Fault

# (owner, name, parameters we pass or receive, besides self)
PINNED = [
    # private: overridden by StableNewJob
    (Job, "_deserialize_data", []),
    (Job, "_handle_failure", ["exc_string", "pipeline"]),
    # private: called by the hand-back (jobs/resilience.py)
    (Queue, "_enqueue_job", ["job", "pipeline", "at_front"]),
    # public hooks we override
    (Job, "restore", ["raw_data"]),
    (Job, "fetch", ["id", "connection", "serializer"]),
    (Job, "perform", []),
    (Job, "send_webhooks", ["status", "exc_string"]),
    (Worker, "register_birth", []),
    (Worker, "dequeue_job_and_maintain_ttl", ["timeout", "max_idle_time"]),
    (Worker, "request_stop", ["signum", "frame"]),
    (Worker, "teardown", []),
    (Worker, "unsubscribe", []),
    (Worker, "perform_job", ["job", "queue"]),
    (Worker, "handle_exception", ["job"]),
    (Worker, "handle_job_failure", ["job", "queue", "started_job_registry", "exc_string"]),
    # public methods we call from our overrides
    (Worker, "cleanup_execution", ["job", "pipeline"]),
    (Worker, "set_state", ["state"]),
    (Worker, "procline", ["message"]),
    (Worker, "heartbeat", []),
]


def test_the_installed_rq_is_the_one_these_names_are_pinned_against() -> None:
    assert rq.__version__.split(".")[:2] == ["2", "12"], rq.__version__


@pytest.mark.parametrize(("owner", "name", "params"), PINNED, ids=[f"{o.__name__}.{n}" for o, n, _ in PINNED])
def test_each_rq_method_we_rely_on_exists_with_the_parameters_we_use(
    owner: type, name: str, params: list[str]
) -> None:
    method = getattr(owner, name, None)
    assert callable(method), f"rq {rq.__version__} has no {owner.__name__}.{name}"
    found = inspect.signature(method).parameters
    missing = [p for p in params if p not in found]
    assert not missing, f"{owner.__name__}.{name} lost parameters {missing} (has {list(found)})"


@pytest.mark.parametrize("name", ["func", "success_callback", "failure_callback", "stopped_callback"])
def test_the_job_properties_we_override_are_still_properties(name: str) -> None:
    assert isinstance(inspect.getattr_static(Job, name), property)


def test_the_private_attributes_we_read_are_set_by_rq() -> None:
    connection = fakeredis.FakeRedis()
    job = StableNewJob.create("os.getcwd", connection=connection)
    for name in ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name"):
        assert hasattr(job, name), f"rq Job no longer sets {name}"
    worker = StableNewWorker([Queue("default", connection=connection)], connection=connection)
    assert worker._stop_requested is False, "rq Worker no longer sets _stop_requested"


# --------------------------------------------------------------------------------------------
# StableNewSimpleWorker: our dequeue, breaker and hand-back, in process on fakeredis
# --------------------------------------------------------------------------------------------


def test_a_hand_back_puts_the_job_at_the_front_of_its_queue_without_using_a_retry(
    producer, run_our_worker, sim, conn, fetch, stored_state, configs, monkeypatch
):
    # Given two jobs, and a WebUI whose first generation fails (its breaker opens at once)
    monkeypatch.setenv("STABLENEW_WEBUI_FAILURE_THRESHOLD", "1")
    monkeypatch.setenv("STABLENEW_WEBUI_PROBE_INTERVAL", "0.05")
    first = producer.submit(configs.txt2img())
    second = producer.submit(configs.txt2img("a blue boat"))
    sim.inject(Fault("status", route="/sdapi/v1/txt2img", status=503))

    # When our worker runs the queue
    performed = run_our_worker()

    # Then the first job went back to the front (it ran again before the second), retries untouched
    assert performed == [first.job_id, first.job_id, second.job_id]
    job = fetch(first.job_id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == Settings().retry_max
    assert conn.get(requeues_key(first.job_id)) == b"1"
    assert stored_state(first.job_id).runs == 2
    assert fetch(second.job_id).get_status() == JobStatus.FINISHED


def test_a_cancel_ends_the_job_canceled_under_our_worker(
    producer, run_our_worker, sim, conn, fetch, stored_state, configs
):
    # Given a job whose cancel was asked for as a worker took it
    submission = producer.submit(configs.txt2img())
    conn.set(cancel_key(submission.job_id), "1")

    # When our worker runs it
    assert run_our_worker() == [submission.job_id]

    # Then it ended canceled (not failed, not retried: it ran once), with nothing generated
    job = fetch(submission.job_id)
    assert job.get_status() == JobStatus.CANCELED
    assert stored_state(submission.job_id).status == "canceled"
    assert sim.generation_posts() == []


def test_a_permanent_failure_uses_no_retry_under_our_worker(
    producer, run_our_worker, sim, fetch, stored_state, configs
):
    # Given a job the WebUI rejects (a 4xx: the same request fails the same way every time)
    submission = producer.submit(configs.txt2img())
    sim.inject(Fault("status", route="/sdapi/v1/txt2img", status=422))

    # When our worker runs the queue
    performed = run_our_worker()

    # Then it ran once and failed for good
    assert performed == [submission.job_id]
    job = fetch(submission.job_id)
    assert job.get_status() == JobStatus.FAILED
    assert job.retries_left == 0
    assert stored_state(submission.job_id).status == "failed"


def test_a_worker_unsubscribes_at_once_even_when_the_unsubscribe_reply_comes_first(
    connection: redis.Redis,
) -> None:
    """The shutdown stall of rq 2.12 on redis-py 8: RQ sends UNSUBSCRIBE and only then stops its pubsub
    thread; a reply that arrives first lets the thread start another 60 s read, and ``stop()`` waits for
    it. Forced here by delaying the flag RQ clears; our worker clears it before it unsubscribes."""
    worker = make_worker(connection, ["default"], name="unsubscriber")
    worker.subscribe()
    thread = worker.pubsub_thread
    original_stop = thread.stop

    def late_stop(timeout: float | None = None) -> None:
        if timeout is None:  # RQ's call, after its UNSUBSCRIBE: let the reply reach the thread first
            time.sleep(0.5)
        original_stop(timeout=5 if timeout is None else timeout)  # bounded, so the test cannot hang

    thread.stop = late_stop  # type: ignore[method-assign]
    started = time.monotonic()
    worker.unsubscribe()
    took = time.monotonic() - started

    assert not thread.is_alive()
    assert took < 2.5, f"unsubscribe took {took:.1f} s"


def test_a_webui_500_no_retry_can_fix_fails_at_once_under_our_worker(
    producer, run_our_worker, sim, fetch, stored_state, configs
):
    # Given a job whose refiner checkpoint vanished from the WebUI after preflight (A1111 answers 500)
    submission = producer.submit(configs.txt2img())
    gone = "Could not find checkpoint with name gone.safetensors"
    sim.inject(Fault("status", route="/sdapi/v1/txt2img", status=500, error="Exception", message=gone))

    # When our worker runs the queue
    performed = run_our_worker()

    # Then the WebUI was asked once: no in-run retry, no hand-back, no RQ retry, the WebUI's words kept
    assert performed == [submission.job_id]
    assert sim.generation_posts() == ["/sdapi/v1/txt2img"]
    job = fetch(submission.job_id)
    assert job.get_status() == JobStatus.FAILED
    assert job.retries_left == 0
    state = stored_state(submission.job_id)
    assert state.status == "failed"
    assert gone in (state.error or "")


class RefusingDequeues(fakeredis.FakeRedis):
    """A Redis that refuses a worker's blocking take of a job off its queue (one at maxmemory refuses
    RQ's BLMOVE, which may grow it; BLPOP stands in for it here) and answers everything else."""

    def execute_command(self, *args: object, **options: object) -> object:
        if str(args[0]).upper() in {"BLPOP", "BLMOVE", "LMOVE"}:
            raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
        return super().execute_command(*args, **options)


def test_a_redis_error_that_ends_rqs_work_loop_is_kept_for_the_exit_code() -> None:
    """RQ's loop logs an exception from a dequeue or a job and returns as if asked to stop; the worker
    keeps it (``ended_by``) so that ``stablenew worker`` exits 4 with the cause, not 0."""
    from stablenew.jobs.rq_classes import StableNewSimpleWorker

    server = fakeredis.FakeServer()
    worker = make_worker(RefusingDequeues(server=server), ["default"], worker_class=StableNewSimpleWorker)
    assert worker.work(max_idle_time=2) is False  # RQ swallowed the error and returned
    assert isinstance(worker.ended_by, redis.exceptions.OutOfMemoryError)

    calm = make_worker(fakeredis.FakeRedis(server=server), ["low"], worker_class=StableNewSimpleWorker)
    calm.work(max_idle_time=1)
    assert calm.ended_by is None
