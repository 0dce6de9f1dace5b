"""The producer side: submit, submit_many, status, cancel, retry, list_jobs.

These functions are the API a GUI or a script calls; the CLI calls the same ones. Nothing is
enqueued unless the config validates and builds a non-empty plan (ADetailer tabs included), and
jobs travel as JSON only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from rq import Queue, Retry
from rq.exceptions import DeserializationError, DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from stablenew.errors import (
    ConfigError,
    FieldProblem,
    InvalidStagePlanError,
    JobError,
    JobNotFound,
    StableNewError,
    WebUIRejected,
)
from stablenew.jobs.job import StableNewJob
from stablenew.jobs.keys import JOB_FUNCTION, QUEUES, cancel_key, is_valid_job_id, state_key
from stablenew.jobs.state import JobState, StateStore
from stablenew.notify import callback_problem
from stablenew.pipeline.config import PipelineConfig
from stablenew.pipeline.pipeline_runner import build_stage_payload
from stablenew.pipeline.stage_models import ADETAILER_NEEDS_GENERATION, StageExecutionPlan, StageType
from stablenew.pipeline.stage_sequencer import StageSequencer
from stablenew.settings import Settings
from stablenew.webui.payloads import validate_stage_payload

_R = TypeVar("_R", bound=BaseRegistry)

ConfigInput = Mapping[str, Any] | PipelineConfig | StageExecutionPlan

_MIN_TIMEOUT_S = 300


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
    position: int | None = None
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


def build_checked_plan(config: ConfigInput, *, source: str | None = None) -> StageExecutionPlan:
    """Validate ``config`` into a plan that is safe to enqueue.

    Raises:
        ConfigError: invalid config, or an ADetailer tab the WebUI would silently drop.
        InvalidStagePlanError: ADetailer without generation, or nothing to run at all.
    """
    try:
        plan = config if isinstance(config, StageExecutionPlan) else StageSequencer().build_plan(config)
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.problems, source=source) from None
        raise
    except InvalidStagePlanError as exc:
        if str(exc) != ADETAILER_NEEDS_GENERATION:
            raise
        where = f"{source}: " if source else ""
        raise InvalidStagePlanError(
            f"{where}adetailer_enabled: {exc} (got adetailer on, txt2img and img2img off)"
        ) from None
    if plan.is_empty():
        raise InvalidStagePlanError(
            f"nothing to run{f' in {source}' if source else ''}: every stage is disabled"
        )
    problems: list[FieldProblem] = []
    for index, stage in enumerate(plan):
        if stage.stage_type is StageType.TXT2IMG and not str(stage.config.get("prompt") or "").strip():
            # A blank prompt is almost always a GUI field left empty: the WebUI would spend the GPU
            # time on an image of nothing in particular.
            prompt = stage.config.get("prompt")
            problems.append(
                FieldProblem("txt2img.prompt", "required, and not blank, for a txt2img stage", prompt)
            )
        try:
            validate_stage_payload(build_stage_payload(stage, None, index=index))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source=source)
    return plan


def estimate_timeout(plan: StageExecutionPlan, *, ceiling: int) -> int:
    """A generous ``job_timeout`` from the plan's work (stages, steps, megapixels, batch)."""
    total = 60.0
    for stage in plan:
        cfg = stage.config
        count = int(cfg.get("batch_size") or 1) * int(cfg.get("n_iter") or 1)
        megapixels = (int(cfg.get("width") or 1024) * int(cfg.get("height") or 1024)) / 1e6
        steps = int(cfg.get("steps") or 30)
        if stage.stage_type is StageType.TXT2IMG and stage.hires_enabled:
            factor = (stage.hires_scale_factor or 2.0) ** 2
            steps += int(stage.hires_second_pass_steps or steps) * int(factor)
        if stage.stage_type is StageType.UPSCALE:
            steps = 30
        total += 60 + count * steps * max(megapixels, 0.25) * 2.0
    return int(min(max(total, _MIN_TIMEOUT_S), ceiling))


