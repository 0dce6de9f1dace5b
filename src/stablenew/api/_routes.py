"""The ``/v1`` routes: each one calls the producer function the CLI command of the same name calls."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablenew import Producer
from stablenew.errors import ConfigError, FieldProblem
from stablenew.jobs import queue_control
from stablenew.jobs.worker_views import list_workers

from ._auth import require_read, require_write

QueueName = Literal["high", "default", "low"]
JobStatusName = Literal["queued", "started", "finished", "failed", "canceled"]
JobId = Annotated[str, Path(description="a job id, as submit returned it", max_length=128)]

router = APIRouter(prefix="/v1")


class SubmitBody(BaseModel):
    """``POST /v1/jobs``: a config in any shape ``stablenew submit`` reads, and where to queue it."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="a pipeline config (either accepted shape)")
    queue: QueueName = "default"
    id: str | None = Field(None, description="your own job id; submitting it again is a no-op")
    lenient: bool = Field(False, description="passed to the producer when it supports lenient checks")


class RerunBody(BaseModel):
    """``POST /v1/jobs/{id}/rerun``: the job's config as written with ``set`` changed (dotted keys, as
    ``stablenew rerun --set``), its resolved seed pinned; stages it does not change are reused."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, Any] = Field(
        default_factory=dict, description='e.g. {"adetailer_config.adetailer_denoise": 0.5}'
    )
    queue: QueueName | None = Field(None, description="default: the job's own queue")
    reuse: bool = Field(True, description="false runs every stage on the WebUI again")


class MoveBody(BaseModel):
    """``POST /v1/jobs/{id}/move``: ``{"to": "front"}`` of its queue, or ``{"queue": "high"}``
    (the back of that queue; with ``"to": "front"`` its front)."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["front", "back"] | None = None
    queue: QueueName | None = None

    @model_validator(mode="after")
    def _says_where(self) -> MoveBody:
        if self.to is None and self.queue is None:
            raise ValueError('say where: {"to": "front"} or {"queue": "high"}')
        return self


def producer(request: Request) -> Producer:
    found: Producer = request.app.state.producer
    return found


ProducerDep = Annotated[Producer, Depends(producer)]
Read = [Depends(require_read)]
Write = [Depends(require_write)]


def _accepts(func: Any, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


@router.post("/jobs", status_code=201, dependencies=Write)
def submit(body: Annotated[SubmitBody, Body()], p: ProducerDep) -> JSONResponse:
    """Validate, plan and enqueue one config (201; 200 when ``id`` names a job already submitted)."""
    extra: dict[str, Any] = {"lenient": body.lenient} if _accepts(p.submit, "lenient") else {}
    sub = p.submit(body.config, queue=body.queue, job_id=body.id, **extra)
    return JSONResponse(sub.to_dict(), status_code=200 if sub.existing else 201)


@router.get("/jobs", dependencies=Read)
def list_jobs(
    p: ProducerDep,
    status: JobStatusName | None = None,
    queue: QueueName | None = None,
    limit: Annotated[int, Query(ge=0, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Recent jobs, as ``stablenew list --json``."""
    return [v.to_dict() for v in p.list_jobs(queue=queue, status=status, limit=limit)]


@router.get("/jobs/{job_id}", dependencies=Read)
def status(job_id: JobId, p: ProducerDep) -> dict[str, Any]:
    """One job, as ``stablenew status --json``."""
    return p.status(job_id).to_dict()


@router.post("/jobs/{job_id}/cancel", dependencies=Write)
def cancel(job_id: JobId, p: ProducerDep) -> dict[str, Any]:
    """Cancel a queued job, or ask the worker running it to stop."""
    result = p.cancel(job_id)
    return {"job_id": job_id, "result": result, "job": p.status(job_id).to_dict()}


@router.post("/jobs/{job_id}/retry", dependencies=Write)
def retry(job_id: JobId, p: ProducerDep) -> dict[str, Any]:
    """Requeue a failed or canceled job; it resumes after its last finished stage."""
    return p.retry(job_id).to_dict()


@router.post("/jobs/{job_id}/rerun", dependencies=Write, status_code=201)
def rerun(job_id: JobId, body: RerunBody, p: ProducerDep) -> dict[str, Any]:
    """A new job from this job's config with ``set`` changed (the ``submit --json`` body of the new job)."""
    return p.rerun(job_id, body.set, queue=body.queue, reuse=body.reuse).to_dict()


@router.post("/jobs/{job_id}/move", dependencies=Write)
def move(job_id: JobId, body: MoveBody, p: ProducerDep) -> dict[str, Any]:
    """Move a queued job to the front of its queue, or to another queue."""
    p.status(job_id)  # 404 for an unknown id, as every other route
    result = queue_control.move_job(p.connection, job_id, queue=body.queue, front=body.to == "front")
    return {"job_id": job_id, "result": result, "job": p.status(job_id).to_dict()}


@router.get("/workers", dependencies=Read)
def workers(p: ProducerDep) -> list[dict[str, Any]]:
    """The workers, as ``stablenew workers --json``."""
    return [w.to_dict() for w in list_workers(p.connection)]


@router.get("/queues", dependencies=Read)
def queues(p: ProducerDep) -> list[dict[str, Any]]:
    """Each queue's counts, whether it is paused, and an ETA (see ``QueueView``)."""
    return [q.to_dict() for q in queue_control.queue_views(p.connection)]


def _one_queue(p: Producer, name: str) -> dict[str, Any]:
    for view in queue_control.queue_views(p.connection):
        if view.name == name:
            return view.to_dict()
    raise ConfigError([FieldProblem("queue", "no such queue", name)])


@router.post("/queues/{name}/pause", dependencies=Write)
def pause(name: QueueName, p: ProducerDep) -> dict[str, Any]:
    """Workers take no more jobs from this queue; running jobs carry on."""
    queue_control.pause_queue(p.connection, name)
    return _one_queue(p, name)


@router.post("/queues/{name}/resume", dependencies=Write)
def resume(name: QueueName, p: ProducerDep) -> dict[str, Any]:
    """Workers take jobs from this queue again."""
    queue_control.resume_queue(p.connection, name)
    return _one_queue(p, name)
