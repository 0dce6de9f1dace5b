"""The producer side: submit, submit_many, rerun, status, cancel, retry, list_jobs.

These functions are the API a GUI or a script calls; the CLI calls the same ones. Nothing is
enqueued unless the config validates and builds a non-empty plan (ADetailer tabs included, see
:mod:`checks`), and jobs travel as JSON only. What they return lives in :mod:`views`; both
modules' public names stay importable from here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.exceptions import DeserializationError, DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    FailedJobRegistry,
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
from stablenew.jobs._status_change import change_status
from stablenew.jobs.affinity import (
    affinity_queue,
    band_of,
    checkpoint_name,
    checkpoint_served,
    plan_checkpoint,
    register_queue,
)
from stablenew.jobs.checks import ConfigInput, build_checked_plan, estimate_timeout, webui_preflight
from stablenew.jobs.connection import map_redis_errors
from stablenew.jobs.keys import JOB_FUNCTION, cancel_key, config_key, state_key
from stablenew.jobs.listing import JobIndex, JobPage, entry_for, index_jobs
from stablenew.jobs.lookup import resolve_job_id
from stablenew.jobs.rerun import apply_changes, pin_seeds
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.state import StateStore, mirror_to_meta
from stablenew.jobs.views import (
    JobView,
    Submission,
    data_rewritten,
    job_view,
    pending_state,
    queue_positions,
)
from stablenew.pipeline import PipelineConfig, StageExecutionPlan
from stablenew.queues import DEFAULT_QUEUE, QUEUES
from stablenew.run import callback_refusal, is_valid_job_id
from stablenew.settings import Settings

_R = TypeVar("_R", bound=BaseRegistry)


def _same_plan(existing: Submission, plan: StageExecutionPlan) -> Submission:
    """The existing job when it runs ``plan``; a job id never silently stands for another config."""
    if existing.plan.model_dump(mode="json") != plan.model_dump(mode="json"):
        raise JobError(
            f"job {existing.job_id} already exists with a different plan; submitting this config under "
            "that id would keep the old job (use another id, or cancel the old job and wait for it to expire)",
            job_id=existing.job_id,
        )
    return replace(existing, plan=plan)


class Producer:
    """Submits and inspects jobs on one Redis. Stateless apart from its connection.

    Every public method raises :class:`~stablenew.errors.RedisUnavailable` for any Redis error
    (down, timed out, refused credentials, full at maxmemory): nothing from ``redis`` leaks.
    """

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

    @map_redis_errors()
    def queue(self, name: str) -> Queue:
        """The RQ queue ``name``: a band (``high``, ``default``, ``low``) or one of its checkpoint
        queues (``default.ckpt.<slug>``, see :mod:`stablenew.jobs.affinity`)."""
        if band_of(name) is None:
            raise ConfigError([FieldProblem("queue", f"must be one of {list(QUEUES)}", name)])
        return Queue(name, connection=self.connection, serializer=JSONSerializer, job_class=StableNewJob)

    def _target(self, band: str, plan: StageExecutionPlan) -> Queue:
        """The queue a plan of ``band`` goes to: its checkpoint's, else the band's."""
        if band not in QUEUES:
            raise ConfigError([FieldProblem("queue", f"must be one of {list(QUEUES)}", band)])
        return self.queue(affinity_queue(band, plan_checkpoint(plan)))

    # ------------------------------------------------------------------ submit
    def _checked(self, config: ConfigInput, source: str | None, lenient: bool) -> StageExecutionPlan:
        plan = build_checked_plan(config, source=source, lenient=lenient)
        url = plan.callback_url
        if url:
            reason = callback_refusal(self.settings, url)  # checked again when it is sent
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

    def _enqueue_args(
        self, plan: StageExecutionPlan, job_id: str | None, *, reuse: bool = True
    ) -> dict[str, Any]:
        s = self.settings
        intervals = list(s.retry_intervals) or [0]
        return {
            "args": (plan.to_json(),),
            # Absent unless off: run_plan reuses by default, and a job without kwargs runs anywhere.
            "kwargs": {} if reuse else {"reuse": False},
            "job_id": job_id,
            "timeout": estimate_timeout(plan, ceiling=s.job_timeout_ceiling),
            "result_ttl": s.result_ttl,
            "failure_ttl": s.failure_ttl,
            "retry": Retry(max=s.retry_max, interval=intervals) if s.retry_max > 0 else None,
            "description": "stablenew plan: " + " -> ".join(t.value for t in plan.get_stage_types()),
        }

    @map_redis_errors()
    def submit(
        self,
        config: ConfigInput,
        *,
        queue: str = DEFAULT_QUEUE,
        job_id: str | None = None,
        source: str | None = None,
        lenient: bool = False,
        reuse: bool = True,
    ) -> Submission:
        """Validate, plan and enqueue one config.

        A known ``job_id`` with the same plan returns the existing job (submitting twice is safe); with a
        different plan it is an error, never a silent keep of the old job. ``lenient`` turns unknown config
        keys into warnings (:attr:`Submission.warnings`, also logged) instead of errors.

        A stage another job already ran with the same request (same seed, models, inputs) takes
        that job's files instead of running again; ``reuse=False`` runs every stage on the WebUI.
        The config is kept as written, with the job, for :meth:`rerun`.

        Raises:
            ConfigError / InvalidStagePlanError: nothing was enqueued.
            JobError: ``job_id`` names an existing job that is not a stablenew plan, or one whose plan
                differs from this config's.
            RedisUnavailable: Redis could not be reached.
        """
        _check_job_id(job_id)
        plan = self._checked(config, source, lenient)
        return self._enqueue_one(plan, config, queue=queue, job_id=job_id, source=source, reuse=reuse)

    def _enqueue_one(
        self,
        plan: StageExecutionPlan,
        config: ConfigInput,
        *,
        queue: str,
        job_id: str | None,
        source: str | None,
        reuse: bool,
    ) -> Submission:
        q = self._target(queue, plan)
        if job_id is not None:
            existing = self._existing(job_id)
            if existing is not None:
                return _same_plan(existing, plan)
            # An id reused after its job expired: the old run's stage state must not linger.
            self.connection.delete(state_key(job_id), cancel_key(job_id))
        kwargs = self._enqueue_args(plan, job_id, reuse=reuse)
        # Queue.enqueue spells it job_timeout (prepare_data, used by submit_many, says timeout);
        # an unknown keyword next to args= is silently dropped, leaving RQ's 180 s default.
        kwargs["job_timeout"] = kwargs.pop("timeout")
        checkpoint = plan_checkpoint(plan)
        if checkpoint:  # known to the workers before the plan lands on it
            register_queue(self.connection, q.name, checkpoint)
        try:
            job = q.enqueue(JOB_FUNCTION, unique=job_id is not None, **kwargs)
        except DuplicateJobError:
            found = self._existing(job_id or "")
            if found is None:
                raise
            return _same_plan(found, plan)
        with self.connection.pipeline(transaction=False) as pipe:
            index_jobs(pipe, [entry_for(job.id, queue, plan, source)])
            mirror_to_meta(job, None, pipeline=pipe, unless_written=True)  # a worker may have started it
            self._keep_config(pipe, job.id, config)
            pipe.execute()
        return Submission(job_id=job.id, queue=queue, plan=plan)

    def _keep_config(self, connection: Any, job_id: str, config: ConfigInput) -> None:
        """Keep ``config`` as written (JSON) beside the job, for :meth:`rerun`; a plan is not a config."""
        written = _written_config(config)
        if written is not None:
            s = self.settings
            ttl = max(s.result_ttl, s.failure_ttl) + s.job_timeout_ceiling
            connection.set(config_key(job_id), written, ex=ttl)

    @map_redis_errors()
    def rerun(
        self,
        job_id: str,
        changes: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        reuse: bool = True,
    ) -> Submission:
        """A new job from ``job_id``'s config as written, with ``changes`` (dotted key -> value) made
        and the seed ``job_id`` really ran with pinned where its config said -1.

        The stages before the first one a change touches make the same requests as ``job_id``'s, so
        they reuse its files (unless ``reuse=False``): changing an ADetailer setting costs one
        ADetailer stage. ``queue`` defaults to ``job_id``'s queue.

        Raises:
            JobNotFound: no such job.
            JobError: the job's config was not kept (submitted as a plan, or expired).
            ConfigError: a change makes the config invalid (naming the key), nothing was enqueued.
        """
        job = self._fetch(job_id)
        job_id = job.id
        raw = self.connection.get(config_key(job_id))
        if raw is None:
            raise JobError(
                f"job {job_id} has no kept config to rerun (it was submitted as a plan, or its config "
                "expired with its results): submit the config again",
                job_id=job_id,
            )
        config = apply_changes(json.loads(raw), changes or {})
        source = f"rerun of {job_id}"
        plan = pin_seeds(self._checked(config, source, False), self.store.load(job_id))
        return self._enqueue_one(
            plan,
            config,
            queue=queue or band_of(job.origin) or job.origin,
            job_id=None,
            source=source,
            reuse=reuse,
        )

    @map_redis_errors()
    def submit_many(
        self,
        configs: Sequence[ConfigInput],
        *,
        queue: str = DEFAULT_QUEUE,
        sources: Sequence[str] | None = None,
        lenient: bool = False,
        reuse: bool = True,
    ) -> list[Submission]:
        """Validate every config first (all-or-nothing), then enqueue them in one pipeline.

        ``lenient`` as in :meth:`submit`.

        Raises:
            ConfigError / InvalidStagePlanError: naming which config (by source or index); nothing
                was enqueued.
        """
        plans = []
        for index, config in enumerate(configs):
            source = sources[index] if sources else f"#{index + 1}"
            try:
                plans.append(self._checked(config, source, lenient))
            except InvalidStagePlanError as exc:
                raise InvalidStagePlanError(f"config {source}: {exc}") from None
        targets = [self._target(queue, plan) for plan in plans]
        with self.connection.pipeline() as pipe:
            for target, plan in {t.name: (t, p) for t, p in zip(targets, plans, strict=True)}.values():
                checkpoint = plan_checkpoint(plan)
                if checkpoint:  # known to the workers before the plans land on it
                    register_queue(pipe, target.name, checkpoint)
            # One by one in submission order (each on its own queue): a plan's enqueue time is
            # its age, which orders dispatch across a band's queues.
            jobs = [
                target.enqueue_many(
                    [Queue.prepare_data(JOB_FUNCTION, **self._enqueue_args(plan, None, reuse=reuse))],
                    pipeline=pipe,
                )[0]
                for target, plan in zip(targets, plans, strict=True)
            ]
            names = [sources[i] if sources else None for i in range(len(plans))]
            entries = [entry_for(j.id, queue, p, n) for j, p, n in zip(jobs, plans, names, strict=True)]
            index_jobs(pipe, entries)
            for job, config in zip(jobs, configs, strict=True):
                mirror_to_meta(job, None, pipeline=pipe)
                self._keep_config(pipe, job.id, config)
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
        return Submission(job_id=job_id, queue=band_of(job.origin) or job.origin, plan=plan, existing=True)

    # ------------------------------------------------------------------ inspect
    @map_redis_errors()
    def resolve_job_id(self, job_id: str) -> str:
        """The full id of the job ``job_id`` names: the whole id, or a unique prefix of at least
        8 characters (what ``watch`` and ``list`` show). See :func:`lookup.resolve_job_id`.

        Raises:
            JobNotFound: no such job, or a prefix too short to look up.
            JobError: the prefix names several jobs.
        """
        return resolve_job_id(self.connection, job_id)

    def _fetch(self, job_id: str) -> Job:
        job_id = self.resolve_job_id(job_id)
        try:
            return _fetch_job(self.connection, job_id)
        except NoSuchJobError:
            raise JobNotFound(
                f"no job {job_id!r} (unknown id, or its result has expired)", job_id=job_id
            ) from None

    @map_redis_errors()
    def status(self, job_id: str) -> JobView:
        """RQ status + per-stage state of one job (``job_id`` may be a unique prefix, as in
        :meth:`cancel` and :meth:`retry`).

        Raises:
            JobNotFound: no such job.
        """
        job = self._fetch(job_id)
        view = job_view(job, self.store.load(job.id), self.queue)
        if view.status == "queued" and view.checkpoint and view.position is not None:
            served = checkpoint_served(self.connection, view.checkpoint)
            if not served:
                wait = self.settings.affinity_max_wait
                view = dataclasses.replace(
                    view,
                    waiting_for=(
                        f"a worker holding {checkpoint_name(view.checkpoint)} "
                        + (f"(or any worker once it has waited {wait:g} s)" if wait > 0 else "")
                    ).strip(),
                )
        return view

    @map_redis_errors()
    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        grep: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[JobView]:
        """Recent jobs, newest first (by enqueue time, across queues): the views of
        :meth:`list_page`."""
        return self.list_page(
            queue=queue, status=status, since=since, grep=grep, limit=limit, cursor=cursor
        ).views

    @map_redis_errors()
    def list_page(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        grep: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of recent jobs, newest first by enqueue time, across queues.

        ``queue`` and ``status`` select one of each; ``since`` drops jobs enqueued before it;
        ``grep`` keeps jobs whose config source name or a prompt holds that text (any case);
        ``cursor`` is ``next_cursor`` of the previous page. See :mod:`listing` for how it stays
        fast with many jobs.

        Raises:
            ConfigError: an unknown queue, or a cursor that ``list_page`` did not make.
        """
        if queue is not None:
            self.queue(queue)  # refuses an unknown name
        views: list[JobView] = []
        index = JobIndex(self.connection)
        while len(views) < limit:
            ids, cursor = index.page_ids(
                queue=queue, status=status, since=since, grep=grep, limit=limit - len(views), cursor=cursor
            )
            jobs = StableNewJob.fetch_many(ids, connection=self.connection, serializer=JSONSerializer)
            states = self.store.load_many(ids)
            present = [job for job in jobs if job is not None]
            if len(present) < len(ids):  # expired since they were indexed
                index.forget([job_id for job_id, job in zip(ids, jobs, strict=True) if job is None])
            positions = queue_positions(self.connection, present)
            found = [job_view(j, states.get(j.id), self.queue, positions=positions) for j in present]
            views.extend(v for v in found if status is None or v.status == status)
            if cursor is None:
                break
        return JobPage(views=views, next_cursor=cursor)

    # ------------------------------------------------------------------ control
    @map_redis_errors()
    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued one at once, a running one cooperatively (the worker interrupts
        the WebUI and ends the job canceled). Returns what happened, in words.

        Reading the status and canceling are one atomic step (:mod:`_status_change`): of two cancels
        at once, or a cancel racing a retry or a worker taking the job, one sees the other's result.
        """
        job = self._fetch(job_id)
        job_id = job.id

        def cancel_queued(pipe: Pipeline, status: JobStatus) -> None:
            try:
                job.cancel(pipeline=pipe)
            except InvalidJobOperation:  # RQ read the status anew: another cancel came first
                raise redis.WatchError(job.key) from None  # read it again, as a lost WATCH would
            # A worker may have popped the job already (it is still "queued" until the worker marks
            # it started): the cancel key makes that worker end it canceled before any work.
            pipe.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)

        canceled, status = change_status(self.connection, job.key, _CANCELABLE, cancel_queued)
        if canceled:
            state = self.store.load(job_id) or pending_state(job)
            state.status = "canceled"
            state.error = "canceled before it started"
            for st in state.stages:
                if st.status == "pending":
                    st.status = "canceled"
            job.get_status(refresh=True)  # RQ's cancel set it in Redis, not on this object
            with self.connection.pipeline(transaction=False) as pipe:
                self.store.save(state, pipeline=pipe)
                mirror_to_meta(job, state, pipeline=pipe)
                pipe.execute()
            return "canceled (it had not started)"
        if status == JobStatus.CANCELED:
            return "already canceled"
        if status == JobStatus.STARTED:
            self.connection.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_ceiling)
            return "cancel requested: the worker will interrupt the WebUI and stop the job"
        return f"nothing to cancel: the job is {status.value if status else 'gone'}"

    @map_redis_errors()
    def retry(self, job_id: str) -> Submission:
        """Requeue a failed or canceled job; it resumes after its last finished stage.

        Checking the status and requeueing are one atomic step (:mod:`_status_change`): of two
        retries at once, exactly one requeues the job; the other raises JobError "already requeued".

        Raises:
            JobNotFound: no such job.
            JobError: the job is not failed, canceled or stopped (or was just requeued by another caller).
        """
        job = self._fetch(job_id)
        job_id = job.id
        status = job.get_status()
        if status not in _RETRYABLE:
            # A retry that lost the race to another one finds the job queued (or running) already.
            waiting = "already requeued, or yet to run; " if status in _WAITING else ""
            raise JobError(
                f"job {job_id} is {status.value if status else 'gone'}: {waiting}only failed, canceled "
                "or stopped jobs can be retried",
                job_id=job_id,
            )
        self._refuse_or_repair_rewritten(job)
        queue = self.queue(job.origin)
        # A fresh budget of automatic retries: a permanent failure zeroed it, or the transient
        # ones used it up, and the rerun deserves the same policy as a new job.
        if self.settings.retry_max > 0:
            job.retries_left = self.settings.retry_max
            job.retry_intervals = list(self.settings.retry_intervals) or [0]

        def requeue(pipe: Pipeline, status: JobStatus) -> None:
            for kind in (FailedJobRegistry, CanceledJobRegistry):  # RQ files stopped jobs as failed too
                _registry(kind, queue).remove(job, pipeline=pipe)
            pipe.delete(cancel_key(job_id))
            job.started_at = None
            job.ended_at = None
            job._exc_info = ""  # what RQ's own requeue clears
            queue.enqueue_job(job, pipeline=pipe)

        requeued, now = change_status(self.connection, job.key, _RETRYABLE, requeue)
        if not requeued:
            raise JobError(
                f"job {job_id} is already requeued (it is {now.value if now else 'gone'} now): "
                "another retry or cancel came first",
                job_id=job_id,
            )
        existing = self._existing(job_id)
        assert existing is not None
        index_jobs(self.connection, [entry_for(job_id, existing.queue, existing.plan, None)])
        return existing

    def _refuse_or_repair_rewritten(self, job: Job) -> None:
        """Before a retry: a job that a tool without ``-S json`` re-saved (``rq requeue``, say)
        is requeued only if it can run. Its plan (``data``) no longer JSON cannot be recovered;
        only its ``meta`` rewritten, it is written again as JSON from the stage state.

        Raises:
            JobError: the job's data is not JSON; nothing was changed.
        """
        if data_rewritten(job):
            raise JobError(
                f"job {job.id} was rewritten by a tool without -S json; resubmit its config", job_id=job.id
            )
        if isinstance(job, StableNewJob) and job.meta_not_json:
            mirror_to_meta(job, self.store.load(job.id))
            job.meta_not_json = False


_RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})
_CANCELABLE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})
_WAITING = _CANCELABLE | {JobStatus.STARTED}


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
    except (NoSuchJobError, redis.RedisError):
        raise  # absent, or Redis failing (some Redis errors are ValueErrors too: not the hash's fault)
    except (ValueError, TypeError, KeyError) as exc:
        raise JobError(
            f"job {job_id} exists but cannot be read ({type(exc).__name__}); it was not written by stablenew",
            job_id=job_id,
        ) from None


def _written_config(config: ConfigInput) -> str | None:
    """The config as its author wrote it, as JSON (None for a plan, or a config that is not JSON)."""
    if isinstance(config, StageExecutionPlan):
        return None
    doc = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else dict(config)
    try:
        return json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _registry(kind: type[_R], queue: Queue) -> _R:
    """A registry of ``queue`` that reads jobs as StableNewJob, with JSON (never a plain Job)."""
    return kind(queue.name, queue.connection, job_class=StableNewJob, serializer=JSONSerializer)


def _check_job_id(job_id: str | None) -> None:
    if job_id is not None and not is_valid_job_id(job_id):
        raise ConfigError([FieldProblem("job_id", "must match [A-Za-z0-9_-]{1,128}", job_id)])


__all__ = [
    "ConfigInput",
    "JobPage",
    "JobView",
    "Producer",
    "Submission",
    "build_checked_plan",
    "estimate_timeout",
    "webui_preflight",
]
