"""What the producer hands back: :class:`Submission` from ``submit``, :class:`JobView` from
``status`` and ``list_jobs``, built from an RQ job and its per-stage state by :func:`job_view`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus

from stablenew.errors import StableNewError
from stablenew.jobs.affinity import band_of, checkpoint_queues, plan_checkpoint
from stablenew.pipeline import StageExecutionPlan, StageType
from stablenew.queues import QUEUES
from stablenew.run import JobState, StageState


@dataclass(frozen=True)
class Submission:
    """What ``submit`` returns: the job id, its queue and the plan it will run."""

    job_id: str
    queue: str
    plan: StageExecutionPlan
    existing: bool = False

    @property
    def warnings(self) -> tuple[str, ...]:
        """The unknown config keys a lenient submit let through (never sent), one line each."""
        return tuple(f"ignored {problem}" for problem in self.plan.ignored_keys)

    def to_dict(self) -> dict[str, Any]:
        """The ``submit --json`` contract."""
        return {
            "job_id": self.job_id,
            "queue": self.queue,
            "stages": [t.value for t in self.plan.get_stage_types()],
            "checkpoint": plan_checkpoint(self.plan),
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
    checkpoint: str | None = None  # the checkpoint its plan asks for (None: any)
    waiting_for: str | None = None  # why a queued plan may wait longer than its position says
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
            "checkpoint": self.checkpoint,
            "waiting_for": self.waiting_for,
        }

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "canceled", "stopped")


def job_view(
    job: Job,
    state: JobState | None,
    queue: Callable[[str], Queue],
    *,
    positions: Mapping[str, int | None] | None = None,
) -> JobView:
    """One job as a user sees it: RQ's status reconciled with its stage state (``None`` when no
    worker has recorded any). ``queue`` opens a queue by name, for a queued job's position, unless
    ``positions`` (from :func:`queue_positions`, for many jobs at once) has it."""
    rq_status = job.get_status(refresh=False)
    status = rq_status.value if isinstance(rq_status, JobStatus) else str(rq_status or "unknown")
    stages = _plan_stages(job)  # read once for the checkpoint and, before any state, the stages
    if state is None:
        state = _unstarted_state(job, stages)
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
    rewritten = rewritten_problem(job)
    if rewritten is not None:
        error = rewritten  # what happened to it matters more than how an earlier run ended
    position = None
    if status == "queued":
        position = positions.get(job.id) if positions is not None else queue_position(job, queue)
    return JobView(
        job_id=job.id,
        status=status,
        queue=band_of(job.origin) or job.origin,
        checkpoint=_checkpoint(stages),
        stages=view["stages"],
        error=error,
        manifest=view["manifest"],
        position=position,
        enqueued_at=job.enqueued_at.isoformat() if job.enqueued_at else None,
    )


def meta_view(job: Job, state: JobState | None) -> dict[str, Any]:
    """What ``job.meta["stablenew"]`` holds for rq-dashboard: the job's ``status --json``
    (:func:`job_view`) as of now, without its queue position (which changes without the job
    changing). ``state`` is copied, never changed."""
    copied = state.model_copy(deep=True) if state is not None else None
    view = job_view(job, copied, _no_queue, positions={}).to_dict()
    del view["position"]
    return view


def _no_queue(name: str) -> Queue:
    raise AssertionError("meta_view takes no queue position")  # positions={} answers every job


def rewritten_problem(job: Job) -> str | None:
    """What a tool using another serializer than JSON (``rq ...`` without ``-S json``) did to
    ``job``, in words, or None: its ``data`` (the plan) is no longer JSON, which nothing can undo,
    or only its ``meta`` is, which a worker rewrites as JSON from the stage state when it runs
    the job (and ``stablenew retry`` at once)."""
    if data_rewritten(job):
        return f"job {job.id} was rewritten by a tool without -S json; resubmit its config"
    if getattr(job, "meta_not_json", False):
        return (
            f"job {job.id}: its meta was rewritten by a tool without -S json (not JSON, so not read); "
            "its plan is intact and its meta is written again as JSON when it runs"
        )
    return None


def data_rewritten(job: Job) -> bool:
    """Whether ``job``'s stored ``data`` was re-saved by RQ's default serializer, pickle (what any
    ``rq`` tool or script without ``-S json`` writes). Looks at its first byte only, never
    unpickles: every pickle RQ writes opens with the PROTO opcode, 0x80, which no JSON text does."""
    data = job.__dict__.get("_data")  # RQ's raw field as read; not built from func and args
    return isinstance(data, bytes) and data[:1] == b"\x80"


def queue_position(job: Job, queue: Callable[[str], Queue]) -> int | None:
    """Where a queued job stands: N means N-1 plans will be taken before it (the next is 1).

    See :func:`queue_positions`. ``None`` when the job is not in its queue's list (e.g. scheduled
    or deferred)."""
    if band_of(job.origin) is None:
        return None
    return queue_positions(queue(job.origin).connection, [job]).get(job.id)


def queue_positions(connection: Any, jobs: Sequence[Job]) -> dict[str, int | None]:
    """Where each queued job stands (every job given, queued or not), in a few round trips.

    Workers take ``high`` before ``default`` before ``low``, so every plan waiting in a higher band
    (any of its queues) counts as ahead. Within a band the position is by age, as the workers take
    plans when none holds a checkpoint (or affinity is off): the plans ahead of it on its own queue,
    and the plans submitted before it on the band's other queues. Model-aware dispatch can run a
    plan sooner (a worker that holds its checkpoint takes it before older plans for others), or
    later while no worker holds its checkpoint (``status`` says so).
    """
    known = [job for job in jobs if band_of(job.origin) is not None]
    extra = checkpoint_queues(connection)
    names = list(dict.fromkeys([*QUEUES, *extra, *(job.origin for job in known)]))
    pipe = connection.pipeline(transaction=False)
    for name in names:
        pipe.llen(f"{Queue.redis_queue_namespace_prefix}{name}")
    for job in known:
        pipe.lpos(f"{Queue.redis_queue_namespace_prefix}{job.origin}", job.id)
    for job in known:
        pipe.hget(job.key, "created_at")
    answers = pipe.execute()
    lengths = {name: int(n or 0) for name, n in zip(names, answers[: len(names)], strict=True)}
    indexes = answers[len(names) : len(names) + len(known)]
    created = [_text(c) for c in answers[len(names) + len(known) :]]
    band_totals = {band: 0 for band in QUEUES}
    for name, length in lengths.items():
        band = band_of(name)
        if band is not None:
            band_totals[band] += length
    older = _older_elsewhere(connection, known, created, indexes, lengths)
    found: dict[str, int | None] = {job.id: None for job in jobs}
    for i, (job, index) in enumerate(zip(known, indexes, strict=True)):
        band = band_of(job.origin)
        if index is not None and band is not None:
            ahead = sum(band_totals[name] for name in QUEUES[: QUEUES.index(band)])
            found[job.id] = ahead + int(index) + older.get(i, 0) + 1
    return found


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _older_elsewhere(
    connection: Any,
    jobs: Sequence[Job],
    created: Sequence[str],
    indexes: Sequence[Any],
    lengths: Mapping[str, int],
) -> dict[int, int]:
    """For each queued job (by position in ``jobs``), how many plans on the other queues of its band
    were submitted before it: a binary search on each queue (a queue is in submission order), all
    jobs and queues at once, one pipeline per step."""
    searches: list[list[Any]] = []  # [job index, queue name, lo, hi]
    for i, (job, index) in enumerate(zip(jobs, indexes, strict=True)):
        band = band_of(job.origin)
        if index is None or band is None or not created[i]:
            continue
        for name, length in lengths.items():
            if length and name != job.origin and band_of(name) == band:
                searches.append([i, name, 0, length])
    while True:
        active = [s for s in searches if s[2] < s[3]]
        if not active:
            break
        pipe = connection.pipeline(transaction=False)
        for _, name, lo, hi in active:
            pipe.lindex(f"{Queue.redis_queue_namespace_prefix}{name}", (lo + hi) // 2)
        ids = [_text(i) for i in pipe.execute()]
        pipe = connection.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(f"{Queue.job_class.redis_job_namespace_prefix}{job_id}", "created_at")
        stamps = [_text(c) for c in pipe.execute()]
        for search, stamp in zip(active, stamps, strict=True):
            mid = (search[2] + search[3]) // 2
            if stamp and stamp < created[search[0]]:
                search[2] = mid + 1
            else:
                search[3] = mid
    older: dict[int, int] = {}
    for i, _, lo, _ in searches:
        older[i] = older.get(i, 0) + lo
    return older


def job_checkpoint(job: Job) -> str | None:
    """The checkpoint a job's plan asks for (its first generation stage's ``model``), read from
    the plan's JSON without validating it again; None for none, or a plan that does not read."""
    return _checkpoint(_plan_stages(job))


