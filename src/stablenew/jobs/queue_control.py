"""Queue control: pause and resume a queue, move a queued job, and each queue's counts and ETA.

A paused queue keeps its jobs; workers simply take none from it (:class:`PausableQueue` is the
queue class of :class:`~stablenew.jobs.rq_worker.StableNewWorker`) until it is resumed. The job a
worker is running is never touched. The paused names live in one Redis set
(:data:`~stablenew.jobs.keys.PAUSED_QUEUES_KEY`), so every worker and every API process agree.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from stablenew.errors import ConfigError, FieldProblem, JobError, JobNotFound
from stablenew.jobs.affinity import SEPARATOR, band_of, checkpoint_queues, register_queue
from stablenew.jobs.keys import PAUSED_QUEUES_KEY
from stablenew.jobs.rq_classes import StableNewJob, paused_queues
from stablenew.queues import QUEUES
from stablenew.run import is_valid_job_id

# How many recently finished jobs (newest first, all queues) the ETA's median duration is taken from.
RECENT_JOBS_FOR_ETA = 30


def _check_queue(name: str) -> None:
    if name not in QUEUES:
        raise ConfigError([FieldProblem("queue", f"must be one of {list(QUEUES)}", name)])


def pause_queue(connection: redis.Redis, name: str) -> None:
    """Workers take no more jobs from ``name``; the job they are running carries on."""
    _check_queue(name)
    connection.sadd(PAUSED_QUEUES_KEY, name)


def resume_queue(connection: redis.Redis, name: str) -> None:
    """Workers take jobs from ``name`` again (within about :data:`PAUSED_POLL_SECONDS`)."""
    _check_queue(name)
    connection.srem(PAUSED_QUEUES_KEY, name)


# Atomically: take the job out of its queue's list (fails when a worker took it first), then put
# it at the front or back of the target queue and record the new origin.
_MOVE_SCRIPT = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'origin', ARGV[2])
redis.call('SADD', KEYS[4], KEYS[2])
if ARGV[3] == '1' then redis.call('LPUSH', KEYS[2], ARGV[1]) else redis.call('RPUSH', KEYS[2], ARGV[1]) end
return 1
"""


def move_job(connection: redis.Redis, job_id: str, *, queue: str | None = None, front: bool = False) -> str:
    """Move a queued job to the front of its queue, or to the back (``front=False``) or front of
    another queue. Returns what happened, in words.

    Raises:
        ConfigError: a bad job id or queue name.
        JobNotFound: no such job.
        JobError: the job is not waiting in a queue (a worker took it, or it ended).
    """
    if not is_valid_job_id(job_id):
        raise ConfigError([FieldProblem("job_id", "must match [A-Za-z0-9_-]{1,128}", job_id)])
    job_key = Job.key_for(job_id)
    origin_raw = connection.hget(job_key, "origin")
    if origin_raw is None:
        raise JobNotFound(f"no job {job_id!r} (unknown id, or its result has expired)", job_id=job_id)
    origin = origin_raw.decode(errors="replace") if isinstance(origin_raw, bytes) else str(origin_raw)
    if queue is not None:
        _check_queue(queue)
    if band_of(origin) is None:
        raise JobError(f"job {job_id} is on queue {origin!r}, which stablenew does not manage", job_id=job_id)
    # A plan for a checkpoint moves to the same checkpoint's queue of the band asked for.
    _, sep, slug = origin.partition(SEPARATOR)
    target = (f"{queue}{sep}{slug}" if queue else origin) if sep else (queue or origin)
    checkpoint = checkpoint_queues(connection).get(origin) if sep else None
    if checkpoint and target != origin:  # workers must know the target queue before the plan lands
        register_queue(connection, target, checkpoint)
    source_q, target_q = _queue(connection, origin), _queue(connection, target)
    moved = connection.eval(
        _MOVE_SCRIPT,
        4,
        source_q.key,
        target_q.key,
        job_key,
        Queue.redis_queues_keys,
        job_id,
        target,
        "1" if front else "0",
    )
    if not moved:
        raise JobError(
            f"job {job_id} is not waiting in a queue (a worker took it, or it ended)", job_id=job_id
        )
    where = "front" if front else "back"
    return f"moved to the {where} of {target}" if target != origin else f"moved to the {where} of {origin}"


