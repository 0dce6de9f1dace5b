"""The jobs RQ holds from before ``list``'s time index existed, found once by walking RQ's queues
and registries (what ``list`` did on every call before the index), read in batches.

Every queue a stablenew job can be on is walked: the bands and the checkpoint queues of model-aware
dispatch, found as the workers find them (:func:`~stablenew.jobs.affinity.checkpoint_queues`). A
job is indexed under its band, as the producer indexes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from stablenew.jobs.affinity import band_of, checkpoint_queues
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.queues import QUEUES

_BATCH = 500
_REGISTRIES = (
    StartedJobRegistry,
    FailedJobRegistry,
    CanceledJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    DeferredJobRegistry,
)


def _stablenew_queues(connection: redis.Redis) -> list[str]:
    """Every queue a stablenew job can be on: the bands, then their checkpoint queues."""
    return [*QUEUES, *checkpoint_queues(connection)]


def existing_ids(connection: redis.Redis) -> list[str]:
    """Every job id in a stablenew queue or one of its registries (without RQ's cleanup: reading
    must not act on abandoned jobs from a GUI host)."""
    ids: list[str] = []
    for name in _stablenew_queues(connection):
        queue = Queue(name, connection=connection, serializer=JSONSerializer, job_class=StableNewJob)
        ids.extend(queue.get_job_ids())
        for kind in _REGISTRIES:
            registry = kind(name, connection, job_class=StableNewJob, serializer=JSONSerializer)
            ids.extend(registry.get_job_ids(cleanup=False))
    return list(dict.fromkeys(ids))


def existing_entries(connection: redis.Redis) -> Iterator[list[tuple[str, str, str, datetime]]]:
    """Index entries of every existing stablenew job with its enqueue time, in batches."""
    ids = existing_ids(connection)
    for start in range(0, len(ids), _BATCH):
        jobs = StableNewJob.fetch_many(
            ids[start : start + _BATCH], connection=connection, serializer=JSONSerializer
        )
        batch = []
        for job in jobs:
            band = band_of(job.origin) if job is not None else None
            if job is None or band is None:
                continue
            when = job.enqueued_at or job.created_at or datetime.now(UTC)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            batch.append((job.id, band, _prompts(job), when))
        yield batch


def _prompts(job: Job) -> str:
    try:
        plan = json.loads(job.args[0])
        prompts = [str(stage["config"].get("prompt") or "") for stage in plan["stages"]]
    except Exception:  # any job RQ can read but that is not a readable plan: no text to search
        return ""
    return "\n".join(dict.fromkeys(p for p in prompts if p))[:2000]


__all__ = ["existing_entries", "existing_ids"]