def _plan_stages(job: Job) -> list[Any] | None:
    """The stages of a job's plan as its JSON holds them, not validated; None when it does not read."""
    try:
        stages = json.loads(job.args[0])["stages"]
    except (DeserializationError, IndexError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return stages if isinstance(stages, list) else None


def _checkpoint(stages: list[Any] | None) -> str | None:
    try:
        for stage in stages or ():
            if stage["stage_type"] in (StageType.TXT2IMG.value, StageType.IMG2IMG.value):
                model = stage.get("config", {}).get("model")
                return str(model) if model else None
    except (KeyError, TypeError, AttributeError):
        return None
    return None


def _unstarted_state(job: Job, stages: list[Any] | None) -> JobState:
    """:func:`pending_state` for a view: the stage types read from the plan's JSON (``stages``)
    without validating the whole plan again (it was at submit; the worker does again), which is most
    of the cost of listing queued jobs. A plan that does not read this way gets the full reading."""
    if stages is None:
        return pending_state(job)
    try:
        types = [StageType(stage["stage_type"]).value for stage in stages]
    except (KeyError, TypeError, ValueError):
        return pending_state(job)
    return JobState(job_id=job.id, stages=[StageState(index=i, type=t) for i, t in enumerate(types)])


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


__all__ = [
    "JobView",
    "Submission",
    "data_rewritten",
    "job_checkpoint",
    "job_view",
    "meta_view",
    "pending_state",
    "queue_position",
    "queue_positions",
    "rewritten_problem",
]
