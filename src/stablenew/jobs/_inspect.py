"""The producer's reading side: a queue by name, a job by id or prefix, its status, pages of recent jobs.

:class:`JobReader` is the base of :class:`~stablenew.jobs.producer.Producer`, which adds submit and rerun
(and :class:`~stablenew.jobs._control.JobControl` cancel and retry); what these methods return lives in
:mod:`~stablenew.jobs.views` and :mod:`~stablenew.jobs.listing`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from stablenew.errors import ConfigError, FieldProblem, JobError, JobNotFound, StableNewError
from stablenew.jobs.affinity import band_of, checkpoint_name, checkpoint_served
from stablenew.jobs.connection import map_redis_errors
from stablenew.jobs.listing import JobIndex, JobPage
from stablenew.jobs.lookup import resolve_job_id
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.state import StateStore
from stablenew.jobs.views import JobView, Submission, job_view, queue_positions
from stablenew.pipeline import StageExecutionPlan
from stablenew.queues import QUEUES
from stablenew.settings import Settings

_QUEUES_KEPT = 256


class JobReader:
    """Reads jobs on one Redis: the base of :class:`~stablenew.jobs.producer.Producer`, which sets
    ``connection``, ``settings`` and ``store``."""

    connection: redis.Redis
    settings: Settings
    store: StateStore

    @map_redis_errors()
    def queue(self, name: str) -> Queue:
        """The RQ queue ``name``: a band (``high``, ``default``, ``low``) or one of its checkpoint
        queues (``default.ckpt.<slug>``, see :mod:`stablenew.jobs.affinity`). Made once per name
        and kept (a queue object keeps nothing per job; every submit asks for one)."""
        queues: dict[str, Queue] = self.__dict__.setdefault("_queues", {})
        found = queues.get(name)
        if found is None or found.connection is not self.connection:
            if band_of(name) is None:
                raise ConfigError([FieldProblem("queue", f"must be one of {list(QUEUES)}", name)])
            if len(queues) >= _QUEUES_KEPT:  # one per band and checkpoint: a few, unless names churn
                queues.clear()
            found = queues[name] = Queue(
                name, connection=self.connection, serializer=JSONSerializer, job_class=StableNewJob
            )
        return found

    def _existing(self, job_id: str, raw: Mapping[Any, Any] | None = None) -> Submission | None:
        """The job ``job_id`` as a submit finds it (None: no such job); ``raw``: its hash, already read.

        Raises:
            JobError: the job is not a stablenew plan, or cannot be read.
        """
        try:
            job = _fetch_job(self.connection, job_id, raw)
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


def _fetch_job(connection: redis.Redis, job_id: str, raw: Mapping[Any, Any] | None = None) -> Job:
    """``Job.fetch`` with JSON, and a clear error for a job hash RQ cannot parse; ``raw``: the hash,
    when the caller has read it already.

    Raises:
        NoSuchJobError: no such job.
        JobError: the hash exists but holds fields RQ cannot read (written by something else).
    """
    try:
        # Not StableNewJob.fetch: that one hides an unreadable job from workers, here we report it.
        job = StableNewJob(job_id, connection=connection, serializer=JSONSerializer)
        if raw is None:
            job.refresh()  # type: ignore[no-untyped-call]
        elif not raw:
            raise NoSuchJobError(f"No such job: {job.key}")
        else:
            job.restore(raw)
        return job
    except (NoSuchJobError, redis.RedisError):
        raise  # absent, or Redis failing (some Redis errors are ValueErrors too: not the hash's fault)
    except (ValueError, TypeError, KeyError) as exc:
        raise JobError(
            f"job {job_id} exists but cannot be read ({type(exc).__name__}); it was not written by stablenew",
            job_id=job_id,
        ) from None
