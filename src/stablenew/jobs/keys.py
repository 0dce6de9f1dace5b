"""Every Redis key, queue name and job-function name stablenew uses, in one place.

RQ owns ``rq:*``; ours are under ``stablenew:``. The state and cancel keys are separate from
RQ's job hash on purpose: RQ's parent process re-saves its stale copy of a job (meta included)
when a work horse dies under Retry, and ``save_meta`` rewrites the whole meta field, so anything
another process writes must not live in ``job.meta``.
"""

from __future__ import annotations

import re

QUEUES = ("high", "default", "low")
JOB_FUNCTION = "stablenew.jobs.worker.run_plan"
ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")

_PREFIX = "stablenew"


def state_key(job_id: str) -> str:
    """Per-stage state of a job (JSON), written only by the work horse running it."""
    return f"{_PREFIX}:state:{job_id}"


def cancel_key(job_id: str) -> str:
    """Set by a producer to ask the worker running ``job_id`` to stop."""
    return f"{_PREFIX}:cancel:{job_id}"


def inventory_key(worker: str, webui_url: str) -> str:
    """One worker's WebUI inventory (models, samplers, upscalers), cached between its jobs.

    Keyed by worker too: workers on different hosts often name their own WebUI by the same URL
    (``http://127.0.0.1:7860``), and one host's models must never vouch for another's.
    """
    return f"{_PREFIX}:inventory:{worker}:{webui_url}"


def breaker_key(worker: str) -> str:
    """One worker's count of consecutive WebUI failures (shared by the worker and its horses)."""
    return f"{_PREFIX}:breaker:{worker}"


def stop_key(worker: str) -> str:
    """Set by a worker told to stop: its running job hands itself back after the current stage."""
    return f"{_PREFIX}:stop:{worker}"


def birth_key(worker: str) -> str:
    """Held while a worker of this name takes over a dead namesake's jobs and registers."""
    return f"{_PREFIX}:birth:{worker}"


def requeues_key(job_id: str) -> str:
    """How many times a job was handed back to its queue without using up a retry."""
    return f"{_PREFIX}:requeues:{job_id}"


# A set of queue names no worker takes jobs from (see stablenew.jobs.queue_control).
PAUSED_QUEUES_KEY = f"{_PREFIX}:paused-queues"


def is_valid_job_id(job_id: str) -> bool:
    # fullmatch, not match with "$": "$" also matches before a trailing newline ("job\n").
    return isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) is not None