def _queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer, job_class=StableNewJob)


@dataclass(frozen=True)
class QueueView:
    """One queue's counts, whether it is paused, and a drain-time estimate.

    ``eta_s`` estimates when the queue's last waiting job starts: every job waiting in this queue
    and in the queues workers take before it (strict priority: high, default, low) times the
    median duration of recently finished jobs, divided by the live workers that listen on this
    queue. It is ``None`` (with ``eta_note`` saying why) when no job finished recently, no live
    worker listens, or the queue is paused. The jobs already running are not counted.
    ``median_job_s`` is that median (all queues), ``workers`` those live workers.
    """

    name: str
    queued: int
    started: int
    failed: int
    finished: int
    canceled: int
    paused: bool
    workers: int
    median_job_s: float | None
    eta_s: float | None
    eta_note: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_views(connection: redis.Redis) -> list[QueueView]:
    """Every stablenew queue, highest priority first."""
    paused = paused_queues(connection)
    median = median_job_seconds(connection)
    workers = [
        w
        for w in Worker.all(connection=connection, serializer=JSONSerializer, job_class=StableNewJob)
        if str(w.get_state()) != "suspended"
    ]
    views = []
    ahead = 0
    checkpoint_names = list(checkpoint_queues(connection))
    for name in QUEUES:
        q = _queue(connection, name)
        # a band's counts include its checkpoint queues (stablenew.jobs.affinity)
        members = [q] + [_queue(connection, n) for n in checkpoint_names if band_of(n) == name]
        queued = sum(m.count for m in members)
        ahead += queued
        listening = sum(1 for w in workers if name in w.queue_names())
        eta, note = estimate_eta(ahead if queued else 0, median, listening, paused=name in paused)
        views.append(
            QueueView(
                name=name,
                queued=queued,
                started=sum(_zcard(connection, StartedJobRegistry, m) for m in members),
                failed=sum(_zcard(connection, FailedJobRegistry, m) for m in members),
                finished=sum(_zcard(connection, FinishedJobRegistry, m) for m in members),
                canceled=sum(_zcard(connection, CanceledJobRegistry, m) for m in members),
                paused=name in paused,
                workers=listening,
                median_job_s=None if median is None else round(median, 2),
                eta_s=eta,
                eta_note=note,
            )
        )
    return views


def estimate_eta(
    jobs: int, median: float | None, workers: int, *, paused: bool = False
) -> tuple[float | None, str | None]:
    """Seconds until ``jobs`` waiting jobs have started (``jobs x median / workers``), or None and
    why it cannot be told."""
    if jobs == 0:
        return 0.0, None
    if paused:
        return None, "paused"
    if workers == 0:
        return None, "no live worker listens on this queue"
    if median is None:
        return None, "no recently finished job to time"
    return round(jobs * median / workers, 1), None


def _zcard(connection: redis.Redis, kind: Any, q: Queue) -> int:
    # ZCARD, not registry.count: counting must not run RQ's registry clean-up from an API host.
    count: int = connection.zcard(
        kind(q.name, connection, job_class=StableNewJob, serializer=JSONSerializer).key
    )
    return count


def median_job_seconds(connection: redis.Redis, queues: Sequence[str] = QUEUES) -> float | None:
    """The median run time of the most recently finished jobs (all queues), or None if none."""
    ids: list[str] = []
    for name in [*queues, *checkpoint_queues(connection, [q for q in queues if q in QUEUES])]:
        registry = FinishedJobRegistry(name, connection, job_class=StableNewJob, serializer=JSONSerializer)
        ids.extend(registry.get_job_ids(0, RECENT_JOBS_FOR_ETA - 1, desc=True, cleanup=False))
    jobs = StableNewJob.fetch_many(ids, connection=connection, serializer=JSONSerializer)
    durations = sorted(
        (
            (j.ended_at, (j.ended_at - j.started_at).total_seconds())
            for j in jobs
            if j is not None and j.started_at is not None and j.ended_at is not None
        ),
        reverse=True,
    )[:RECENT_JOBS_FOR_ETA]
    if not durations:
        return None
    return float(statistics.median(d for _, d in durations))


__all__ = [
    "QueueView",
    "estimate_eta",
    "median_job_seconds",
    "move_job",
    "pause_queue",
    "paused_queues",
    "queue_views",
    "resume_queue",
]
