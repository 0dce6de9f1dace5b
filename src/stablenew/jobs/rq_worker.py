"""The RQ worker class a GPU host runs (:class:`StableNewWorker`) and its start-up (:func:`make_worker`).

``stablenew worker`` builds it with :func:`make_worker`; plain RQ uses it with
``rq worker -S json -j stablenew.jobs.worker.StableNewJob -w stablenew.jobs.worker.StableNewWorker``
(both names are re-exported by :mod:`stablenew.jobs.worker`). The job it runs is
:func:`stablenew.jobs.worker.run_plan`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from stablenew.errors import WebUIError
from stablenew.jobs.job import StableNewJob
from stablenew.jobs.keys import QUEUES, birth_key, stop_key
from stablenew.jobs.queue_control import PausableQueue
from stablenew.jobs.resilience import (
    WebUIBreaker,
    hand_back,
    probe_webui,
    provably_dead,
    reclaim_dead_namesake,
)
from stablenew.settings import Settings, redact_url


class StableNewWorker(Worker):
    """RQ's forking worker, plus what a GPU host needs to lose nothing:

    - restarted under the name of a worker that provably died on this host, it starts at once and
      hands that worker's interrupted jobs back to their queues (:func:`reclaim_dead_namesake`);
    - while its WebUI keeps failing (:class:`WebUIBreaker` open) it takes no job, probes the WebUI
      with backoff and resumes when it answers; the job in hand went back to its queue unfailed;
    - told to stop (SIGTERM/SIGINT), it lets the running stage finish, saves it, hands the job back
      to the front of its queue (it resumes after that stage) and exits;
    - a job handed back (:class:`~stablenew.errors.Requeued`) is enqueued again at the front of its
      queue without using up a retry.

    Use it from plain RQ with ``rq worker -w stablenew.jobs.worker.StableNewWorker``.
    """

    settings: Settings
    _probe_delay: float | None = None  # the probe backoff reached, kept until a stage succeeds

    def _settings(self) -> Settings:
        if not hasattr(self, "settings"):
            self.settings = Settings()
        return self.settings

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

    # ------------------------------------------------------------------ circuit breaker
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        self._wait_for_webui()
        # Dequeue through PausableQueue: no job from a paused queue (stablenew.jobs.queue_control).
        # Set here, not as the class attribute: RQ checks the given queues' type against it.
        self.queue_class = PausableQueue
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _wait_for_webui(self) -> None:
        """While the breaker is open: no jobs; probe the WebUI with backoff until it answers.

        The backoff carries over from one pause to the next until a stage succeeds: a WebUI out of
        memory still answers the probe but fails every generation, and each failed trial must wait
        longer than the last (not hammer it, nor hand the same job back every few milliseconds)."""
        s = self._settings()
        breaker = WebUIBreaker(self.connection, self.name, threshold=s.webui_failure_threshold)
        if not breaker.seen_since_success():
            self._probe_delay = None  # a stage succeeded: the WebUI works again
        if not breaker.is_open():
            return
        self.log.warning(
            "Worker %s: %d WebUI failures in a row; taking no jobs until %s answers",
            self.name,
            breaker.failures(),
            redact_url(s.webui_url),
        )
        self.set_state(WorkerStatus.SUSPENDED)
        self.procline("WebUI down: probing " + redact_url(s.webui_url))  # type: ignore[no-untyped-call]
        previous = self._probe_delay
        delay = previous or s.webui_probe_interval
        wait_first = previous is not None  # the last trial after an answered probe failed again
        while not self._stop_requested:
            if wait_first:
                self.heartbeat()
                _sleep_unless(lambda: self._stop_requested, delay)
                delay = min(delay * 2, s.webui_probe_max)
                if self._stop_requested:
                    break
            wait_first = True
            self.heartbeat()
            try:
                probe_webui(s)
            except WebUIError as exc:
                self.log.info(
                    "Worker %s: WebUI still failing (%s); next probe in %.1f s", self.name, exc, delay
                )
                continue
            breaker.half_open()
            self._probe_delay = delay
            self.log.warning("Worker %s: the WebUI answers again; trying one job", self.name)
            return

    # ------------------------------------------------------------------ stopping
    def request_stop(self, signum: Any, frame: Any) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            # The running job hands itself back after its current stage instead of running to its end.
            with contextlib.suppress(redis.RedisError):
                self.connection.set(stop_key(self.name), "1", ex=24 * 3600)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.connection.delete(stop_key(self.name))
        super().teardown()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ hand-backs
    def perform_job(self, job: Job, queue: Queue) -> bool:
        job._stablenew_hands_back = True  # type: ignore[attr-defined]  # JobRun may hand it back
        return bool(super().perform_job(job, queue))

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        reason = getattr(job, "_stablenew_requeue", None)
        if reason is not None:
            self.log.info("Worker %s: job %s handed back: %s", self.name, job.id, reason)
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if getattr(job, "_stablenew_requeue", None) is None:
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
            return
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            hand_back(queue, job, pipe)
            pipe.execute()


def _sleep_unless(stop: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))


def make_worker(
    connection: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    name: str | None = None,
    worker_class: type[Worker] = StableNewWorker,
    settings: Settings | None = None,
) -> Worker:
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
    if settings is not None and isinstance(worker, StableNewWorker):
        worker.settings = settings
    return worker


__all__ = ["StableNewWorker", "make_worker"]
