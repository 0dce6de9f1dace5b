"""Our RQ classes: :class:`StableNewJob` and :class:`StableNewWorker`, every RQ method we override.

Both worker commands use them: ``stablenew worker`` builds the worker with :func:`make_worker`;
plain RQ runs::

    rq worker -S json -j stablenew.jobs.rq_classes.StableNewJob \
        -w stablenew.jobs.rq_classes.StableNewWorker --with-scheduler high default low

Producers use :class:`StableNewJob` too (for queues and registries) so that nothing on either side
ever imports or runs a function or callback named by a job. The job they run is
:func:`stablenew.jobs.job_run.run_plan`.

How a run ends travels as an exception, read where RQ hands it over: :meth:`StableNewJob.perform`
sees :class:`~stablenew.errors.Canceled` (the job ends *canceled*, no retry),
:class:`~stablenew.errors.Requeued` (:class:`StableNewWorker` puts it back at the front of its
queue, no retry used) and any permanent error (no retry). The RQ names we rely on, private ones
included, are pinned against the installed rq by ``tests/jobs/test_rq_classes.py``.

This module is the one import path of these classes. It holds the worker class proper (start-up,
dequeue, stop, hand-backs); the job class is in ``_rq_job.py``, the queue class in
``_pausable_queue.py``, and the worker's other parts, one base class each, in
``_affinity_dispatch.py`` (the order of its queues), ``_webui_outage.py`` (the wait while its WebUI
is down), ``_webhook_handoff.py`` (a job's webhook, after the job) and ``_registration_watch.py``
(its record in Redis).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus
from rq.worker.base import BaseWorker

from stablenew.errors import Requeued, Superseded
from stablenew.jobs.affinity import forget_worker
from stablenew.jobs.keys import birth_key, stop_key
from stablenew.jobs.resilience import hand_back, provably_dead, reclaim_dead_namesake
from stablenew.queues import QUEUES
from stablenew.settings import Settings

from ._affinity_dispatch import AFFINITY_POLL_S, AffinityDispatch
from ._pausable_queue import PAUSED_POLL_SECONDS, PausableQueue, paused_queues
from ._registration_watch import RegistrationWatch
from ._rq_job import MAX_JOB_DATA_BYTES, StableNewJob
from ._webhook_handoff import WebhookHandOff
from ._webui_outage import WebUIOutage

# The settings of the worker running the current job (its flags included), for the job function in the work
# horse; None under another worker class, whose jobs read the environment.
_running_settings: ContextVar[Settings | None] = ContextVar("stablenew_worker_settings", default=None)


def running_worker_settings() -> Settings | None:
    """The settings of the StableNew worker performing the current job, if any."""
    return _running_settings.get()


class StableNewBaseWorker(RegistrationWatch, AffinityDispatch, WebUIOutage, WebhookHandOff):
    """What our workers add to RQ's, whichever way they run a job:

    - restarted under the name of a worker that provably died on this host, it starts at once and
      hands that worker's interrupted jobs back to their queues (:func:`reclaim_dead_namesake`);
    - while its WebUI keeps failing (:class:`WebUIBreaker` open) it takes no job, probes the WebUI
      with backoff and resumes when it answers; the job in hand went back to its queue unfailed;
    - told to stop (SIGTERM/SIGINT), it lets the running stage finish, saves it, hands the job back
      to the front of its queue (it resumes after that stage) and exits;
    - a job handed back (:class:`~stablenew.errors.Requeued`) is enqueued again at the front of its
      queue without using up a retry.

    :class:`StableNewWorker` (forking, what a GPU host runs) and :class:`StableNewSimpleWorker` (in
    process, for tests and fakeredis) are this class on RQ's ``Worker`` and ``SimpleWorker``.

    Its bases are the worker's parts: :class:`RegistrationWatch`, :class:`AffinityDispatch` (the order
    of its queues), :class:`WebUIOutage` (the wait while its WebUI is down) and
    :class:`WebhookHandOff`. Each overrides RQ methods no other defines, so RQ's own method comes next
    in the order, whichever RQ worker class this one is put on.
    """

    #: What ended the work loop, when an error did: RQ's loop logs any exception that escapes a
    #: dequeue or a job's execution and returns as if asked to stop, so the CLI reads it here to exit
    #: with the cause (4 for Redis) instead of 0, and a service manager restarts the worker.
    ended_by: Exception | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        with self._ending_the_loop_on_error():
            super().execute_job(job, queue)

    @contextlib.contextmanager
    def _ending_the_loop_on_error(self) -> Iterator[None]:
        """Note an exception leaving RQ's loop methods (each is called only from its ``work``, which
        ends on any exception but a stop request) before RQ swallows it."""
        try:
            yield
        except (StopRequested, SystemExit):
            raise
        except Exception as exc:
            self.ended_by = exc
            raise

    # ------------------------------------------------------------------ start-up
    def register_birth(self) -> None:
        s = self._settings()
        # Two workers started at once under one name (a mistake) must not both take back the dead
        # namesake's jobs: whoever holds this lock reclaims and registers; the other is refused.
        lock, me = birth_key(self.name), f"{socket.gethostname()}:{os.getpid()}"
        if not self.connection.set(lock, me, nx=True, ex=60):
            holder: bytes = self.connection.get(lock) or b""  # type: ignore[assignment]
            host, _, pid = holder.decode(errors="replace").rpartition(":")
            if not provably_dead(host, int(pid) if pid.isdigit() else None):
                raise ValueError(f"There exists an active worker named {self.name!r} already (starting up)")
            self.connection.set(lock, me, ex=60)  # left by a start-up that died half-way
        try:
            reclaim_dead_namesake(self, max_requeues=s.max_requeues, ttl=max(s.failure_ttl, s.result_ttl))
            super().register_birth()  # type: ignore[no-untyped-call]  # refuses a live namesake
        finally:
            self.connection.delete(lock)
        self.connection.delete(stop_key(self.name))  # a stop left by an earlier, dead life of this name
        self._watch_registration()
        self._read_loaded_checkpoint()

    # ------------------------------------------------------------------ dequeue: breaker, then affinity
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, with the breaker first and the queues ordered by checkpoint affinity.

        The order is made again before each blocking wait of at most ``AFFINITY_POLL_S`` seconds,
        so that a checkpoint queue created meanwhile, a plan passing the max wait or a swap made by
        another worker is seen within that time."""
        with self._ending_the_loop_on_error():
            return self._dequeue(timeout, max_idle_time)

    def _dequeue(self, timeout: int | None, max_idle_time: int | None) -> tuple[Job, Queue] | None:
        self._wait_for_webui()
        # Dequeue through PausableQueue: no job from a paused queue (stablenew.jobs.queue_control).
        # Set here, not as a class attribute: RQ checks the given queues' type against it.
        self.queue_class = PausableQueue
        if timeout is None:  # burst: one pass, no waiting
            self._order_by_affinity()
            return self._took(super().dequeue_job_and_maintain_ttl(timeout, max_idle_time))
        started = time.monotonic()
        while True:
            self._order_by_affinity()
            wait = max(1, min(timeout, AFFINITY_POLL_S))
            if max_idle_time is not None:
                left = max_idle_time - (time.monotonic() - started)
                if left <= 0:
                    return None
                wait = max(1, min(wait, math.ceil(left)))
            result = super().dequeue_job_and_maintain_ttl(wait, wait)
            if result is not None:
                return self._took(result)
            if self._stop_requested:
                return None
            self._wait_for_webui()

    # ------------------------------------------------------------------ stopping
    def request_stop(self, signum: Any, frame: Any) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            # The running job hands itself back after its current stage instead of running to its end.
            with contextlib.suppress(redis.RedisError):
                self.connection.set(stop_key(self.name), "1", ex=24 * 3600)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        """RQ's unsubscribe, without its stall of up to a minute at shutdown.

        rq 2.12 sends UNSUBSCRIBE first and then stops its pubsub thread with redis-py's ``stop()``, which
        (redis-py 8) waits for the thread to end. When the reply reaches the thread before its run flag is
        cleared, the thread starts another ``get_message`` of ``sleep_time`` (60 s) and the worker hangs
        that long after "unsubscribing" on SIGTERM. Clearing the flag first (``stop(timeout=0)``) lets the
        reply end the read in progress, and the thread then exits at once.
        """
        thread = self.pubsub_thread
        if not thread:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        thread.stop(timeout=0)  # no new read starts; the one in progress ends with the reply below
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.unsubscribe()
        thread.join(timeout=2)
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()

    def teardown(self) -> None:
        if self._registration_stop is not None:
            self._registration_stop.set()
        with contextlib.suppress(redis.RedisError):
            self.connection.delete(stop_key(self.name))
            forget_worker(self.connection, self.name)
        if self._webhooks is not None:  # what is still waiting goes out, each within its deadline
            self._webhooks.close(timeout=self._settings().webhook_deadline + 1)
            self._webhooks = None
        super().teardown()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ hand-backs
    def perform_job(self, job: Job, queue: Queue) -> bool:
        if isinstance(job, StableNewJob):
            job.hands_back = True  # JobRun may hand it back (raise Requeued) instead of failing it
        token = _running_settings.set(self._settings())
        try:
            return bool(super().perform_job(job, queue))
        finally:
            _running_settings.reset(token)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if _handed_back(job) or _superseded(job):
            self.log.info("Worker %s: job %s handed back: %s", self.name, job.id, exc_info[1])
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if _superseded(job):
            # A later run owns the job and its status: this run only leaves the started registry.
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe)
                pipe.execute()
            return
        if not _handed_back(job):
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
            return
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            hand_back(queue, job, pipe)
            if isinstance(job, StableNewJob):
                job._mirror_state(pipe)
            pipe.execute()


