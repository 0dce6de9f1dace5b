"""What keeps a worker useful when things around it fail: its WebUI, its own process, Redis.

- :class:`WebUIBreaker`: counts one worker's consecutive WebUI failures in Redis (the worker and
  each work horse it forks share the count). Past ``webui_failure_threshold`` the worker stops
  taking jobs and probes its WebUI until it answers, instead of failing the whole queue.
- :func:`hand_back`: puts a job back at the front of its queue without using up one of its RQ
  retries: the job was not at fault (its worker is stopping or died, its WebUI is down).
- :func:`reclaim_dead_namesake`: a worker restarted under the name of one that provably died on
  this host takes over that worker's name and jobs at once, instead of RQ's refusal to start
  ("There exists an active worker named ...") and its ~90 s + maintenance wait before the job
  is seen as abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from stablenew.errors import WebUIError
from stablenew.jobs.affinity import checkpoint_queues
from stablenew.jobs.keys import breaker_key, requeues_key, trial_key
from stablenew.jobs.state import StateStore
from stablenew.queues import QUEUES
from stablenew.settings import Settings
from stablenew.webui import WebUIClient

if TYPE_CHECKING:
    from rq.job import Job
    from rq.worker.base import BaseWorker

log = logging.getLogger("stablenew.worker")

_BREAKER_TTL_S = 24 * 3600


class WebUIBreaker:
    """Consecutive WebUI failures of one worker, kept in Redis.

    ``record_failure`` after each failed attempt at the WebUI, ``record_success`` after a stage it
    answered; the breaker is open once ``threshold`` failures follow each other. ``half_open`` (after
    a probe got an answer) lets one more job try: a single further failure opens it again.
    """

    def __init__(self, connection: redis.Redis, worker: str, *, threshold: int) -> None:
        self.connection = connection
        self.key = breaker_key(worker)
        self.trial_key = trial_key(worker)
        self.threshold = threshold

    def failures(self) -> int:
        return int(self.connection.get(self.key) or 0)

    def is_open(self) -> bool:
        return self.failures() >= self.threshold

    def record_failure(self) -> int:
        with self.connection.pipeline() as pipe:
            pipe.incr(self.key)
            pipe.expire(self.key, _BREAKER_TTL_S)
            count, _ = pipe.execute()
        return int(count)

    def record_success(self) -> None:
        self.connection.delete(self.key, self.trial_key)

    def seen_since_success(self) -> bool:
        """Whether any failure (or a half-open trial) happened since the last success."""
        return bool(self.connection.exists(self.key))

    def trip(self) -> None:
        """Open the breaker now (the WebUI does not answer at all)."""
        self.connection.set(self.key, self.threshold, ex=_BREAKER_TTL_S)

    def half_open(self) -> None:
        """After an answered probe: one more failure opens the breaker again, and the next run is
        a trial (:meth:`take_trial`)."""
        with self.connection.pipeline() as pipe:
            pipe.set(self.key, self.threshold - 1, ex=_BREAKER_TTL_S)
            pipe.set(self.trial_key, "1", ex=_BREAKER_TTL_S)
            pipe.execute()

    def take_trial(self) -> bool:
        """Whether this run is the first since an answered probe (asked once per run: it consumes
        the mark). A trial run that fails again is suspected of being the problem itself."""
        with self.connection.pipeline() as pipe:
            pipe.exists(self.trial_key)
            pipe.delete(self.trial_key)
            found, _ = pipe.execute()
        return bool(found)


def probe_webui(settings: Settings) -> None:
    """Raises :class:`~stablenew.errors.WebUIError` unless the WebUI answers its cheapest GET."""
    with WebUIClient.from_settings(settings, read_timeout=30.0) as client:
        client.ping()


# The cheapest generation any WebUI can run: it tells "the WebUI generates" from "this job fails".
_TEST_GENERATION = {
    "prompt": "stablenew test generation",
    "width": 64,
    "height": 64,
    "steps": 1,
    "batch_size": 1,
    "n_iter": 1,
    "save_images": False,
    "do_not_save_samples": True,
    "do_not_save_grid": True,
}


def webui_generates(settings: Settings) -> bool:
    """Whether the WebUI answers a tiny txt2img with an image (never raises)."""
    try:
        with WebUIClient.from_settings(settings) as client:
            return bool(client.txt2img(_TEST_GENERATION).images)
    except WebUIError:
        return False


def count_requeue(connection: redis.Redis, job_id: str, *, ttl: int) -> int:
    """Count one more hand-back of ``job_id``; returns the new count."""
    with connection.pipeline() as pipe:
        pipe.incr(requeues_key(job_id))
        pipe.expire(requeues_key(job_id), ttl)
        count, _ = pipe.execute()
    return int(count)


def requeue_count(connection: redis.Redis, job_id: str) -> int:
    return int(connection.get(requeues_key(job_id)) or 0)


def hand_back(queue: Queue, job: Job, pipeline: Any) -> None:
    """Enqueue ``job`` again at the front of ``queue`` (status queued, retries untouched)."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=True)


# --------------------------------------------------------------------------------------------
# A worker restarted under the name of a dead one
# --------------------------------------------------------------------------------------------


