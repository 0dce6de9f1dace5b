"""The producer side: submit, submit_many, rerun, status, cancel, retry, list_jobs.

These functions are the API a GUI or a script calls; the CLI calls the same ones. Nothing is
enqueued unless the config validates and builds a non-empty plan (ADetailer tabs included, see
:mod:`checks`), and jobs travel as JSON only. What they return lives in :mod:`views`; both
modules' public names stay importable from here. Submit, submit_many and rerun are here; status and
the listing are inherited from :mod:`~stablenew.jobs._inspect`, cancel and retry from
:mod:`~stablenew.jobs._control`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import groupby
from typing import Any

import redis
from rq import Queue, Retry

from stablenew.errors import ConfigError, FieldProblem, InvalidStagePlanError, JobError, WebUIRejected
from stablenew.jobs.affinity import affinity_queue, band_of, plan_checkpoint, register_queue
from stablenew.jobs.checks import ConfigInput, build_checked_plan, estimate_timeout, webui_preflight
from stablenew.jobs.connection import map_redis_errors
from stablenew.jobs.keys import JOB_FUNCTION, cancel_key, config_key, state_key
from stablenew.jobs.listing import JobPage, entry_for, index_jobs
from stablenew.jobs.rerun import apply_changes, pin_seeds
from stablenew.jobs.state import StateStore, mirror_to_meta
from stablenew.jobs.views import JobView, Submission
from stablenew.pipeline import PipelineConfig, StageExecutionPlan
from stablenew.queues import DEFAULT_QUEUE, QUEUES
from stablenew.run import callback_refusal, is_valid_job_id
from stablenew.settings import Settings

from ._control import JobControl

# Tries of a submit under a known id whose job key changes between the look and the write (a
# concurrent submit of the same id is found on the second try).
_ATTEMPTS = 20


def _same_plan(existing: Submission, plan: StageExecutionPlan) -> Submission:
    """The existing job when it runs ``plan``; a job id never silently stands for another config."""
    if existing.plan.model_dump(mode="json") != plan.model_dump(mode="json"):
        raise JobError(
            f"job {existing.job_id} already exists with a different plan; submitting this config under "
            "that id would keep the old job (use another id, or cancel the old job and wait for it to expire)",
            job_id=existing.job_id,
        )
    return replace(existing, plan=plan)


class Producer(JobControl):
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
        """Enqueue ``plan`` in one MULTI/EXEC with everything that goes with it: its checkpoint queue
        made known, the job, its index entry (after it), its dashboard view and its config as
        written. One round trip without ``job_id``.

        With a ``job_id``, the job's hash is WATCHed and read first (two round trips more): a known
        id returns its job, and of two submits of a new id at once, one enqueues and the other's
        transaction fails on the WATCH, so it reads again and finds the first one's job.
        """
        q = self._target(queue, plan)
        kwargs = self._enqueue_args(plan, job_id, reuse=reuse)
        # Queue.enqueue spells it job_timeout (prepare_data, used by submit_many, says timeout);
        # an unknown keyword next to args= is silently dropped, leaving RQ's 180 s default.
        kwargs["job_timeout"] = kwargs.pop("timeout")
        checkpoint = plan_checkpoint(plan)
        written = _written_config(config)
        job_key = q.job_class.key_for(job_id) if job_id is not None else None
        with self.connection.pipeline() as pipe:
            for _ in range(_ATTEMPTS):
                try:
                    if job_key is not None:
                        pipe.watch(job_key)  # type: ignore[no-untyped-call]
                        raw = pipe.hgetall(job_key)
                        if raw:
                            pipe.reset()
                            existing = self._existing(job_id or "", raw)
                            if existing is None:  # a hash RQ does not take for a job (no data)
                                raise JobError(
                                    f"job {job_id} exists but is not a stablenew plan", job_id=job_id
                                )
                            return _same_plan(existing, plan)
                    pipe.multi()
                    if job_id is not None:
                        # An id reused after its job expired: the old run's stage state must not linger.
                        pipe.delete(state_key(job_id), cancel_key(job_id))
                    if checkpoint:  # known to the workers before the plan lands on it
                        register_queue(pipe, q.name, checkpoint)
                    job = q.enqueue(JOB_FUNCTION, pipeline=pipe, **kwargs)
                    index_jobs(pipe, [entry_for(job.id, queue, plan, source)])
                    mirror_to_meta(job, None, pipeline=pipe)
                    self._keep_config(pipe, job.id, written)
                    pipe.execute()
                    return Submission(job_id=job.id, queue=queue, plan=plan)
                except redis.WatchError:
                    continue  # the id was taken (or its job changed) since the WATCH: look again
        raise JobError(
            f"job {job_id} kept changing while it was submitted ({_ATTEMPTS} tries): try again",
            job_id=job_id,
        )

    def _keep_config(self, connection: Any, job_id: str, written: str | None) -> None:
        """Keep the config as written (:func:`_written_config`) beside the job, for :meth:`rerun`."""
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
            # In submission order (each on its own queue; a run of plans for one queue in one call):
            # a plan's enqueue time is its age, which orders dispatch across a band's queues.
            jobs = []
            for target, run in groupby(zip(targets, plans, strict=True), key=lambda pair: pair[0]):
                datas = [
                    Queue.prepare_data(JOB_FUNCTION, **self._enqueue_args(plan, None, reuse=reuse))
                    for _, plan in run
                ]
                jobs += target.enqueue_many(datas, pipeline=pipe)
            names = [sources[i] if sources else None for i in range(len(plans))]
            entries = [entry_for(j.id, queue, p, n) for j, p, n in zip(jobs, plans, names, strict=True)]
            index_jobs(pipe, entries)
            for job, config in zip(jobs, configs, strict=True):
                mirror_to_meta(job, None, pipeline=pipe)
                self._keep_config(pipe, job.id, _written_config(config))
            pipe.execute()
        return [Submission(job_id=j.id, queue=queue, plan=p) for j, p in zip(jobs, plans, strict=True)]


def _written_config(config: ConfigInput) -> str | None:
    """The config as its author wrote it, as JSON (None for a plan, or a config that is not JSON)."""
    if isinstance(config, StageExecutionPlan):
        return None
    doc = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else dict(config)
    try:
        return json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError):
        return None


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
