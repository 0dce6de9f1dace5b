"""Pausing a queue: :class:`PausableQueue`, RQ's queue whose ``dequeue_any`` skips paused queues.

A queue is paused by naming it in a Redis set (:mod:`stablenew.jobs.queue_control` pauses and resumes
it); a paused band pauses its checkpoint queues too. Its public path is :mod:`stablenew.jobs.rq_classes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.job import Job

from stablenew.jobs.affinity import band_of
from stablenew.jobs.keys import PAUSED_QUEUES_KEY

# While a queue is paused a worker blocks at most this long waiting for jobs, so that it notices a
# resume within about a second (RQ's own wait is minutes).
PAUSED_POLL_SECONDS = 1


def paused_queues(connection: redis.Redis) -> set[str]:
    """The names of the paused queues."""
    members: Iterable[bytes | str] = connection.smembers(PAUSED_QUEUES_KEY)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


class PausableQueue(Queue):
    """RQ's queue whose ``dequeue_any`` skips paused queues.

    A job popped from a queue that was paused while the worker waited goes back to the front of
    that queue untouched (RQ has not marked it started yet), so pausing has no race with a worker
    already blocked on the queue.
    """

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: redis.Redis,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        while True:
            paused = paused_queues(connection)
            # a paused band pauses its checkpoint queues too (stablenew.jobs.affinity)
            active = [q for q in queues if q.name not in paused and band_of(q.name) not in paused]
            wait = timeout if not paused or timeout is None else min(timeout, PAUSED_POLL_SECONDS)
            if not active:
                if timeout is None:
                    return None  # a burst worker: nothing it may take
                connection.blpop([f"{PAUSED_QUEUES_KEY}:never"], wait)  # a wait Redis can cut short
                raise DequeueTimeout(wait, "")
            result: tuple[Job, Queue] | None = super().dequeue_any(
                active,
                wait,
                connection=connection,
                job_class=job_class,
                serializer=serializer,
                death_penalty_class=death_penalty_class,
            )
            if result is None:
                return None
            job, queue = result
            paused = paused_queues(connection)
            if queue.name not in paused and band_of(queue.name) not in paused:
                return result
            with connection.pipeline() as pipe:
                pipe.lrem(queue.intermediate_queue_key, 0, job.id)
                pipe.lpush(queue.key, job.id)
                pipe.execute()
