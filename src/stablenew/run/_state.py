"""The per-stage state of one run of a plan: its schema and its transitions (pure pydantic).

Stage status: ``pending -> running -> finished | failed | canceled``; ``skipped`` for a stage a
resumed job did not need to run again (its outputs were already on disk); ``reused`` for a stage
whose request another job had already run: its files are that job's (hard-linked or copied, sha256
checked), ``reused_from`` names the job and stage, and no WebUI call was made. Where a state is stored
is not this module's business: the worker keeps it in Redis (:mod:`stablenew.jobs.state`),
``stablenew run`` nowhere.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from stablenew.pipeline import StageExecutionPlan

StageStatus = Literal["pending", "running", "finished", "failed", "skipped", "canceled", "reused"]
# A stage whose outputs are on disk and whole: ran here, or taken from another job.
DONE_STATUSES: tuple[StageStatus, ...] = ("finished", "reused")
JobRunStatus = Literal["queued", "running", "finished", "failed", "canceled"]


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


def plan_digest(plan: StageExecutionPlan) -> str:
    """Identifies a plan: a job id reused for another plan never reuses this one's outputs."""
    return hashlib.sha256(plan.to_json().encode("utf-8")).hexdigest()


class OutputRecord(BaseModel):
    path: str
    sha256: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    bytes: int = 0


class ReusedFrom(BaseModel):
    """Where a ``reused`` stage's files came from: a stage of another job with the same stage key."""

    job_id: str
    index: int


class StageState(BaseModel):
    index: int
    type: str
    status: StageStatus = "pending"
    progress: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    attempts: int = 0
    outputs: list[OutputRecord] = Field(default_factory=list)
    error: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    reused_from: ReusedFrom | None = None


class JobState(BaseModel):
    job_id: str
    status: JobRunStatus = "queued"
    stages: list[StageState] = Field(default_factory=list)
    error: str | None = None
    manifest: str | None = None
    runs: int = 0
    plan_sha256: str | None = None
    worker: str | None = None
    updated_at: str = Field(default_factory=utcnow)

    @classmethod
    def for_plan(cls, job_id: str, plan: StageExecutionPlan) -> JobState:
        stages = [StageState(index=i, type=s.stage_type.value) for i, s in enumerate(plan.stages)]
        return cls(job_id=job_id, stages=stages, plan_sha256=plan_digest(plan))

    def matches(self, plan: StageExecutionPlan) -> bool:
        """Whether this state was recorded for exactly ``plan`` (so its outputs may be reused)."""
        return self.plan_sha256 == plan_digest(plan) and len(self.stages) == len(plan.stages)

    def mark_failed(self, message: str) -> None:
        """The job died without recording its end (work horse killed, job abandoned)."""
        for st in self.stages:
            if st.status == "running":
                st.status = "failed"
                st.ended_at = st.ended_at or utcnow()
                st.error = st.error or message
        self.status = "failed"
        self.error = self.error or message

    def mark_requeued(self, reason: str) -> None:
        """The job went back to its queue unfinished (worker stopped or died, WebUI down): a stage
        caught running is failed with ``reason`` and runs again when the job is next taken."""
        for st in self.stages:
            if st.status == "running":
                st.status = "failed"
                st.ended_at = st.ended_at or utcnow()
                st.error = reason
        self.status = "queued"
        self.error = reason
        self.updated_at = utcnow()

    def view(self) -> dict[str, Any]:
        """The public per-stage view (the ``stages`` of ``status --json``)."""
        return {
            "status": self.status,
            "error": self.error,
            "manifest": self.manifest,
            "stages": [
                {
                    "index": s.index,
                    "type": s.type,
                    "status": s.status,
                    "progress": round(s.progress, 4),
                    "started_at": s.started_at,
                    "ended_at": s.ended_at,
                    "attempts": s.attempts,
                    "outputs": [
                        {
                            "path": o.path,
                            "sha256": o.sha256,
                            "width": o.width,
                            "height": o.height,
                            "seed": o.seed,
                        }
                        for o in s.outputs
                    ],
                    "error": s.error,
                    "reused_from": s.reused_from.model_dump() if s.reused_from else None,
                }
                for s in self.stages
            ],
        }
