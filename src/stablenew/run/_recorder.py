"""RunRecorder: the runner hooks that record a run as it goes.

It keeps the per-stage state (:class:`~stablenew.run.JobState`), writes each finished
stage's images (:class:`~stablenew.run.JobOutputs`), resumes after stages whose files are intact, honours a
cancel request between stages, and writes the manifest. Where the state is stored is injected:
Redis for a queued job (the worker), nowhere for ``stablenew run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from stablenew import __version__
from stablenew.errors import Canceled, Requeued
from stablenew.pipeline import StageExecution, StageExecutionPlan, StageResult, StageType
from stablenew.settings import redact_url

from ._outputs import JobOutputs, OutputFile
from ._reuse import ReusableStage, StageIndex
from ._state import DONE_STATUSES, JobState, OutputRecord, ReusedFrom, StageState, utcnow

log = logging.getLogger("stablenew.recorder")

PROGRESS_SAVE_INTERVAL_S = 0.5
_KEPT_META = ("endpoint", "width", "height", "duration_s", "requests", "info")

Persist = Callable[[JobState, bool], None]  # (state, is_progress_only)


def no_persist(state: JobState, progress_only: bool) -> None:
    return None


def never() -> bool:
    return False


class RunRecorder:
    """Implements :class:`~stablenew.pipeline.pipeline_runner.StageHooks` for one run of a plan.

    ``start_on_run`` is for a run whose executor may take a stage from another job instead of running
    it (:class:`~stablenew.run.ReusingExecutor`): :meth:`before_stage` cannot know which it will be,
    so the cancel and hand-back checks and the save that records the stage running wait for
    :meth:`stage_runs`, which that executor calls right before the WebUI call. A stage taken from
    another job is then recorded ``reused`` by the next save (the next stage's start, or the run's
    end), without a save of its own: every save shows the stages as they are.
    """

    def __init__(
        self,
        outputs: JobOutputs,
        plan: StageExecutionPlan,
        *,
        state: JobState | None = None,
        persist: Persist = no_persist,
        should_cancel: Callable[[], bool] = never,
        should_yield: Callable[[], bool] = never,
        webui_url: str = "",
        worker: str | None = None,
        check_owner: Callable[[], None] = lambda: None,
        index: StageIndex | None = None,
        start_on_run: bool = False,
    ) -> None:
        self.outputs = outputs
        # Raises when this run no longer owns the job (a later run took it over): asked before each
        # stage and before each file written, so a run that froze and woke writes nothing more.
        self.check_owner = check_owner
        self.plan = plan
        self.persist = persist
        self.should_cancel = should_cancel
        self.should_yield = should_yield  # e.g. the worker is stopping: hand the job back between stages
        self.webui_url = webui_url
        self.index = index  # where each finished stage is remembered by its stage key, for reuse
        self.start_on_run = start_on_run
        # Stages done but not yet remembered in the index: remembered once a save holds them.
        self._to_remember: dict[str, ReusableStage] = {}
        job_id = outputs.job_id
        if state is None or not state.matches(plan):
            state = JobState.for_plan(job_id, plan)
        self.state = state
        for name in outputs.remove_partial_files():
            log.info("job %s: removed %s, left by a run that died while writing it", job_id, name)
        self.state.runs += 1
        self.state.status = "running"
        self.state.error = None
        self.state.worker = worker
        self.current: int | None = None
        self._unstarted: int | None = None  # with start_on_run: the stage prepared, not yet started
        self._ran_a_stage = False  # once a stage runs, later stored outputs are stale
        self._last_progress_save = 0.0
        self.save()

    @property
    def job_id(self) -> str:
        return self.outputs.job_id

    def save(self, *, progress_only: bool = False) -> None:
        self.persist(self.state, progress_only)
        if self._to_remember and self.index is not None:
            stages, self._to_remember = self._to_remember, {}
            try:
                self.index.remember(stages)
            except Exception:  # reuse is an optimisation: never fail a finished stage over it
                log.warning("job %s: stages not recorded for reuse", self.job_id, exc_info=True)

    # -------------------------------------------------------------- runner hooks
    def before_stage(self, index: int, stage: StageExecution) -> StageResult | None:
        self.current = index  # (a stage that runs is saved first: the owner check is in that save)
        if not self.start_on_run:
            self._stop_if_asked(index, stage)
        st = self.state.stages[index]
        # A stored stage is only reused while every stage before it was reused too: a stage made
        # from an input that was just regenerated must be regenerated as well.
        if st.status in DONE_STATUSES and st.outputs and not self._ran_a_stage:
            images = self.outputs.read_verified([OutputFile(**o.model_dump()) for o in st.outputs])
            if images is not None:
                log.info("job %s: stage %d (%s) already done, resuming after it", self.job_id, index, st.type)
                return {"images": images, "meta": {**st.meta, "stage": st.type, "seed": st.seed}}
        self._ran_a_stage = True
        if self.start_on_run:
            self._unstarted = index  # started by stage_runs(), or by after_stage() if it was taken
            return None
        self._start(st)
        self.save()
        return None

    def stage_runs(self) -> None:
        """The stage :meth:`before_stage` prepared is about to run on the WebUI (it was not taken from
        another job). With ``start_on_run``, a cancel or a hand-back asked for is honoured here (the
        stage stays pending), else the stage is recorded running, with the stages reused before it,
        in one save (the owner check is in that save).

        Raises:
            Canceled / Requeued: as :meth:`before_stage` would have.
        """
        index = self._unstarted
        if index is None:
            return
        self._stop_if_asked(index, self.plan.stages[index])
        self._start(self.state.stages[index])
        self.save()

    def _start(self, st: StageState) -> None:
        self._unstarted = None
        st.status = "running"
        st.progress = 0.0
        st.attempts += 1
        st.started_at = utcnow()
        st.ended_at = None
        st.error = None
        st.outputs = []
        st.reused_from = None

    def _stop_if_asked(self, index: int, stage: StageExecution) -> None:
        if self.should_cancel():
            raise Canceled(f"canceled before stage {index} ({stage.stage_type.value})", job_id=self.job_id)
        if self.should_yield():
            raise Requeued(
                f"its worker is stopping: handed back before stage {index} ({stage.stage_type.value})",
                job_id=self.job_id,
            )

    def after_stage(self, index: int, stage: StageExecution, result: StageResult) -> None:
        decoded = result.pop("decoded", None)  # written now, then released: not kept for the next stage
        meta = dict(result.get("meta") or {})
        seeds = meta.get("seeds") or [meta.get("seed")]
        st = self.state.stages[index]
        if self._unstarted == index:  # taken from another job: started and done at once
            self._start(st)
        source = meta.get("reused_from")  # already in this job's folder (ReusingExecutor took them)
        if source is not None:
            written = list(source["outputs"])
        else:
            self.check_owner()
            written = self.outputs.write_stage(
                index, stage.stage_type.value, result["images"], seeds, decoded=decoded
            )
        st.outputs = [OutputRecord(**f.to_dict()) for f in written]
        st.status = "reused" if source is not None else "finished"
        st.reused_from = ReusedFrom(job_id=source["job_id"], index=source["index"]) if source else None
        st.progress = 1.0
        st.ended_at = utcnow()
        st.seed = meta.get("seed")
        st.meta = {k: meta[k] for k in _KEPT_META if k in meta}
        key = meta.get("stage_key")
        if self.index is not None and isinstance(key, str):
            self._to_remember[key] = ReusableStage(self.job_id, index, st.type, written, st.seed, st.meta)
        if source is None or not self.start_on_run:
            self.save()

    def on_progress(self, stage_type: StageType, fraction: float) -> None:
        """Step progress from the executor; saved at most every PROGRESS_SAVE_INTERVAL_S."""
        if self.current is None:
            return
        self.state.stages[self.current].progress = fraction
        now = time.monotonic()
        if now - self._last_progress_save >= PROGRESS_SAVE_INTERVAL_S:
            self._last_progress_save = now
            self.save(progress_only=True)

    # -------------------------------------------------------------- endings
    def finished(self) -> None:
        self.state.status = "finished"
        self._close()

    def failed(self, exc: BaseException) -> str:
        """Record a failure; return the message naming the stage and the error text."""
        where = ""
        if self.current is not None:
            st = self.state.stages[self.current]
            if self._unstarted == self.current:  # it failed while it was looked up or taken
                self._start(st)
            st.status = "failed"
            st.ended_at = utcnow()
            st.error = str(exc)
            where = f"stage {st.index} ({st.type}): "
        message = f"{where}{type(exc).__name__}: {exc}"
        self.state.status = "failed"
        self.state.error = message
        self._close()
        return message

    def retrying(self, exc: BaseException) -> None:
        """The run failed in a way worth another try in this same run: record the failed stage, and
        let the next pass reuse every stage finished so far (they are this run's own outputs)."""
        if self.current is not None:
            st = self.state.stages[self.current]
            if self._unstarted == self.current:
                self._start(st)
            st.status = "failed"
            st.ended_at = utcnow()
            st.error = f"{type(exc).__name__}: {exc}"
        self.current = self._unstarted = None
        self._ran_a_stage = False
        self.save()

    def requeued(self, reason: str) -> None:
        """The job goes back to its queue unfinished; a stage caught running will run again."""
        self.state.mark_requeued(reason)
        self.current = self._unstarted = None
        self.save()

    def canceled(self, exc: Canceled) -> None:
        for st in self.state.stages:
            if st.status in ("running", "pending"):
                st.status = "canceled"
                st.ended_at = utcnow() if st.started_at else None
        self.state.status = "canceled"
        self.state.error = str(exc)
        self._close()

    def _close(self) -> None:
        # The end is recorded whatever the disk does: a manifest that cannot be written (disk
        # full, folder gone) must neither hide why the job ended nor stop its state being saved.
        self.check_owner()
        try:
            self.state.manifest = str(self.outputs.write_manifest(self.manifest()))
        except OSError as exc:
            self.state.manifest = None
            log.error("job %s: manifest not written (%s: %s)", self.job_id, type(exc).__name__, exc.strerror)
        self.save()

    def missing_outputs(self) -> list[str]:
        """The recorded output files of finished stages that are not on disk as recorded."""
        missing = []
        for st in self.state.stages:
            for record in st.outputs if st.status == "finished" else []:
                if not self.outputs.verify([OutputFile(**record.model_dump())]):
                    missing.append(record.path)
        return missing

    # -------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        return {"job_id": self.job_id, **self.state.view()}

    def manifest(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.state.status,
            "error": self.state.error,
            "updated_at": utcnow(),
            "software": {"stablenew": __version__},
            "webui": {"url": redact_url(self.webui_url)},
            "worker": self.state.worker,
            "plan": _plan_without_images(self.plan),
            "stages": [
                {
                    **st.model_dump(exclude={"meta"}),
                    "endpoint": st.meta.get("endpoint"),
                    "requests": st.meta.get("requests") or [],
                    "info": st.meta.get("info") or {},
                    "duration_s": st.meta.get("duration_s"),
                }
                for st in self.state.stages
            ],
        }


def _plan_without_images(plan: StageExecutionPlan) -> dict[str, Any]:
    doc = plan.model_dump(mode="json")
    for stage in doc["stages"]:
        images = stage["config"].get("init_images")
        if images:
            stage["config"]["init_images"] = [f"<image {i}>" for i in range(len(images))]
    return doc
