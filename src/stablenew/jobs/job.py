"""StableNewJob: the allow-listed RQ Job class both worker commands use.

Producers use it too (for queues and registries) so that nothing on either side ever imports or
runs a function or callback named by a job.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry

from stablenew.errors import JobNotAllowed
from stablenew.jobs.keys import ALLOWED_FUNCTIONS
from stablenew.jobs.state import StateStore

log = logging.getLogger("stablenew.worker")


class StableNewJob(Job):
    """An RQ Job that runs only allow-listed functions and callbacks.

    JSON alone does not make a queue safe: a JSON job naming ``os.system`` would still run. This
    class refuses any function, bound instance or callback outside :data:`ALLOWED_FUNCTIONS`; such a
    job fails with a clear error and the worker goes on. RQ's own job webhooks are disabled (a job
    injected into Redis could otherwise make the GPU host post to any address).
    """

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS or self.instance is not None:
            self._refuse(
                f"job {self.id} names function {name!r}, which is not allowed on this worker "
                f"(allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))})"
            )
        # Callbacks are refused before the job runs, not after it has done its GPU work.
        self._checked_callback("success", self._success_callback_name)
        self._checked_callback("failure", self._failure_callback_name)
        self._checked_callback("stopped", self._stopped_callback_name)
        return super().func

    def _checked_callback(self, kind: str, name: str | None) -> None:
        if name:
            self._refuse(f"job {self.id} names {kind} callback {name!r}, which is not allowed")

    def _refuse(self, message: str) -> None:
        self.retries_left = 0  # permanent: a retry would be refused the same way
        raise JobNotAllowed(message, job_id=self.id)

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> Job:
        """Fetch a job; one RQ cannot even read is treated as absent, so the worker skips it.

        RQ's dequeue passes over ``NoSuchJobError`` but lets any other error out of ``fetch`` stop
        the whole worker: an id outside ``[A-Za-z0-9_-]`` pushed onto a queue list, or a hash with
        a garbage ``created_at``, ``status`` or ``timeout`` written straight into Redis.
        """
        try:
            job: Job = super().fetch(id, connection=connection, serializer=serializer)
        except (NoSuchJobError, redis.RedisError):
            raise  # absent, or Redis itself failing: RQ handles both (skipping would lose the job)
        except Exception as exc:
            log.warning("job %r: unreadable job skipped (%s: %s)", id, type(exc).__name__, exc)
            raise NoSuchJobError(f"job {id!r} cannot be read: {type(exc).__name__}") from None
        return job

    # RQ also runs callbacks outside any job, e.g. the failure callback of an abandoned job during
    # a worker's maintenance, where an exception would stop the worker. So these never import or
    # run anything, and never raise; ``func`` above refuses a job that names one.
    @property
    def success_callback(self) -> Any:
        return self._no_callback("success", self._success_callback_name)

    @property
    def failure_callback(self) -> Any:
        return self._no_callback("failure", self._failure_callback_name)

    @property
    def stopped_callback(self) -> Any:
        return self._no_callback("stopped", self._stopped_callback_name)

    def _no_callback(self, kind: str, name: str | None) -> None:
        if name:
            log.warning("job %s: %s callback %r ignored (not allowed)", self.id, kind, name)
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None

    def _handle_failure(self, exc_string: str, pipeline: Any, *args: Any, **kwargs: Any) -> None:
        """A cancel ends the job *canceled* (RQ would otherwise call it failed); a job that died
        without recording its end (its work horse was killed) gets its running stage marked failed.

        RQ calls this once the job will not be retried, in the work horse or, when the horse died,
        in the worker's parent process."""
        if getattr(self, "_stablenew_canceled", False):
            ttl = self.failure_ttl or DEFAULT_FAILURE_TTL
            self.set_status(JobStatus.CANCELED, pipeline=pipeline)
            CanceledJobRegistry(
                self.origin, self.connection, job_class=type(self), serializer=self.serializer
            ).add(self, ttl=ttl, pipeline=pipeline)
            pipeline.expire(self.key, ttl)
            return
        try:
            store = StateStore(self.connection)
            state = store.load(self.id)
            if state is not None and state.status in ("running", "queued"):
                lines = [line for line in exc_string.strip().splitlines() if line.strip()]
                state.mark_failed(lines[-1] if lines else "the job died")
                store.save(state)
        except redis.RedisError:
            log.warning("job %s: could not record its failure in the stage state", self.id)
        super()._handle_failure(exc_string, pipeline, *args, **kwargs)
