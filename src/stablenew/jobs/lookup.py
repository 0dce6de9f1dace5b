"""Finding a job by the id a user typed: the whole id, or a unique prefix of it.

``watch`` and ``list`` show ids cut short; every command that takes a job id accepts such a prefix,
resolved here and only here (:meth:`Producer.resolve_job_id` calls it). The search is a ``SCAN``
with ``MATCH`` on RQ's job-hash keys: the server filters, nothing but matching keys crosses the
wire, and it stops early once enough candidates are found to call the prefix ambiguous.
"""

from __future__ import annotations

import redis

from stablenew.errors import ConfigError, FieldProblem, JobError, JobNotFound
from stablenew.run import is_valid_job_id

MIN_PREFIX = 8
_JOB_KEY = "rq:job:"
_SCAN_COUNT = 1000
_SHOWN_CANDIDATES = 5


def resolve_job_id(connection: redis.Redis, text: str) -> str:
    """The full id of the job that ``text`` names: an existing id as is, else the one job whose id
    starts with ``text`` (at least :data:`MIN_PREFIX` characters).

    Raises:
        ConfigError: ``text`` is not a valid job id.
        JobNotFound: no job has that id or prefix, or a prefix shorter than the minimum was given.
        JobError: the prefix names several jobs (the message lists some of them).
    """
    if not is_valid_job_id(text):
        raise ConfigError([FieldProblem("job_id", "must match [A-Za-z0-9_-]{1,128}", text)])
    if connection.exists(_JOB_KEY + text):
        return text
    if len(text) < MIN_PREFIX:
        raise JobNotFound(
            f"no job {text!r}: give the whole id, or a prefix of at least {MIN_PREFIX} characters",
            job_id=text,
        )
    found = _matching_ids(connection, text, enough=_SHOWN_CANDIDATES + 1)
    if not found:
        raise JobNotFound(f"no job {text!r} (unknown id, or its result has expired)", job_id=text)
    if len(found) > 1:
        shown = ", ".join(sorted(found)[:_SHOWN_CANDIDATES])
        more = " and more" if len(found) > _SHOWN_CANDIDATES else ""
        raise JobError(
            f"job id prefix {text!r} is ambiguous: it matches {shown}{more}; give more characters",
            job_id=text,
        )
    return found[0]


def _matching_ids(connection: redis.Redis, prefix: str, *, enough: int) -> list[str]:
    """Ids of job hashes starting with ``prefix``, at most ``enough`` of them. ``prefix`` is a valid
    job id, so it holds no glob character."""
    found: list[str] = []
    for key in connection.scan_iter(match=f"{_JOB_KEY}{prefix}*", count=_SCAN_COUNT):
        job_id = (key.decode() if isinstance(key, bytes) else str(key))[len(_JOB_KEY) :]
        if ":" in job_id or job_id in found:  # rq:job:<id>:dependents and the like; SCAN may repeat
            continue
        found.append(job_id)
        if len(found) >= enough:
            break
    return found


__all__ = ["MIN_PREFIX", "resolve_job_id"]