class Producer:
    """Submits and inspects jobs on one Redis. Stateless apart from its connection."""

    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings | None = None,
        *,
        preflight: Callable[[StageExecutionPlan], None] | None = None,
    ) -> None:
        """``preflight`` (e.g. :func:`webui_preflight`) checks each plan against a WebUI before
        anything is enqueued; without it, names are checked by the worker that runs the job."""
        self.connection = connection
        self.settings = settings or Settings()
        self.store = StateStore(connection)
        self.preflight = preflight

    def queue(self, name: str) -> Queue:
        if name not in QUEUES:
            raise ConfigError([FieldProblem("queue", f"must be one of {list(QUEUES)}", name)])
        return Queue(name, connection=self.connection, serializer=JSONSerializer, job_class=StableNewJob)

    # ------------------------------------------------------------------ submit
    def _checked(self, config: ConfigInput, source: str | None) -> StageExecutionPlan:
        plan = build_checked_plan(config, source=source)
        url = plan.callback_url
        if url:
            reason = callback_problem(url)
            if reason is None and not self.settings.callback_allowed(url):
                reason = "host is not in STABLENEW_WEBHOOK_ALLOWED_HOSTS"
            if reason is not None:
                raise ConfigError([FieldProblem("callback_url", reason, url)], source=source)
        if self.preflight is not None:
            try:
                self.preflight(plan)
            except WebUIRejected as exc:
                detail = exc.detail.removeprefix(f"{exc.field}: ")
                problem = FieldProblem(
                    exc.field or "<webui>", detail, exc.value, has_value=exc.field is not None
                )
                raise ConfigError([problem], source=source) from None
        return plan

    def _enqueue_args(self, plan: StageExecutionPlan, job_id: str | None) -> dict[str, Any]:
        s = self.settings
        intervals = s.retry_interval_list or [0]
        return {
            "args": (plan.to_json(),),
            "job_id": job_id,
            "timeout": estimate_timeout(plan, ceiling=s.job_timeout_ceiling),
            "result_ttl": s.result_ttl,
            "failure_ttl": s.failure_ttl,
            "retry": Retry(max=s.retry_max, interval=intervals) if s.retry_max > 0 else None,
            "description": "stablenew plan: " + " -> ".join(t.value for t in plan.get_stage_types()),
        }

    def submit(
        self,
        config: ConfigInput,
        *,
        queue: str = "default",
        job_id: str | None = None,
        source: str | None = None,
    ) -> Submission:
        """Validate, plan and enqueue one config. A known ``job_id`` returns the existing job.

        Raises:
            ConfigError / InvalidStagePlanError: nothing was enqueued.
            JobError: ``job_id`` names an existing job that is not a stablenew plan.
            RedisUnavailable: Redis could not be reached.
        """
        _check_job_id(job_id)
        plan = self._checked(config, source)
        q = self.queue(queue)
        if job_id is not None:
            existing = self._existing(job_id)
            if existing is not None:
                return existing
            # An id reused after its job expired: the old run's stage state must not linger.
            self.connection.delete(state_key(job_id), cancel_key(job_id))
        kwargs = self._enqueue_args(plan, job_id)
        # Queue.enqueue spells it job_timeout (prepare_data, used by submit_many, says timeout);
        # an unknown keyword next to args= is silently dropped, leaving RQ's 180 s default.
        kwargs["job_timeout"] = kwargs.pop("timeout")
        try:
            job = q.enqueue(JOB_FUNCTION, unique=job_id is not None, **kwargs)
        except DuplicateJobError:
            found = self._existing(job_id or "")
            if found is None:
                raise
            return found
        return Submission(job_id=job.id, queue=queue, plan=plan)

    def submit_many(
        self, configs: Sequence[ConfigInput], *, queue: str = "default", sources: Sequence[str] | None = None
    ) -> list[Submission]:
        """Validate every config first (all-or-nothing), then enqueue them in one pipeline.

        Raises:
            ConfigError / InvalidStagePlanError: naming which config (by source or index); nothing
                was enqueued.
        """
        plans = []
        for index, config in enumerate(configs):
            source = sources[index] if sources else f"#{index + 1}"
            try:
                plans.append(self._checked(config, source))
            except InvalidStagePlanError as exc:
                raise InvalidStagePlanError(f"config {source}: {exc}") from None
        q = self.queue(queue)
        datas = [Queue.prepare_data(JOB_FUNCTION, **self._enqueue_args(plan, None)) for plan in plans]
        with self.connection.pipeline() as pipe:
            jobs = q.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        return [Submission(job_id=j.id, queue=queue, plan=p) for j, p in zip(jobs, plans, strict=True)]

    def _existing(self, job_id: str) -> Submission | None:
        try:
            job = _fetch_job(self.connection, job_id)
        except NoSuchJobError:
            return None
        try:
            plan = StageExecutionPlan.from_json(job.args[0])
        except (StableNewError, DeserializationError, IndexError, TypeError) as exc:
            reason = str(exc) or type(exc).__name__
            raise JobError(
                f"job {job_id} exists but is not a stablenew plan: {reason}", job_id=job_id
            ) from None
        return Submission(job_id=job_id, queue=job.origin, plan=plan, existing=True)

    # ------------------------------------------------------------------ inspect
    def _fetch(self, job_id: str) -> Job:
        _check_job_id(job_id)
        try:
            return _fetch_job(self.connection, job_id)
        except NoSuchJobError:
            raise JobNotFound(
                f"no job {job_id!r} (unknown id, or its result has expired)", job_id=job_id
            ) from None

    def status(self, job_id: str) -> JobView:
        """RQ status + per-stage state of one job.

        Raises:
            JobNotFound: no such job.
        """
        job = self._fetch(job_id)
        return self._view(job, self.store.load(job_id))

    def _view(self, job: Job, state: JobState | None) -> JobView:
        rq_status = job.get_status(refresh=False)
        status = rq_status.value if isinstance(rq_status, JobStatus) else str(rq_status or "unknown")
        if state is None:
            state = _pending_state(job)
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
        position = None
        if status == "queued":
            position = self.queue(job.origin).get_job_position(job.id) if job.origin in QUEUES else None
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

    def list_jobs(
        self, *, queue: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[JobView]:
        """Recent jobs (newest registries first), optionally one queue and one status."""
        names = [queue] if queue else list(QUEUES)
        ids: list[str] = []
        for name in names:
            q = self.queue(name)
            sources: dict[str, Iterable[str]] = {
                # cleanup=False: reading must not run RQ's maintenance (which would act on
                # abandoned jobs from a GUI host, outside any worker).
                "started": _registry(StartedJobRegistry, q).get_job_ids(cleanup=False),
                "queued": q.get_job_ids(),
                "failed": _registry(FailedJobRegistry, q).get_job_ids(cleanup=False),
                "canceled": _registry(CanceledJobRegistry, q).get_job_ids(cleanup=False),
                "finished": _registry(FinishedJobRegistry, q).get_job_ids(cleanup=False),
            }
            for kind, job_ids in sources.items():
                if status and status != kind:
                    continue
                ids.extend(job_ids)
        ids = list(dict.fromkeys(ids))[: max(limit, 0)]
        jobs = StableNewJob.fetch_many(ids, connection=self.connection, serializer=JSONSerializer)
        states = self.store.load_many(ids)
        return [self._view(job, states.get(job.id)) for job in jobs if job is not None]

    # ------------------------------------------------------------------ control
    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued one at once, a running one cooperatively (the worker interrupts
        the WebUI and ends the job canceled). Returns what happened, in words."""
        job = self._fetch(job_id)
        status = job.get_status()
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            try:
                job.cancel()
            except InvalidJobOperation:
                return "already canceled"
            # A worker may have popped the job already (it is still "queued" until the worker marks
            # it started): the cancel key makes that worker end it canceled before any work.
            self.connection.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)
            state = self.store.load(job_id) or _pending_state(job)
            state.status = "canceled"
            state.error = "canceled before it started"
            for st in state.stages:
                if st.status == "pending":
                    st.status = "canceled"
            self.store.save(state)
            return "canceled (it had not started)"
        if status == JobStatus.STARTED:
            self.connection.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)
            return "cancel requested: the worker will interrupt the WebUI and stop the job"
        return f"nothing to cancel: the job is {status.value if status else 'gone'}"

    def retry(self, job_id: str) -> Submission:
        """Requeue a failed or canceled job; it resumes after its last finished stage."""
        job = self._fetch(job_id)
        status = job.get_status()
        if status not in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
            raise JobError(
                f"job {job_id} is {status.value if status else 'gone'}; only failed, canceled "
                "or stopped jobs can be retried",
                job_id=job_id,
            )
        self.connection.delete(cancel_key(job_id))
        # A fresh budget of automatic retries: a permanent failure zeroed it, or the transient
        # ones used it up, and the rerun deserves the same policy as a new job.
        if self.settings.retry_max > 0:
            job.retries_left = self.settings.retry_max
            job.retry_intervals = self.settings.retry_interval_list or [0]
        if status in (JobStatus.FAILED, JobStatus.STOPPED):  # RQ files stopped jobs as failed too
            _registry(FailedJobRegistry, self.queue(job.origin)).requeue(job)
        else:
            _registry(CanceledJobRegistry, self.queue(job.origin)).remove(job)
            self.queue(job.origin).enqueue_job(job)
        existing = self._existing(job_id)
        assert existing is not None
        return existing


def webui_preflight(settings: Settings) -> Callable[[StageExecutionPlan], None]:
    """A ``preflight`` for :class:`Producer` that asks ``settings.webui_url`` whether it has every
    checkpoint, sampler, scheduler, upscaler and ADetailer model a plan names (one inventory fetch,
    reused for every plan). A missing name becomes a :class:`ConfigError` naming the field; an
    unreachable WebUI raises :class:`~stablenew.errors.WebUIUnavailable`."""
    from stablenew.webui.client import WebUIClient
    from stablenew.webui.executor import WebUIExecutor

    client = WebUIClient(
        settings.webui_url,
        auth=settings.webui_basic_auth,
        connect_timeout=settings.webui_connect_timeout,
        read_timeout=min(settings.webui_read_timeout, 60.0),
    )
    return WebUIExecutor(client).preflight


def _fetch_job(connection: redis.Redis, job_id: str) -> Job:
    """``Job.fetch`` with JSON, and a clear error for a job hash RQ cannot parse.

    Raises:
        NoSuchJobError: no such job.
        JobError: the hash exists but holds fields RQ cannot read (written by something else).
    """
    try:
        # Not StableNewJob.fetch: that one hides an unreadable job from workers, here we report it.
        job = StableNewJob(job_id, connection=connection, serializer=JSONSerializer)
        job.refresh()  # type: ignore[no-untyped-call]
        return job
    except NoSuchJobError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise JobError(
            f"job {job_id} exists but cannot be read ({type(exc).__name__}); it was not written by stablenew",
            job_id=job_id,
        ) from None


def _registry(kind: type[_R], queue: Queue) -> _R:
    """A registry of ``queue`` that reads jobs as StableNewJob, with JSON (never a plain Job)."""
    return kind(queue.name, queue.connection, job_class=StableNewJob, serializer=JSONSerializer)


def _pending_state(job: Job) -> JobState:
    try:
        plan = StageExecutionPlan.from_json(job.args[0])
    except (StableNewError, DeserializationError, IndexError, TypeError, ValueError):
        return JobState(job_id=job.id)
    return JobState.for_plan(job.id, plan)


def _check_job_id(job_id: str | None) -> None:
    if job_id is not None and not is_valid_job_id(job_id):
        raise ConfigError([FieldProblem("job_id", "must match [A-Za-z0-9_-]{1,128}", job_id)])


def _last_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None
