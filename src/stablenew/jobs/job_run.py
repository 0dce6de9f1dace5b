"""The job function (:func:`run_plan`) and what one run of a job does (:class:`JobRun`).

A GPU host runs one worker per WebUI (:class:`~stablenew.jobs.rq_classes.StableNewWorker`),
either as ``stablenew worker`` or as plain RQ::

    rq worker -S json -j stablenew.jobs.rq_classes.StableNewJob -w stablenew.jobs.rq_classes.StableNewWorker \
        --with-scheduler high default low

Every job names :data:`~stablenew.jobs.keys.JOB_FUNCTION` (this module's ``run_plan``); a job
queued under the function's earlier name runs the same function (see ``ALLOWED_FUNCTIONS``).

``run_plan(plan_json)`` never trusts the queue: it re-validates the plan, preflights it against
its WebUI, then runs it through :class:`PipelineRunner` + :class:`WebUIExecutor`, persisting
per-stage state (:mod:`state`) and outputs (:class:`~stablenew.run.JobOutputs`) as it goes. A rerun of the
same job (a retry, a worker that died, ``stablenew retry``) resumes after the last finished stage
whose files are intact.

Error policy: a transient WebUI error (down, timeout, 5xx, an answer cut short) is retried within
the run with backoff (``stage_retries``); when those run out the job is handed back to its queue
unfailed if the WebUI itself is down (the breaker is open, or it does not answer a probe), else
re-raised so RQ's ``Retry`` runs it again. A run that is the first since an answered probe (a
trial) and fails transiently again while the WebUI still generates a test image fails for good:
the job is the problem, not the WebUI, and must not hold the queue. Permanent errors (bad plan, rejected by the WebUI,
unknown plan version) zero the job's remaining retries and fail at once. A cancel ends the job
*canceled*; a stopping worker hands its job back after the running stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from typing import Any

import redis
from rq.job import Job

from stablenew.errors import (
    Canceled,
    Requeued,
    StableNewError,
    Superseded,
    WebUIError,
    WebUITimeout,
    is_permanent,
    is_transient,
)
from stablenew.jobs.affinity import record_loaded
from stablenew.jobs.keys import cancel_key, inventory_key, owner_key, stop_key
from stablenew.jobs.resilience import (
    WebUIBreaker,
    count_requeue,
    probe_webui,
    requeue_count,
    webui_generates,
)
from stablenew.jobs.reuse_index import RedisStageIndex
from stablenew.jobs.rq_classes import StableNewJob, running_worker_settings
from stablenew.jobs.state import StateStore, meta_field
from stablenew.pipeline import StageExecutionPlan, StageResult, StageType
from stablenew.run import JobState, PlanRun, RunRecorder
from stablenew.settings import Settings
from stablenew.webui import Inventory, WebUIClient, WebUIExecutor

from ._webhooks import WebhookOutbox, deliver

log = logging.getLogger("stablenew.worker")


# --------------------------------------------------------------------------------------------
# The job function
# --------------------------------------------------------------------------------------------


def run_plan(plan_json: str, reuse: bool = True) -> dict[str, Any]:
    """Run one serialized plan on this host's WebUI; return a JSON summary of every stage.

    ``reuse=False`` (``--no-reuse``) runs every stage on the WebUI even when another job already
    ran the same request; its stages are still recorded for later jobs to reuse."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_plan must run inside an RQ job")
    return JobRun(job, running_worker_settings() or Settings()).run(plan_json, reuse=reuse)


