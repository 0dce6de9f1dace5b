"""PlanRun: one run of a plan on the WebUI that settings name, wired once for every caller.

``stablenew run`` (no Redis) and the queue worker run a plan the same way: a
:class:`~stablenew.webui.client.WebUIClient` built from settings, a
:class:`~stablenew.webui.executor.WebUIExecutor` reporting progress to a :class:`RunRecorder`, and a
:class:`~stablenew.pipeline.pipeline_runner.PipelineRunner` with the recorder as its hooks. What
differs between them is injected: where state is kept, what asks for a cancel or a hand-back, who
else hears of progress or of a stage the WebUI answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from stablenew.pipeline import PipelineRunner, StageExecutionPlan, StageResult, StageType
from stablenew.settings import Settings
from stablenew.webui import ImageBytes, WebUIClient, WebUIExecutor

from ._outputs import JobOutputs
from ._recorder import Persist, RunRecorder, never, no_persist
from ._reuse import ReusingExecutor, StageIndex, read_images
from ._state import JobState

ProgressListener = Callable[[StageType, float], None]


class PlanRun:
    """Client, executor, runner and recorder for one run of ``plan`` under the id ``run_id``.

    Use it as a context manager: leaving it closes the WebUI client. ``on_progress`` hears each
    progress fraction after the recorder; ``on_stage_done`` is called each time the WebUI answered
    a stage (not for a stage resumed from disk or reused); ``check_owner`` raises when this run no
    longer owns the job (see :class:`RunRecorder`).

    ``index`` (the worker's Redis index) makes stages reusable: each finished stage is remembered
    by its stage key, and, unless ``reuse`` is off, a stage another job already ran takes that job's
    files instead of a WebUI call (see :mod:`stablenew.run._reuse`).
    ``on_answer`` hears each answered stage's type, request and answer (e.g. which checkpoint the
    WebUI now holds).

    Raises:
        ValueError: ``run_id`` is not a safe job id.
    """

    def __init__(
        self,
        settings: Settings,
        plan: StageExecutionPlan,
        run_id: str,
        *,
        state: JobState | None = None,
        persist: Persist = no_persist,
        should_cancel: Callable[[], bool] = never,
        should_yield: Callable[[], bool] = never,
        worker: str | None = None,
        on_progress: ProgressListener | None = None,
        on_stage_done: Callable[[], None] | None = None,
        check_owner: Callable[[], None] | None = None,
        index: StageIndex | None = None,
        reuse: bool = True,
        on_answer: Callable[[StageType, dict[str, Any], StageResult], None] | None = None,
    ) -> None:
        self.plan = plan
        outputs = JobOutputs(settings.output_dir, run_id)
        self.recorder = RunRecorder(
            outputs,
            plan,
            state=state,
            persist=persist,
            should_cancel=should_cancel,
            should_yield=should_yield,
            webui_url=settings.webui_url,
            worker=worker,
            **({} if check_owner is None else {"check_owner": check_owner}),
            index=index,
            start_on_run=index is not None,
        )
        self._on_progress = on_progress
        self.client = WebUIClient.from_settings(settings)
        self.executor = WebUIExecutor(
            self.client,
            progress_interval=settings.progress_interval,
            on_progress=self._progress,
            should_cancel=should_cancel,
        )
        stages: Any = (
            self.executor
            if on_stage_done is None and on_answer is None
            else _ReportingExecutor(self.executor, on_stage_done, on_answer)
        )
        if index is not None:
            stages = ReusingExecutor(
                stages,
                self.executor,
                index,
                outputs,
                lookup=reuse,
                input_digests=self._written_before,
                on_run=self.recorder.stage_runs,
            )
        self.runner = PipelineRunner(stages, hooks=self.recorder)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def run(self) -> StageResult:
        """Run every stage of the plan not already done (see :class:`RunRecorder` for resume); return
        the last stage's ``images`` (base64) and ``meta``."""
        result = self.runner.run(self.plan)
        images = read_images(result["images"])  # a reused last stage hands on its files
        result["images"] = [i.base64() if isinstance(i, ImageBytes) else i for i in images]
        return result

    def _written_before(self, index: int) -> list[str]:
        """The sha256 of the images stage ``index - 1`` left, in the order it handed them on."""
        return [o.sha256 for o in self.recorder.state.stages[index - 1].outputs]

    def _progress(self, stage_type: StageType, fraction: float) -> None:
        self.recorder.on_progress(stage_type, fraction)
        if self._on_progress is not None:
            self._on_progress(stage_type, fraction)


class _ReportingExecutor:
    """Passes stages to the WebUI executor and reports each one it answered."""

    def __init__(
        self,
        inner: WebUIExecutor,
        on_stage_done: Callable[[], None] | None,
        on_answer: Callable[[StageType, dict[str, Any], StageResult], None] | None = None,
    ) -> None:
        self.inner = inner
        self.on_stage_done = on_stage_done
        self.on_answer = on_answer

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> StageResult:
        result = self.inner.run_stage(stage_type, payload)
        if self.on_stage_done is not None:
            self.on_stage_done()
        if self.on_answer is not None:
            self.on_answer(stage_type, payload, result)
        return result
