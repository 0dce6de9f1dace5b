"""Keeping a worker registered in Redis while it runs, even through a Redis that restarted empty.

:class:`RegistrationWatch` is a part of :class:`~stablenew.jobs.rq_classes.StableNewBaseWorker`, which
starts the watch once it has registered.
"""

from __future__ import annotations

import os
import threading

import redis
from rq.worker.base import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS


class RegistrationWatch(BaseWorker):
    """A thread of the worker's process that registers it again when Redis forgot it."""

    registration_check_interval: float = 5.0
    _registration_stop: threading.Event | None = None

    def _watch_registration(self) -> None:
        """Keep this worker registered: a Redis that restarted empty (no persistence, or a fail-over
        to an empty replica) forgets every worker, and RQ registers only at start, so the worker
        would vanish from ``stablenew workers`` while it runs. A thread of the worker's process
        (none in its work horses) registers it again when its record is gone."""
        stop = self._registration_stop = threading.Event()
        pid = os.getpid()

        def watch() -> None:
            while not stop.wait(self.registration_check_interval):
                if os.getpid() != pid:
                    return
                try:
                    if not self.connection.sismember(REDIS_WORKER_KEYS, self.key):
                        # A heartbeat since the restart may have left a partial record (no birth):
                        # RQ would take it for a live namesake.
                        self.connection.delete(self.key)
                        BaseWorker.register_birth(self)  # type: ignore[no-untyped-call]
                        self.log.warning(
                            "Worker %s: its record was gone from Redis; registered again", self.name
                        )
                except (redis.RedisError, ValueError) as exc:
                    self.log.info("Worker %s: registration check failed (%s)", self.name, exc)

        threading.Thread(target=watch, name="stablenew-registration", daemon=True).start()
