"""The worker side: the one job function, the allow-listed Job class, and worker start-up.

A GPU host runs one worker per WebUI, either as ``stablenew worker`` or as plain RQ::

    rq worker -S json -j stablenew.jobs.worker.StableNewJob --with-scheduler high default low

``run_plan(plan_json)`` never trusts the queue: it re-validates the plan, preflights it against
its WebUI, then runs it through :class:`PipelineRunner` + :class:`WebUIExecutor`, persisting
per-stage state (:mod:`state`) and outputs (:mod:`stablenew.outputs`) as it goes. A rerun of the
same job (Retry after a transient error, a worker that died, ``stablenew retry``) resumes after
the last finished stage whose files are intact.

Error policy: transient errors (WebUI down, timeout, 5xx) are re-raised so RQ's ``Retry`` runs the
job again with backoff; permanent ones (bad plan, rejected by the WebUI, unknown plan version)
zero the job's remaining retries and fail at once. A cancel ends the job *canceled*.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from stablenew.errors import (
    Canceled,
    StableNewError,
    WebUIError,
    is_transient,
)
from stablenew.jobs.job import StableNewJob
from stablenew.jobs.keys import QUEUES, cancel_key, inventory_key
from stablenew.jobs.state import JobState, StateStore
from stablenew.notify import notify
from stablenew.outputs import JobOutputs
from stablenew.pipeline.pipeline_runner import PipelineRunner
from stablenew.pipeline.stage_models import StageExecutionPlan
from stablenew.recorder import RunRecorder
from stablenew.settings import Settings
from stablenew.webui.client import WebUIClient
from stablenew.webui.executor import Inventory, WebUIExecutor

log = logging.getLogger("stablenew.worker")


# --------------------------------------------------------------------------------------------
# The job function
# --------------------------------------------------------------------------------------------


def run_plan(plan_json: str) -> dict[str, Any]:
    """Run one serialized plan on this host's WebUI; return a JSON summary of every stage."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_plan must run inside an RQ job")
    return JobRun(job, Settings()).run(plan_json)


