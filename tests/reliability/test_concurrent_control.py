"""``retry`` and ``cancel`` called at the same time on one job, from threads, against a real Redis.

Two ``retry`` calls on one canceled job used to enqueue it twice (19 of 20 trials), so two workers ran it;
on a failed job the second caller got ``internal error: InvalidJobOperation`` (exit 1). Reading the status
and requeueing are now one atomic step: exactly one caller requeues, the other gets a JobError "already
requeued" (exit 2), and the job's id is in its queue once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from plan_configs import TinyConfigs
from stablenew.cli import exit_code_for
from stablenew.errors import JobError
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob

TRIALS = 30


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released together; each result is the return value or the exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # the exception is the result under test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def make_failed(connection: redis.Redis, job_id: str) -> None:
    """File a queued job as failed, as a worker would after its last try."""
    queue = Queue("default", connection=connection, serializer=JSONSerializer, job_class=StableNewJob)
    job = StableNewJob.fetch(job_id, connection=connection, serializer=JSONSerializer)
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry("default", connection=connection, serializer=JSONSerializer).add(job, exc_string="boom")


@pytest.mark.parametrize("ended", ["canceled", "failed"])
def test_two_retries_at_once_requeue_the_job_exactly_once(
    ended: str, producer: Producer, connection: redis.Redis, record_property: Any
) -> None:
    outcomes: Counter[str] = Counter()
    for trial in range(TRIALS):
        # Given: a job that ended canceled or failed
        job_id = producer.submit(TinyConfigs.txt2img(f"trial {trial}")).job_id
        if ended == "canceled":
            producer.cancel(job_id)
        else:
            make_failed(connection, job_id)

        # When: two callers retry it at the same moment (each with its own connection pool)
        other = Producer(
            redis.Redis(connection_pool=redis.ConnectionPool(**connection.connection_pool.connection_kwargs)),
            producer.settings,
        )
        results = at_once([partial(producer.retry, job_id), partial(other.retry, job_id)])
        other.connection.close()

        # Then: one requeued it, the other was told it already was (exit 2), and it is queued once
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1, f"trial {trial}: {results}"
        (error,) = errors
        assert isinstance(error, JobError), f"trial {trial}: {error!r}"
        assert "already requeued" in str(error)
        assert exit_code_for(error) == 2
        queued = [i.decode() for i in connection.lrange("rq:queue:default", 0, -1)]
        assert queued.count(job_id) == 1, f"trial {trial}: queued {queued.count(job_id)} times"
        assert producer.status(job_id).status == "queued"
        outcomes["requeued once"] += 1
    record_property(
        f"two retries at once on a {ended} job", f"requeued once in {outcomes['requeued once']} of {TRIALS}"
    )


def test_two_cancels_at_once_cancel_once(producer: Producer, connection: redis.Redis) -> None:
    for trial in range(TRIALS):
        job_id = producer.submit(TinyConfigs.txt2img(f"cancel {trial}")).job_id

        results = at_once([partial(producer.cancel, job_id), partial(producer.cancel, job_id)])

        assert sorted(map(str, results)) == ["already canceled", "canceled (it had not started)"], (
            f"trial {trial}: {results!r}"
        )
        assert connection.lrange("rq:queue:default", 0, -1).count(job_id.encode()) == 0
