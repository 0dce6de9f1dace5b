"""The producer's control side: cancel and retry.

Each reads a job's status and changes it in one atomic step (:mod:`~stablenew.jobs._status_change`): of two
calls at once, one sees the other's result. :class:`JobControl` is a base of
:class:`~stablenew.jobs.producer.Producer`.
"""

from __future__ import annotations

from typing import TypeVar

import redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import BaseRegistry, CanceledJobRegistry, FailedJobRegistry
from rq.serializers import JSONSerializer

from stablenew.errors import JobError
from stablenew.jobs.connection import map_redis_errors
from stablenew.jobs.keys import cancel_key
from stablenew.jobs.listing import entry_for, index_jobs
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.state import StateStore, mirror_to_meta
from stablenew.jobs.views import Submission, data_rewritten, pending_state

from ._inspect import JobReader
from ._status_change import change_status

_R = TypeVar("_R", bound=BaseRegistry)


class JobControl(JobReader):
    """Cancels and retries jobs on one Redis: a base of :class:`~stablenew.jobs.producer.Producer`."""

    @map_redis_errors()
    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued one at once, a running one cooperatively (the worker interrupts
        the WebUI and ends the job canceled). Returns what happened, in words.

        Reading the status and canceling are one atomic step (:mod:`_status_change`): of two cancels
        at once, or a cancel racing a retry or a worker taking the job, one sees the other's result.
        """
        job = self._fetch(job_id)
        job_id = job.id
        # How long a job canceled before it ran is kept: as long as a failed one (a job canceled
        # while it ran gets the same at its end). RQ's own cancel sets no TTL, so without this the
        # job, its state and its list entry would stay in Redis for good.
        ttl = job.failure_ttl or self.settings.failure_ttl

        def cancel_queued(pipe: Pipeline, status: JobStatus) -> None:
            try:
                job.cancel(pipeline=pipe)
            except InvalidJobOperation:  # RQ read the status anew: another cancel came first
                raise redis.WatchError(job.key) from None  # read it again, as a lost WATCH would
            registry = CanceledJobRegistry(
                job.origin, self.connection, job_class=StableNewJob, serializer=JSONSerializer
            )
            registry.add(job, ttl=ttl, pipeline=pipe)  # RQ filed it as expiring now
            pipe.expire(job.key, ttl)
            # A worker may have popped the job already (it is still "queued" until the worker marks
            # it started): the cancel key makes that worker end it canceled before any work.
            pipe.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)

        canceled, status = change_status(self.connection, job.key, _CANCELABLE, cancel_queued)
        if canceled:
            state = self.store.load(job_id) or pending_state(job)
            state.status = "canceled"
            state.error = "canceled before it started"
            for st in state.stages:
                if st.status == "pending":
                    st.status = "canceled"
            job.get_status(refresh=True)  # RQ's cancel set it in Redis, not on this object
            with self.connection.pipeline(transaction=False) as pipe:
                StateStore(self.connection, ttl=ttl).save(state, pipeline=pipe)  # kept as long as the job
                mirror_to_meta(job, state, pipeline=pipe)
                pipe.execute()
            return "canceled (it had not started)"
        if status == JobStatus.CANCELED:
            return "already canceled"
        if status == JobStatus.STARTED:
            self.connection.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)
            return "cancel requested: the worker will interrupt the WebUI and stop the job"
        return f"nothing to cancel: the job is {status.value if status else 'gone'}"

    @map_redis_errors()
    def retry(self, job_id: str) -> Submission:
        """Requeue a failed or canceled job; it resumes after its last finished stage.

        Checking the status and requeueing are one atomic step (:mod:`_status_change`): of two
        retries at once, exactly one requeues the job; the other raises JobError "already requeued".

        Raises:
            JobNotFound: no such job.
            JobError: the job is not failed, canceled or stopped (or was just requeued by another caller).
        """
        job = self._fetch(job_id)
        job_id = job.id
        status = job.get_status()
        if status not in _RETRYABLE:
            # A retry that lost the race to another one finds the job queued (or running) already.
            waiting = "already requeued, or yet to run; " if status in _WAITING else ""
            raise JobError(
                f"job {job_id} is {status.value if status else 'gone'}: {waiting}only failed, canceled "
                "or stopped jobs can be retried",
                job_id=job_id,
            )
        self._refuse_or_repair_rewritten(job)
        queue = self.queue(job.origin)
        # A fresh budget of automatic retries: a permanent failure zeroed it, or the transient
        # ones used it up, and the rerun deserves the same policy as a new job.
        if self.settings.retry_max > 0:
            job.retries_left = self.settings.retry_max
            job.retry_intervals = list(self.settings.retry_intervals) or [0]

        def requeue(pipe: Pipeline, status: JobStatus) -> None:
            for kind in (FailedJobRegistry, CanceledJobRegistry):  # RQ files stopped jobs as failed too
                _registry(kind, queue).remove(job, pipeline=pipe)
            pipe.delete(cancel_key(job_id))
            # A failed or canceled job expires failure_ttl after it ended; queued again, it must
            # wait as long as it takes, as a new job does (RQ lifts the TTL only once it runs).
            pipe.persist(job.key)
            job.started_at = None
            job.ended_at = None
            job._exc_info = ""  # what RQ's own requeue clears
            queue.enqueue_job(job, pipeline=pipe)

        requeued, now = change_status(self.connection, job.key, _RETRYABLE, requeue)
        if not requeued:
            raise JobError(
                f"job {job_id} is already requeued (it is {now.value if now else 'gone'} now): "
                "another retry or cancel came first",
                job_id=job_id,
            )
        existing = self._existing(job_id)
        assert existing is not None
        index_jobs(self.connection, [entry_for(job_id, existing.queue, existing.plan, None)])
        return existing

    def _refuse_or_repair_rewritten(self, job: Job) -> None:
        """Before a retry: a job that a tool without ``-S json`` re-saved (``rq requeue``, say)
        is requeued only if it can run. Its plan (``data``) no longer JSON cannot be recovered;
        only its ``meta`` rewritten, it is written again as JSON from the stage state.

        Raises:
            JobError: the job's data is not JSON; nothing was changed.
        """
        if data_rewritten(job):
            raise JobError(
                f"job {job.id} was rewritten by a tool without -S json; resubmit its config", job_id=job.id
            )
        if isinstance(job, StableNewJob) and job.meta_not_json:
            mirror_to_meta(job, self.store.load(job.id))
            job.meta_not_json = False


_RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})
_CANCELABLE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})
_WAITING = _CANCELABLE | {JobStatus.STARTED}


def _registry(kind: type[_R], queue: Queue) -> _R:
    """A registry of ``queue`` that reads jobs as StableNewJob, with JSON (never a plain Job)."""
    return kind(queue.name, queue.connection, job_class=StableNewJob, serializer=JSONSerializer)
