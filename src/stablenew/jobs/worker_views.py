"""What the workers are doing, for ``stablenew workers`` and GUIs: busy, idle, or paused because
their WebUI is failing (the circuit breaker), with their current job and last heartbeat."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Worker
from rq.serializers import JSONSerializer

from stablenew.jobs.affinity import read_held
from stablenew.jobs.connection import map_redis_errors
from stablenew.jobs.resilience import WebUIBreaker
from stablenew.jobs.rq_classes import StableNewJob


@dataclass(frozen=True)
class WorkerView:
    """One registered worker; ``to_dict`` is the ``workers --json`` contract.

    ``state`` is RQ's: ``idle``, ``busy``, ``started``, or ``suspended`` (which our workers also
    use while their WebUI is down and they only probe it). ``webui_failures`` counts the WebUI
    failures in a row since the last stage it answered. ``checkpoint`` is what its WebUI holds
    loaded and ``swaps`` how many times its plans made it load another (model-aware dispatch). ``heartbeat_age_s`` grows past ~60 s only
    for a worker that died without unregistering (its record expires after a few minutes).
    """

    name: str
    state: str
    hostname: str | None
    pid: int | None
    queues: list[str]
    current_job: str | None
    webui_failures: int
    last_heartbeat: str | None
    heartbeat_age_s: float | None
    checkpoint: str | None = None  # what its WebUI holds loaded, as the worker last saw it
    swaps: int = 0  # checkpoint swaps its plans made since it started

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@map_redis_errors()
def list_workers(connection: redis.Redis) -> list[WorkerView]:
    """Every worker registered on this Redis, by name.

    Raises:
        RedisUnavailable: Redis failed.
    """
    now = datetime.now(UTC)
    views = []
    workers = Worker.all(connection=connection, serializer=JSONSerializer, job_class=StableNewJob)
    for worker in sorted(workers, key=lambda w: w.name):
        beat = worker.last_heartbeat
        held = read_held(connection, worker.name)
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        views.append(
            WorkerView(
                name=worker.name,
                state=str(worker.get_state()),
                hostname=worker.hostname,
                pid=worker.pid,
                queues=worker.queue_names(),
                current_job=worker.get_current_job_id(),
                webui_failures=WebUIBreaker(connection, worker.name, threshold=1).failures(),
                last_heartbeat=beat.isoformat() if beat else None,
                heartbeat_age_s=round((now - beat).total_seconds(), 1) if beat else None,
                checkpoint=held.checkpoint,
                swaps=held.swaps,
            )
        )
    return views
