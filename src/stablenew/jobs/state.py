"""Where per-stage job state is stored: :class:`StateStore`, one JSON document per job in Redis.

The state of job ``J`` (a :class:`~stablenew.run.JobState`) is one JSON document at
``stablenew:state:J`` (see :mod:`keys`), written only by the work horse running ``J`` (one writer,
so no lost updates) and read by ``status``. It is never kept only in ``job.meta``: RQ's parent
re-saves a stale meta when a horse dies under Retry. A copy is mirrored into
``job.meta["stablenew"]`` so rq-dashboard shows it (:func:`mirror_to_meta`); that copy is the
job's ``status --json`` as of its last write, never read back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from rq.job import Job

from stablenew.jobs.connection import PatientRetry
from stablenew.jobs.keys import state_key
from stablenew.jobs.views import meta_view
from stablenew.run import JobState, utcnow

# KEYS: owner token, state, job hash; ARGV: token, state JSON, ttl, meta ("" = leave the hash alone).
_FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], 'meta', ARGV[4]) end
return 1
"""


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
        meta: tuple[str, str | bytes] | None = None,
        patience: float = 0.0,
    ) -> bool:
        """Store ``state`` (and ``meta`` = (job hash key, meta field value)) only while ``owner_key``
        still holds ``token``, atomically (one Lua script): False, writing nothing, when a later run
        took the job.

        Redis refusing the write (an ``OOM`` answer at maxmemory, a lost connection) is tried again
        with backoff for up to ``patience`` seconds, unless the connection is patient itself
        (:class:`~stablenew.jobs.connection.PatientRetry`, a worker's): then its budget governs.

        Raises:
            redis.RedisError: Redis kept failing for longer than ``patience``.
        """
        state.updated_at = utcnow()
        keys = [owner_key, state_key(state.job_id), meta[0] if meta else state_key(state.job_id)]
        args: list[Any] = [str(token), state.model_dump_json(), self.ttl, meta[1] if meta else ""]
        if isinstance(self.connection.get_retry(), PatientRetry):
            patience = 0.0  # the connection rides trouble out itself, on one budget for the spell
        deadline = time.monotonic() + patience
        pause = 0.25
        while True:
            try:
                return bool(self._fenced_set(keys=keys, args=args))
            except (redis.OutOfMemoryError, redis.ConnectionError):
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    @property
    def _fenced_set(self) -> Any:
        script = getattr(self, "_script", None)
        if script is None:
            script = self._script = self.connection.register_script(_FENCED_SET)
        return script

    def save(self, state: JobState, *, pipeline: Any = None) -> None:
        """Store ``state`` (on ``pipeline`` when given, to share its round trip)."""
        state.updated_at = utcnow()
        (pipeline or self.connection).set(state_key(state.job_id), state.model_dump_json(), ex=self.ttl)


def mirror_to_meta(job: Job, state: JobState | None, *, pipeline: Any = None) -> None:
    """Write ``job.meta["stablenew"]``, what rq-dashboard shows of the job: its ``status --json``
    (:func:`~stablenew.jobs.views.meta_view`) with ``state`` and the job's RQ status as they are
    now. On ``pipeline`` when given, so that it lands with the write it reflects. Always JSON,
    which also replaces a meta another serializer wrote."""
    key, value = meta_field(job, state)
    (pipeline or job.connection).hset(key, "meta", value)


def meta_field(job: Job, state: JobState | None) -> tuple[str, bytes]:
    """(the job's hash key, its ``meta`` field) with ``job.meta["stablenew"]`` set to the job's
    ``status --json`` view as it is now, encoded as rq's JSONSerializer does."""
    job.meta.pop("unserialized", None)
    job.meta["stablenew"] = meta_view(job, state)
    return job.key, json.dumps(job.meta).encode()
