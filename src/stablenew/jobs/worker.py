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
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from stablenew.errors import (
    Canceled,
    Requeued,
    StableNewError,
    WebUIError,
    WebUITimeout,
    is_transient,
)
from stablenew.jobs.job import StableNewJob
from stablenew.jobs.keys import QUEUES, cancel_key, inventory_key, stop_key
from stablenew.jobs.resilience import (
    WebUIBreaker,
    count_requeue,
    hand_back,
    reclaim_dead_namesake,
    requeue_count,
)
from stablenew.jobs.state import JobState, StateStore
from stablenew.notify import notify
from stablenew.outputs import JobOutputs
from stablenew.pipeline.pipeline_runner import PipelineRunner
from stablenew.pipeline.stage_models import StageExecutionPlan, StageType
from stablenew.recorder import RunRecorder
from stablenew.settings import Settings, redact_url
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
        self.ttl = max(settings.failure_ttl, settings.result_ttl)
        self.store = StateStore(self.connection, ttl=self.ttl)
        self.worker_name = job.worker_name or os.environ.get("STABLENEW_WORKER_NAME") or socket.gethostname()
        self.breaker = WebUIBreaker(
            self.connection, self.worker_name, threshold=settings.webui_failure_threshold
        )

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
            should_yield=self._stop_requested,
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
                    self._run_with_retries(executor, client, plan, recorder)
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
        except Requeued as exc:
            self._hand_back(recorder, str(exc))
            raise
        except Exception as exc:
            if is_transient(exc) and self._can_hand_back() and self._webui_is_down():
                reason = (
                    f"handed back to the queue: the WebUI of worker {self.worker_name} is failing ({exc})"
                )
                self._hand_back(recorder, reason)
                raise Requeued(reason, job_id=self.job.id) from exc
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

    def _run_with_retries(
        self, executor: WebUIExecutor, client: WebUIClient, plan: StageExecutionPlan, recorder: RunRecorder
    ) -> None:
        """Preflight and run the plan; after a transient WebUI error, wait and run it again (up to
        ``stage_retries`` times, backing off), resuming after the stages already finished."""
        runner = PipelineRunner(_CountingExecutor(executor, self.breaker), hooks=recorder)
        retries = 0
        while True:
            try:
                self._preflight(executor, client, plan)
                runner.run(plan)
                return
            except WebUIError as exc:
                if not exc.transient:
                    raise
                self.breaker.record_failure()
                if retries >= self.settings.stage_retries or self.breaker.is_open():
                    raise
                retries += 1
                if isinstance(exc, WebUITimeout) and recorder.current is not None:
                    with contextlib.suppress(WebUIError):
                        client.interrupt()  # it may still be generating what we gave up waiting for
                delay = self.settings.stage_retry_backoff * 2 ** (retries - 1)
                log.warning(
                    "job %s: %s; trying again in %.1f s (retry %d of %d)",
                    self.job.id,
                    exc,
                    delay,
                    retries,
                    self.settings.stage_retries,
                )
                recorder.retrying(exc)
                self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Sleep, but answer a cancel or a stop request at once."""
        deadline = time.monotonic() + seconds
        while True:
            if self._cancel_requested():
                raise Canceled("canceled while waiting to try the WebUI again", job_id=self.job.id)
            if self._stop_requested():
                raise Requeued(
                    "its worker is stopping: handed back while waiting to retry", job_id=self.job.id
                )
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.25))

    def _webui_is_down(self) -> bool:
        """Whether the failure is the WebUI's, not this job's: the breaker is open, or the WebUI does
        not even answer a probe now (then the breaker is opened, so that the worker pauses)."""
        if self.breaker.is_open():
            return True
        try:
            _probe(self.settings)
        except WebUIError:
            self.breaker.trip()
            return True
        return False

    def _can_hand_back(self) -> bool:
        """Only :class:`StableNewWorker` puts a job back without using a retry (under plain RQ's
        worker a hand-back would be an ordinary failure), and only ``max_requeues`` times a job."""
        if not getattr(self.job, "_stablenew_hands_back", False):
            return False
        return requeue_count(self.connection, self.job.id) < self.settings.max_requeues

    def _hand_back(self, recorder: RunRecorder, reason: str) -> None:
        """Record the job as queued again; :class:`StableNewWorker` puts it back at the front of its
        queue without using up a retry (a plain RQ worker retries or fails it as usual)."""
        count_requeue(self.connection, self.job.id, ttl=self.ttl)
        recorder.requeued(reason)
        self.job._stablenew_requeue = reason  # type: ignore[attr-defined]
        log.warning("job %s: %s", self.job.id, reason)

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

    def _stop_requested(self) -> bool:
        return bool(self.connection.exists(stop_key(self.worker_name)))

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


class _CountingExecutor:
    """Passes stages to the WebUI executor; each stage it answers closes the breaker again."""

    def __init__(self, inner: WebUIExecutor, breaker: WebUIBreaker) -> None:
        self.inner = inner
        self.breaker = breaker

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        result = self.inner.run_stage(stage_type, payload)
        self.breaker.record_success()
        return result


def _is_permanent(exc: BaseException) -> bool:
    """Our own errors say; a ValueError/TypeError/KeyError from our code or data repeats the same
    way on every try; anything else (Redis or disk trouble, RQ's job timeout) may pass."""
    if isinstance(exc, StableNewError):
        return not is_transient(exc)
    return isinstance(exc, ValueError | TypeError | LookupError | AttributeError)


# --------------------------------------------------------------------------------------------
# Worker start-up
# --------------------------------------------------------------------------------------------


class StableNewWorker(Worker):
    """RQ's forking worker, plus what a GPU host needs to lose nothing:

    - restarted under the name of a worker that provably died on this host, it starts at once and
      hands that worker's interrupted jobs back to their queues (:func:`reclaim_dead_namesake`);
    - while its WebUI keeps failing (:class:`WebUIBreaker` open) it takes no job, probes the WebUI
      with backoff and resumes when it answers; the job in hand went back to its queue unfailed;
    - told to stop (SIGTERM/SIGINT), it lets the running stage finish, saves it, hands the job back
      to the front of its queue (it resumes after that stage) and exits;
    - a job handed back (:class:`~stablenew.errors.Requeued`) is enqueued again at the front of its
      queue without using up a retry.

    Use it from plain RQ with ``rq worker -w stablenew.jobs.worker.StableNewWorker``.
    """

    settings: Settings
    _probe_delay: float | None = None  # the probe backoff reached, kept until a stage succeeds

    def _settings(self) -> Settings:
        if not hasattr(self, "settings"):
            self.settings = Settings()
        return self.settings

    # ------------------------------------------------------------------ start-up
    def register_birth(self) -> None:
        s = self._settings()
        reclaim_dead_namesake(self, max_requeues=s.max_requeues, ttl=max(s.failure_ttl, s.result_ttl))
        super().register_birth()  # type: ignore[no-untyped-call]  # refuses a live namesake
        self.connection.delete(stop_key(self.name))  # a stop left by an earlier, dead life of this name

    # ------------------------------------------------------------------ circuit breaker
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        self._wait_for_webui()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _wait_for_webui(self) -> None:
        """While the breaker is open: no jobs; probe the WebUI with backoff until it answers.

        The backoff carries over from one pause to the next until a stage succeeds: a WebUI out of
        memory still answers the probe but fails every generation, and each failed trial must wait
        longer than the last (not hammer it, nor hand the same job back every few milliseconds)."""
        s = self._settings()
        breaker = WebUIBreaker(self.connection, self.name, threshold=s.webui_failure_threshold)
        if not breaker.seen_since_success():
            self._probe_delay = None  # a stage succeeded: the WebUI works again
        if not breaker.is_open():
            return
        self.log.warning(
            "Worker %s: %d WebUI failures in a row; taking no jobs until %s answers",
            self.name,
            breaker.failures(),
            redact_url(s.webui_url),
        )
        self.set_state(WorkerStatus.SUSPENDED)
        self.procline("WebUI down: probing " + redact_url(s.webui_url))  # type: ignore[no-untyped-call]
        previous = self._probe_delay
        delay = previous or s.webui_probe_interval
        wait_first = previous is not None  # the last trial after an answered probe failed again
        while not self._stop_requested:
            if wait_first:
                self.heartbeat()
                _sleep_unless(lambda: self._stop_requested, delay)
                delay = min(delay * 2, s.webui_probe_max)
                if self._stop_requested:
                    break
            wait_first = True
            self.heartbeat()
            try:
                _probe(s)
            except WebUIError as exc:
                self.log.info(
                    "Worker %s: WebUI still failing (%s); next probe in %.1f s", self.name, exc, delay
                )
                continue
            breaker.half_open()
            self._probe_delay = delay
            self.log.warning("Worker %s: the WebUI answers again; trying one job", self.name)
            return

    # ------------------------------------------------------------------ stopping
    def request_stop(self, signum: Any, frame: Any) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            # The running job hands itself back after its current stage instead of running to its end.
            with contextlib.suppress(redis.RedisError):
                self.connection.set(stop_key(self.name), "1", ex=24 * 3600)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.connection.delete(stop_key(self.name))
        super().teardown()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ hand-backs
    def perform_job(self, job: Job, queue: Queue) -> bool:
        job._stablenew_hands_back = True  # type: ignore[attr-defined]  # JobRun may hand it back
        return bool(super().perform_job(job, queue))

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        reason = getattr(job, "_stablenew_requeue", None)
        if reason is not None:
            self.log.info("Worker %s: job %s handed back: %s", self.name, job.id, reason)
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if getattr(job, "_stablenew_requeue", None) is None:
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
            return
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            hand_back(queue, job, pipe)
            pipe.execute()


def _probe(settings: Settings) -> None:
    """Raises WebUIError unless the WebUI answers its cheapest GET."""
    with WebUIClient(
        settings.webui_url,
        auth=settings.webui_basic_auth,
        connect_timeout=settings.webui_connect_timeout,
        read_timeout=min(settings.webui_read_timeout, 30.0),
    ) as client:
        client.ping()


def _sleep_unless(stop: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))


def make_worker(
    connection: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    name: str | None = None,
    worker_class: type[Worker] = StableNewWorker,
    settings: Settings | None = None,
) -> Worker:
    """An RQ worker wired for stablenew: JSON serializer, allow-listed Job class, strict priority."""
    rq_queues = [
        Queue(q, connection=connection, serializer=JSONSerializer, job_class=StableNewJob) for q in queues
    ]
    worker = worker_class(
        rq_queues,
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        job_class=StableNewJob,
        maintenance_interval=60,
    )
    if settings is not None and isinstance(worker, StableNewWorker):
        worker.settings = settings
    return worker


__all__ = ["JobRun", "StableNewJob", "StableNewWorker", "make_worker", "run_plan"]
