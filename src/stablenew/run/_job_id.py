"""Which job ids are safe: a job id names a folder under the output root and a Redis key."""

from __future__ import annotations

import re

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` is 1-128 of ``[A-Za-z0-9_-]`` (so it can never lead out of a folder)."""
    # fullmatch, not match with "$": "$" also matches before a trailing newline ("job\n").
    return isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) is not None
