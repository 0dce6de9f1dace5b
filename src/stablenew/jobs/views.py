"""What the producer hands back: :class:`Submission` from ``submit``, :class:`JobView` from
``status`` and ``list_jobs``, built from an RQ job and its per-stage state by :func:`job_view`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus

from stablenew.errors import StableNewError
from stablenew.jobs.keys import QUEUES
from stablenew.jobs.state import JobState
from stablenew.pipeline.stage_models import StageExecutionPlan


@dataclass(frozen=True)
class Submission:
    """What ``submit`` returns: the job id, its queue and the plan it will run."""

    job_id: str
    queue: str
    plan: StageExecutionPlan
    existing: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``submit --json`` contract."""
        return {
            "job_id": self.job_id,
            "queue": self.queue,
            "stages": [t.value for t in self.plan.get_stage_types()],
        }


@dataclass(frozen=True)
class JobView:
    """What ``status`` returns; ``to_dict`` is the ``status --json`` contract."""

    job_id: str
    status: str
    queue: str | None
    stages: list[dict[str, Any]]
    error: str | None
    manifest: str | None
    position: int | None = None  # 1 = the next job a worker takes; counts higher-priority queues
    enqueued_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "stages": self.stages,
            "error": self.error,
            "manifest": self.manifest,
            "queue": self.queue,
            "position": self.position,
            "enqueued_at": self.enqueued_at,
        }

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "canceled", "stopped")


def job_view(job: Job, state: JobState | None, queue: Callable[[str], Queue]) -> JobView:
    """One job as a user sees it: RQ's status reconciled with its stage state (``None`` when no
    worker has recorded any). ``queue`` opens a queue by name, for a queued job's position."""
    rq_status = job.get_status(refresh=False)
    status = rq_status.value if isinstance(rq_status, JobStatus) else str(rq_status or "unknown")
    if state is None:
        state = pending_state(job)
    if state.status == "canceled" and status in ("finished", "failed"):
        status = "canceled"
    if status in ("failed", "stopped") and state.status in ("running", "queued"):
        # The job died without recording its end (e.g. abandoned after a worker crash).
        result = job.latest_result()
        state.mark_failed(_last_line(result.exc_string if result is not None else None) or status)
    view = state.view()
    if status == "failed":
        for stage in view["stages"]:
            if stage["status"] == "pending":
                stage["status"] = "skipped"  # never ran: an earlier stage failed for good
    error = view["error"]
    if error is None and status == "failed":
        result = job.latest_result()
        error = _last_line(result.exc_string if result is not None else None)
    position = queue_position(job, queue) if status == "queued" else None
    return JobView(
        job_id=job.id,
        status=status,
        queue=job.origin,
        stages=view["stages"],
        error=error,
        manifest=view["manifest"],
        position=position,
        enqueued_at=job.enqueued_at.isoformat() if job.enqueued_at else None,
    )


def queue_position(job: Job, queue: Callable[[str], Queue]) -> int | None:
    """Where a queued job stands: N means N-1 jobs will be taken before it (the next job is 1).

    Workers take ``high`` before ``default`` before ``low``, so every job in a higher-priority queue
    counts as ahead. ``None`` when the job is not in its queue's list (e.g. scheduled or deferred).
    """
    if job.origin not in QUEUES:
        return None
    index = queue(job.origin).get_job_position(job.id)
    if index is None:
        return None
    higher = QUEUES[: QUEUES.index(job.origin)]
    ahead = sum(queue(name).count for name in higher)
    return ahead + index + 1


def pending_state(job: Job) -> JobState:
    """The stage state of a job no worker has touched: every stage of its plan pending (no stages
    if its plan cannot be read)."""
    try:
        plan = StageExecutionPlan.from_json(job.args[0])
    except (StableNewError, DeserializationError, IndexError, TypeError, ValueError):
        return JobState(job_id=job.id)
    return JobState.for_plan(job.id, plan)


def _last_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


__all__ = ["JobView", "Submission", "job_view", "pending_state", "queue_position"]