def provably_dead(hostname: str | None, pid: int | None) -> bool:
    """Whether the worker process ``pid`` on ``hostname`` is certainly gone.

    Only a worker on this host can be checked. Its pid is dead if no such process exists, if it is
    this very process (a container restarted: the new worker is pid 1 again), or if the pid was
    reused by a process that is not a worker (its command line names neither rq nor stablenew).
    """
    if not hostname or hostname != socket.gethostname() or not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"rq" not in cmdline and b"stablenew" not in cmdline


def reclaim_dead_namesake(worker: BaseWorker, *, max_requeues: int, ttl: int) -> list[str]:
    """Before ``worker`` registers: if no live worker holds its name, hand the jobs a previous worker
    of that name left started back to the front of their queues (they resume after their last
    finished stage). Returns the ids of the jobs handed back.

    The name is free when no worker is registered under it (its record expired), when the one
    registered shut down (a cold shutdown leaves its job started), or when it provably died on this
    host; then that record is marked dead so ``worker`` can register. A worker that may be alive
    keeps its name and jobs: RQ then refuses to start ``worker``, as it should.

    A job handed back more than ``max_requeues`` times (it may be what kills its workers) is left
    to RQ's abandoned-job handling, which uses up its retries and then fails it.
    """
    connection = worker.connection
    raw: dict[bytes, bytes] = connection.hgetall(worker.key)  # type: ignore[assignment]
    data = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    pid = int(data["pid"]) if data.get("pid", "").isdigit() else None
    registered_alive = bool(data) and "death" not in data
    if registered_alive and not provably_dead(data.get("hostname"), pid):
        return []
    if registered_alive:
        log.warning(
            "worker %s: the worker registered under this name (pid %s) is dead; taking over its jobs",
            worker.name,
            pid,
        )
    queue_names = list(
        dict.fromkeys([q for q in data.get("queues", "").split(",") if q] + worker.queue_names())
    )
    # Its jobs may have come from the checkpoint queues of its bands (model-aware dispatch).
    bands = [name for name in queue_names if name in QUEUES]
    queue_names += [name for name in checkpoint_queues(connection, bands) if name not in queue_names]
    handed = _hand_back_started_jobs(worker, queue_names, max_requeues=max_requeues, ttl=ttl)
    if not registered_alive:
        return handed
    release_dead_scheduler_locks(connection, queue_names)
    with connection.pipeline() as pipe:
        pipe.hset(worker.key, "death", "reclaimed")
        pipe.expire(worker.key, 60)
        for name in queue_names:
            pipe.srem(WORKERS_BY_QUEUE_KEY % name, worker.key)
        pipe.srem(REDIS_WORKER_KEYS, worker.key)
        pipe.execute()
    return handed


def _hand_back_started_jobs(
    worker: BaseWorker, queue_names: list[str], *, max_requeues: int, ttl: int
) -> list[str]:
    """Hand back every started job of ``queue_names`` that a worker named like ``worker`` ran."""
    connection = worker.connection
    handed: list[str] = []
    store = StateStore(connection, ttl=ttl)
    for name in queue_names:
        queue = Queue(name, connection=connection, serializer=worker.serializer, job_class=worker.job_class)
        registry = StartedJobRegistry(
            name, connection=connection, serializer=worker.serializer, job_class=worker.job_class
        )
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            execution = Execution(id=execution_id, job_id=job_id, connection=connection)
            with contextlib.suppress(ValueError):  # the execution record may have expired
                execution.refresh()  # type: ignore[no-untyped-call]
            try:
                job = worker.job_class.fetch(job_id, connection=connection, serializer=worker.serializer)
            except NoSuchJobError:
                continue
            if worker.name not in (execution.worker_name, job.worker_name):
                continue
            if job.get_status() != JobStatus.STARTED:
                continue
            if count_requeue(connection, job_id, ttl=ttl) > max_requeues:
                log.warning("job %s: handed back %d times already; left to RQ", job_id, max_requeues)
                continue
            state = store.load(job_id)
            if state is not None:
                state.mark_requeued(f"its worker {worker.name} died; handed back to the queue")
                store.save(state)
            with connection.pipeline() as pipe:
                execution.delete(job, pipe)
                hand_back(queue, job, pipe)
                pipe.execute()
            handed.append(job_id)
            log.warning("job %s: handed back to queue %s after its worker died", job_id, name)
    return handed


def release_dead_scheduler_locks(connection: redis.Redis, queue_names: list[str]) -> list[str]:
    """Release the scheduler locks of ``queue_names`` held by a scheduler that provably died on this
    host (the killed worker's child): otherwise the restarted worker starts no scheduler, and retries
    waiting for their interval sit still, until the lock expires and a maintenance run notices.
    Returns the queues released."""
    released = []
    for name in queue_names:
        lock = SCHEDULER_LOCKING_KEY_TEMPLATE % name
        holder = connection.get(lock)
        if holder is None:
            continue
        raw: dict[bytes, bytes] = connection.hgetall(SCHEDULER_KEY_TEMPLATE % holder.decode())  # type: ignore[assignment,union-attr]
        info = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
        pid = int(info["pid"]) if info.get("pid", "").isdigit() else None
        if provably_dead(info.get("hostname"), pid) and connection.get(lock) == holder:
            connection.delete(lock)
            released.append(name)
            log.info("queue %s: released the scheduler lock of dead scheduler pid %s", name, pid)
    return released