class JobRun:
    """One execution of one job: wires Redis state, cancel and the WebUI to a RunRecorder."""

    def __init__(self, job: Job, settings: Settings) -> None:
        self.job = job
        self.settings = settings
        self.connection: redis.Redis = job.connection
        self.store = StateStore(self.connection, ttl=max(settings.failure_ttl, settings.result_ttl))
        self.worker_name = os.environ.get("STABLENEW_WORKER_NAME") or socket.gethostname()

    def run(self, plan_json: str) -> dict[str, Any]:
        try:
            plan = StageExecutionPlan.from_json(plan_json)
        except StableNewError as exc:
            self._record_unplannable(exc)
            self.job.retries_left = 0
            raise
        recorder = RunRecorder(
            JobOutputs(self.settings.output_dir, self.job.id),
            plan,
            state=self.store.load(self.job.id),
            persist=self._persist,
            should_cancel=self._cancel_requested,
            webui_url=self.settings.webui_url,
            worker=self.worker_name,
        )
        client = WebUIClient(
            self.settings.webui_url,
            auth=self.settings.webui_basic_auth,
            connect_timeout=self.settings.webui_connect_timeout,
            read_timeout=self.settings.webui_read_timeout,
        )
        executor = WebUIExecutor(
            client,
            progress_interval=self.settings.progress_interval,
            on_progress=recorder.on_progress,
            should_cancel=self._cancel_requested,
        )
        try:
            with client:
                try:
                    if self._cancel_requested():
                        raise Canceled("canceled before it started", job_id=self.job.id)
                    self._preflight(executor, client, plan)
                    PipelineRunner(executor, hooks=recorder).run(plan)
                except StableNewError:
                    raise
                except Exception:
                    # Not the WebUI's own error (e.g. RQ's job timeout): it may still be generating.
                    if recorder.current is not None:
                        with contextlib.suppress(WebUIError):
                            client.interrupt()
                    raise
        except Canceled as exc:
            recorder.canceled(exc)
            self.connection.delete(cancel_key(self.job.id))
            self.job.retries_left = 0
            self.job._stablenew_canceled = True  # type: ignore[attr-defined]
            self._notify(plan, recorder.summary())
            raise
        except Exception as exc:
            message = recorder.failed(exc)
            if _is_permanent(exc):
                self.job.retries_left = 0  # retrying cannot help
            if not self.job.retries_left:  # the last attempt: RQ will not run it again
                self._notify(plan, recorder.summary())
            exc.args = (message,)
            raise
        recorder.finished()
        summary = recorder.summary()
        self._notify(plan, summary)
        return summary

    def _notify(self, plan: StageExecutionPlan, summary: dict[str, Any]) -> None:
        """POST the summary to the plan's callback_url, if any. Never fails the job."""
        if not plan.callback_url:
            return
        if not self.settings.callback_allowed(plan.callback_url):
            log.warning("job %s: callback URL refused (bad URL or host not allowed); not sent", self.job.id)
            return
        secret = self.settings.webhook_secret
        try:
            notify(plan.callback_url, summary, secret=secret.get_secret_value() if secret else None)
        except Exception:  # a webhook must never fail the job
            log.exception("job %s: webhook delivery crashed", self.job.id)

    def _record_unplannable(self, exc: StableNewError) -> None:
        state = self.store.load(self.job.id) or JobState(job_id=self.job.id)
        state.status = "failed"
        state.error = f"{type(exc).__name__}: {exc}"
        self._persist(state, False)

    def _preflight(self, executor: WebUIExecutor, client: WebUIClient, plan: StageExecutionPlan) -> None:
        key = inventory_key(self.worker_name, client.base_url)
        from_cache = False
        cached = self.connection.get(key)
        if cached is not None:
            with contextlib.suppress(TypeError, ValueError):
                executor.use_inventory(Inventory(**json.loads(cached)))
                from_cache = True
        try:
            executor.preflight(plan)
        except WebUIError:
            if not from_cache:
                raise
            # The cache may be stale (a model was just added): ask the WebUI itself once.
            executor.use_inventory(None)
            from_cache = False
            executor.preflight(plan)
        inv = executor.inventory
        if inv is not None and not from_cache:
            self.connection.set(key, json.dumps(inv.to_dict()), ex=300)

    def _cancel_requested(self) -> bool:
        return bool(self.connection.exists(cancel_key(self.job.id)))

    def _persist(self, state: JobState, progress_only: bool) -> None:
        if progress_only:
            self.store.save(state)
            return
        # The state key is the source of truth; job.meta gets a read-only copy for rq-dashboard (what
        # Job.save_meta writes), in the same round trip.
        self.job.meta["stablenew"] = state.view()
        with self.connection.pipeline(transaction=False) as pipe:
            self.store.save(state, pipeline=pipe)
            pipe.hset(self.job.key, "meta", self.job.serializer.dumps(self.job.meta))
            pipe.execute()


def _is_permanent(exc: BaseException) -> bool:
    """Our own errors say; a ValueError/TypeError/KeyError from our code or data repeats the same
    way on every try; anything else (Redis or disk trouble, RQ's job timeout) may pass."""
    if isinstance(exc, StableNewError):
        return not is_transient(exc)
    return isinstance(exc, ValueError | TypeError | LookupError | AttributeError)


# --------------------------------------------------------------------------------------------
# Worker start-up
# --------------------------------------------------------------------------------------------


def make_worker(
    connection: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    name: str | None = None,
    worker_class: type[Worker] = Worker,
) -> Worker:
    """An RQ worker wired for stablenew: JSON serializer, allow-listed Job class, strict priority."""
    rq_queues = [
        Queue(q, connection=connection, serializer=JSONSerializer, job_class=StableNewJob) for q in queues
    ]
    return worker_class(
        rq_queues,
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        job_class=StableNewJob,
        maintenance_interval=60,
    )


__all__ = ["JobRun", "StableNewJob", "make_worker", "run_plan"]