class JobRun:
    """One execution of one job: a :class:`~stablenew.run.PlanRun` whose state, cancel and
    hand-back requests live in Redis, with in-run retries, hand-backs and the webhook around it."""

    def __init__(self, job: Job, settings: Settings) -> None:
        self.job = job
        self.settings = settings
        self.connection: redis.Redis = job.connection
        self.ttl = max(settings.failure_ttl, settings.result_ttl)
        self.store = StateStore(self.connection, ttl=self.ttl)
        self.worker_name = (
            job.worker_name or socket.gethostname()
        )  # RQ names the job's worker when it starts it
        self.breaker = WebUIBreaker(
            self.connection, self.worker_name, threshold=settings.webui_failure_threshold
        )
        self.owner = owner_key(job.id)
        self.token = 0  # this run's ownership token, taken when it starts
        self._executor: WebUIExecutor | None = None

    def run(self, plan_json: str, *, reuse: bool = True) -> dict[str, Any]:
        try:
            return self._run(plan_json, reuse=reuse)
        except Superseded as exc:
            log.warning("job %s: %s; this run stops without writing anything more", self.job.id, exc)
            raise

    def _take_ownership(self) -> None:
        """Take a new ownership token for this run: any earlier run still going is fenced off."""
        with self.connection.pipeline() as pipe:
            pipe.incr(self.owner)
            pipe.expire(self.owner, self.ttl)
            token, _ = pipe.execute()
        self.token = int(token)

    def _check_owner(self) -> None:
        """Raises :class:`Superseded` when a later run of the job took a newer token."""
        current = self.connection.get(self.owner)
        if current is None or int(current) != self.token:
            raise Superseded(
                f"run {self.token} of the job was superseded by run {current and int(current)} "
                f"(worker {self.worker_name} lost the job, frozen or cut off)",
                job_id=self.job.id,
            )

    def _run(self, plan_json: str, *, reuse: bool) -> dict[str, Any]:
        self._take_ownership()
        try:
            plan = StageExecutionPlan.from_json(plan_json)
        except StableNewError as exc:
            self._record_unplannable(exc)
            raise  # permanent: StableNewJob.perform spends no retry on it
        trial = self.breaker.take_trial()  # the first run since an answered probe
        plan_run = PlanRun(
            self.settings,
            plan,
            self.job.id,
            state=self.store.load(self.job.id),
            persist=self._persist,
            should_cancel=self._cancel_requested,
            should_yield=self._stop_requested,
            worker=self.worker_name,
            on_stage_done=self.breaker.record_success,
            check_owner=self._check_owner,
            index=RedisStageIndex(self.connection, ttl=self.ttl, owner=(self.job.id, self.token)),
            reuse=bool(reuse),
            on_answer=self._track_checkpoint,
        )
        self._executor = plan_run.executor
        recorder = plan_run.recorder
        try:
            with plan_run:
                try:
                    if self._cancel_requested():
                        raise Canceled("canceled before it started", job_id=self.job.id)
                    self._run_with_retries(plan_run)
                except StableNewError:
                    raise
                except Exception:
                    # Not the WebUI's own error (e.g. RQ's job timeout): it may still be generating.
                    if recorder.current is not None:
                        with contextlib.suppress(WebUIError):
                            plan_run.executor.interrupt_own()
                    raise
        except Superseded:
            raise
        except Canceled as exc:
            recorder.canceled(exc)
            self.connection.delete(cancel_key(self.job.id))
            self._notify(plan, recorder.summary())
            raise  # StableNewJob ends the job canceled, without a retry
        except Requeued as exc:
            self._hand_back(recorder, str(exc))
            raise
        except Exception as exc:
            if is_transient(exc) and trial and webui_generates(self.settings):
                # Right after an answered probe this job failed again, yet the WebUI generates a
                # test image: the job is the problem (A1111 answers some bad inputs with a 500).
                self.breaker.record_success()
                self.job.retries_left = 0
                exc.args = (
                    f"{exc} (this job failed again right after the WebUI answered a probe, and the "
                    "WebUI still generates a test image: this job is at fault; not tried again)",
                )
                message = recorder.failed(exc)
                self._notify(plan, recorder.summary())
                exc.args = (message,)
                raise
            if is_transient(exc) and self._can_hand_back() and self._webui_is_down():
                reason = (
                    f"handed back to the queue: the WebUI of worker {self.worker_name} is failing ({exc})"
                )
                self._hand_back(recorder, reason)
                raise Requeued(reason, job_id=self.job.id) from exc
            message = recorder.failed(exc)
            if is_permanent(exc) or not self.job.retries_left:  # the last attempt: no retry follows
                self._notify(plan, recorder.summary())
            exc.args = (message,)
            raise
        recorder.finished()
        summary = recorder.summary()
        self._notify(plan, summary)
        return summary

    def _run_with_retries(self, plan_run: PlanRun) -> None:
        """Preflight and run the plan; after a transient WebUI error, wait and run it again (up to
        ``stage_retries`` times, backing off), resuming after the stages already finished."""
        recorder, client = plan_run.recorder, plan_run.client
        retries = 0
        checked_outputs = False
        while True:
            try:
                self._preflight(plan_run.executor, client, plan_run.plan)
                plan_run.run()
                missing = recorder.missing_outputs()
                if not missing:
                    return
                if checked_outputs:
                    raise FileNotFoundError(
                        f"outputs missing on disk after the last stage: {', '.join(missing)}"
                    )
                # Deleted or damaged while the job ran: run again, redoing only the stages concerned.
                log.warning(
                    "job %s: outputs missing on disk (%s); running their stages again", self.job.id, missing
                )
                checked_outputs = True
                recorder.current = None  # the last stage did finish: not to be marked failed
                recorder.retrying(FileNotFoundError(f"outputs missing on disk: {', '.join(missing)}"))
                continue
            except WebUIError as exc:
                if not exc.transient:
                    raise
                self.breaker.record_failure()
                if retries >= self.settings.stage_retries or self.breaker.is_open():
                    raise
                retries += 1
                if isinstance(exc, WebUITimeout) and recorder.current is not None:
                    with contextlib.suppress(WebUIError):
                        # it may still be generating what we gave up waiting for (never another's)
                        plan_run.executor.interrupt_own()
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

    def _track_checkpoint(self, stage_type: StageType, payload: dict[str, Any], result: StageResult) -> None:
        """After a generation, record the checkpoint the WebUI now holds (the one asked for, else the
        one it reports in ``info.sd_model_name``) and count a swap when it changed. Never fails the job."""
        if stage_type not in (StageType.TXT2IMG, StageType.IMG2IMG):
            return
        config = payload.get("config")
        asked = config.get("model") if isinstance(config, dict) else None
        info = result.get("info") if isinstance(result, dict) else None
        reported = info.get("sd_model_name") if isinstance(info, dict) else None
        name = asked or reported
        if not isinstance(name, str) or not name:
            return
        inventory = self._executor.inventory if self._executor is not None else None
        if inventory is not None:  # any alias (file name, model name) -> the title A1111 lists
            name = inventory.checkpoints.get(name.lower(), name)
        try:
            if record_loaded(self.connection, self.worker_name, name):
                log.info(
                    "job %s: worker %s swapped its checkpoint to %s", self.job.id, self.worker_name, name
                )
        except redis.RedisError:
            log.warning("job %s: could not record the checkpoint loaded", self.job.id)

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
            probe_webui(self.settings)
        except WebUIError:
            self.breaker.trip()
            return True
        return False

    def _can_hand_back(self) -> bool:
        """Only :class:`StableNewWorker` puts a job back without using a retry (under plain RQ's
        worker a hand-back would be an ordinary failure), and only ``max_requeues`` times a job."""
        if not (isinstance(self.job, StableNewJob) and self.job.hands_back):
            return False
        return requeue_count(self.connection, self.job.id) < self.settings.max_requeues

    def _hand_back(self, recorder: RunRecorder, reason: str) -> None:
        """Record the job as queued again; the caller raises :class:`Requeued`, and
        :class:`StableNewWorker` puts the job back at the front of its queue without using up a
        retry (a plain RQ worker retries or fails it as usual)."""
        count_requeue(self.connection, self.job.id, ttl=self.ttl)
        recorder.requeued(reason)
        log.warning("job %s: %s", self.job.id, reason)

    def _notify(self, plan: StageExecutionPlan, summary: dict[str, Any]) -> None:
        """Leave the webhook for the plan's callback_url, if any, to :class:`StableNewWorker`, which
        sends it once the job's end is recorded, beside its next job; under another worker class,
        send it now (within ``webhook_deadline``). Never fails the job."""
        if not plan.callback_url:
            return
        self._check_owner()  # a run that lost the job sends nothing: the run that has it will
        if isinstance(self.job, StableNewJob) and self.job.hands_back:
            WebhookOutbox(self.connection, ttl=self.ttl).put(self.job.id, plan.callback_url, summary)
            return
        deliver(self.settings, plan.callback_url, summary)

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
        """Save ``state`` while this run owns the job (checked in the same transaction).

        Raises:
            Superseded: a later run of the job holds the ownership token; nothing was written.
        """
        # The state key is the source of truth; job.meta gets a read-only copy for rq-dashboard, on
        # every save (the throttled progress saves too), in the same round trip.
        meta = meta_field(self.job, state)
        patience = self.settings.redis_retry_seconds
        if not self.store.save_if_owner(state, self.owner, self.token, meta=meta, patience=patience):
            self._check_owner()
            raise Superseded("the job's state changed hands while saving it", job_id=self.job.id)


__all__ = ["JobRun", "run_plan"]
