"""Every Redis key, queue name and job-function name stablenew uses, in one place.

RQ owns ``rq:*``; ours are under ``stablenew:``. The state and cancel keys are separate from
RQ's job hash on purpose: RQ's parent process re-saves its stale copy of a job (meta included)
when a work horse dies under Retry, and ``save_meta`` rewrites the whole meta field, so anything
another process writes must not live in ``job.meta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

JOB_FUNCTION = "stablenew.jobs.job_run.run_plan"
# Every function name a queued job may carry, and the function each one runs. The job function's
# dotted name is stored in each job: a job queued under an earlier name runs the same function.
ALLOWED_FUNCTIONS: Mapping[str, str] = MappingProxyType(
    {
        JOB_FUNCTION: JOB_FUNCTION,
        "stablenew.jobs.worker.run_plan": JOB_FUNCTION,
    }
)

_PREFIX = "stablenew"


def state_key(job_id: str) -> str:
    """Per-stage state of a job (JSON), written only by the work horse running it."""
    return f"{_PREFIX}:state:{job_id}"


def config_key(job_id: str) -> str:
    """The config of a job as it was written (JSON), kept with the job's TTL for ``rerun``."""
    return f"{_PREFIX}:config:{job_id}"


def stage_index_key(stage_key: str) -> str:
    """The finished stage recorded under a stage key (JSON), kept with the results' TTL for reuse."""
    return f"{_PREFIX}:stage:{stage_key}"


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


def trial_key(worker: str) -> str:
    """Set when a worker's probe was answered: the next run on that worker is a trial of the WebUI."""
    return f"{_PREFIX}:trial:{worker}"


def stop_key(worker: str) -> str:
    """Set by a worker told to stop: its running job hands itself back after the current stage."""
    return f"{_PREFIX}:stop:{worker}"


def birth_key(worker: str) -> str:
    """Held while a worker of this name takes over a dead namesake's jobs and registers."""
    return f"{_PREFIX}:birth:{worker}"


def owner_key(job_id: str) -> str:
    """The ownership token of ``job_id``: each run takes a new one (INCR); a run whose token is no
    longer the current one writes nothing more (fencing)."""
    return f"{_PREFIX}:owner:{job_id}"


def webhook_key(job_id: str) -> str:
    """The webhook a run of ``job_id`` left for its worker to send once the job's end is recorded."""
    return f"{_PREFIX}:webhook:{job_id}"


def requeues_key(job_id: str) -> str:
    """How many times a job was handed back to its queue without using up a retry."""
    return f"{_PREFIX}:requeues:{job_id}"


def jobs_index_key(queue: str | None) -> str:
    """Job ids by enqueue time (a sorted set, score in microseconds): all queues, or one."""
    return f"{_PREFIX}:jobs:by-time" + (f":{queue}" if queue else "")


def jobs_text_key() -> str:
    """Per job id, what ``list --grep`` searches: the config's source name and its prompts."""
    return f"{_PREFIX}:jobs:text"


def jobs_indexed_key() -> str:
    """Set once the jobs that predate the time index have been added to it."""
    return f"{_PREFIX}:jobs:indexed"


def jobs_sweep_key() -> str:
    """The enqueue time (score) up to which the sweep of the time index has looked in its current
    pass; absent at the start of a pass."""
    return f"{_PREFIX}:jobs:sweep"


# A set of queue names no worker takes jobs from (see stablenew.jobs.queue_control).
PAUSED_QUEUES_KEY = f"{_PREFIX}:paused-queues"


def affinity_queues_key() -> str:
    """Every checkpoint queue (``<band>.ckpt.<slug>``) a producer created, with its checkpoint: a
    hash, so that workers listening on their bands find the queues created after they started."""
    return f"{_PREFIX}:affinity:queues"


def worker_checkpoint_key(worker: str) -> str:
    """What one worker's WebUI holds: ``checkpoint`` loaded, ``swaps`` made, ``serving`` (the
    checkpoint of the plan in hand)."""
    return f"{_PREFIX}:checkpoint:{worker}"


def affinity_lock_key(queue: str) -> str:
    """Held for a moment by the worker moving a checkpoint queue's due retries onto it."""
    return f"{_PREFIX}:affinity:promote:{queue}"


def worker_models_key(worker: str) -> str:
    """The checkpoint names (lower-cased aliases) one worker's WebUI lists, as JSON, so that the
    others know whether a checkpoint their own WebUI lacks is available anywhere."""
    return f"{_PREFIX}:models:{worker}"
