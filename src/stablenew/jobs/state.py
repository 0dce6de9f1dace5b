"""Where per-stage job state is stored: :class:`StateStore`, one JSON document per job in Redis.

The state of job ``J`` (a :class:`~stablenew.run.JobState`) is one JSON document at
``stablenew:state:J`` (see :mod:`keys`), written only by the work horse running ``J`` (one writer,
so no lost updates) and read by ``status``. It is never kept only in ``job.meta``: RQ's parent
re-saves a stale meta when a horse dies under Retry. A copy is mirrored into
``job.meta["stablenew"]`` so rq-dashboard shows it; that copy is a view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from stablenew.jobs.keys import state_key
from stablenew.run import JobState, utcnow


class StateStore:
    """Reads and writes :class:`JobState` documents in Redis."""

    def __init__(self, connection: redis.Redis, *, ttl: int = 14 * 24 * 3600) -> None:
        self.connection = connection
        self.ttl = ttl

    def load(self, job_id: str) -> JobState | None:
        raw = self.connection.get(state_key(job_id))
        if raw is None:
            return None
        try:
            return JobState.model_validate_json(raw)
        except ValueError:
            return None  # unreadable state is treated as none: the job starts its stages afresh

    def load_many(self, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        raws = self.connection.mget([state_key(j) for j in job_ids])
        found = {}
        for job_id, raw in zip(job_ids, raws, strict=True):
            if raw is not None:
                try:
                    found[job_id] = JobState.model_validate_json(raw)
                except ValueError:
                    continue
        return found

    def save_if_owner(
        self,
        state: JobState,
        owner_key: str,
        token: int,
        *,
        also: Callable[[Any], None] | None = None,
        patience: float = 0.0,
    ) -> bool:
        """Store ``state`` (and what ``also`` adds to the transaction) only while ``owner_key`` still
        holds ``token``, atomically (WATCH): False, writing nothing, when a later run took the job.

        A transaction cut short by Redis itself (an ``OOM`` answer at maxmemory, a lost connection)
        is tried again with backoff for up to ``patience`` seconds while the token is unchanged.

        Raises:
            redis.RedisError: Redis kept failing for longer than ``patience``.
        """
        state.updated_at = utcnow()
        doc = state.model_dump_json()
        deadline = time.monotonic() + patience
        pause = 0.25
        while True:
            try:
                with self.connection.pipeline() as pipe:
                    pipe.watch(owner_key)  # type: ignore[no-untyped-call]
                    current = pipe.get(owner_key)
                    if current is None or int(current) != token:
                        return False
                    pipe.multi()
                    pipe.set(state_key(state.job_id), doc, ex=self.ttl)
                    if also is not None:
                        also(pipe)
                    pipe.execute()
                return True
            except (redis.WatchError, redis.OutOfMemoryError, redis.ConnectionError) as exc:
                # A WatchError also stands for a failure redis-py met while watching: look again.
                if time.monotonic() + pause > deadline and not isinstance(exc, redis.WatchError):
                    raise
                if time.monotonic() + pause > deadline:
                    current = self.connection.get(owner_key)
                    if current is None or int(current) != token:
                        return False
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def save(self, state: JobState, *, pipeline: Any = None) -> None:
        """Store ``state`` (on ``pipeline`` when given, to share its round trip)."""
        state.updated_at = utcnow()
        (pipeline or self.connection).set(state_key(state.job_id), state.model_dump_json(), ex=self.ttl)
