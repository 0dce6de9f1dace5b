"""One status change of one job, as a single atomic step (WATCH/MULTI on the job's hash).

``retry`` and ``cancel`` read a job's status, decide, then write several keys (registries, the queue list,
the job hash). Done as separate commands, two callers at once both see "failed" and both requeue: the job
is queued twice and two workers run it. Here the decision and the writes form one transaction: the hash is
WATCHed while its status is read, the writes run in MULTI/EXEC, and a caller whose EXEC finds the hash
changed reads the status again; the one who changed it first wins, the other sees the new status.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import redis
from redis.client import Pipeline
from rq.job import JobStatus

_ATTEMPTS = 20  # a WATCH lost only to writes that left the status as it was (meta, heartbeat) retries


def change_status(
    connection: redis.Redis,
    job_key: str,
    allowed: Collection[JobStatus],
    apply: Callable[[Pipeline, JobStatus], None],
) -> tuple[bool, JobStatus | None]:
    """Run ``apply(pipeline, status)`` atomically if the job's status is in ``allowed``.

    Returns ``(True, status it had)`` when the writes ``apply`` queued on the pipeline were applied, else
    ``(False, status it has)`` (``None``: the job is gone or has no status). Nothing ``apply`` queues may
    read through the pipeline (it is in MULTI); reads through other connections are fine.
    """
    status: JobStatus | None = None
    for _ in range(_ATTEMPTS):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(job_key)  # type: ignore[no-untyped-call]
                status = _status(pipe.hget(job_key, "status"))
                if status not in allowed:
                    return False, status
                assert status is not None
                pipe.multi()
                apply(pipe, status)
                pipe.execute()
                return True, status
            except redis.WatchError:
                continue
    return False, status


def _status(raw: bytes | str | None) -> JobStatus | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return JobStatus(text)
    except ValueError:
        return None