class StableNewWorker(StableNewBaseWorker, Worker):
    """RQ's forking worker with our start-up, breaker, stop and hand-back (see
    :class:`StableNewBaseWorker`): each job runs in a work horse. What a GPU host runs; from plain
    RQ: ``rq worker -w stablenew.jobs.rq_classes.StableNewWorker``."""


class StableNewSimpleWorker(StableNewBaseWorker, SimpleWorker):
    """RQ's ``SimpleWorker`` with the same start-up, breaker, stop and hand-back as
    :class:`StableNewWorker`, running each job in its own process: for tests (it works on fakeredis
    with ``work(burst=True)``) and for hosts where forking is not wanted."""


def _handed_back(job: Job) -> bool:
    """Whether ``job`` ended by :class:`Requeued` (it goes back to its queue, not to failed)."""
    return isinstance(job, StableNewJob) and isinstance(job.ended_by, Requeued)


def _superseded(job: Job) -> bool:
    """Whether this run of ``job`` was fenced off by a later run (which records the job's end)."""
    return isinstance(job, StableNewJob) and isinstance(job.ended_by, Superseded)


def make_worker(
    connection: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    name: str | None = None,
    worker_class: type[BaseWorker] = StableNewWorker,
    settings: Settings | None = None,
) -> BaseWorker:
    """An RQ worker wired for stablenew: JSON serializer, allow-listed Job class, strict priority."""
    rq_queues = [
        Queue(q, connection=connection, serializer=JSONSerializer, job_class=StableNewJob) for q in queues
    ]
    worker = worker_class(
        rq_queues,
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        job_class=StableNewJob,
        maintenance_interval=60,
    )
    if settings is not None and isinstance(worker, StableNewBaseWorker):
        worker.settings = settings
    return worker


__all__ = [
    "MAX_JOB_DATA_BYTES",
    "PAUSED_POLL_SECONDS",
    "PausableQueue",
    "StableNewBaseWorker",
    "StableNewJob",
    "StableNewSimpleWorker",
    "StableNewWorker",
    "make_worker",
    "paused_queues",
    "running_worker_settings",
]
