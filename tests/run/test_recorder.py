"""RunRecorder: the runner hooks that persist per-stage state, write outputs, resume and cancel.

The runner is the real PipelineRunner; the executor is a small stand-in that renders a fresh PNG
per call (like a WebUI with seed -1), so a stage that runs again produces different bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import types
from typing import Any

import pytest
from PIL import Image

from stablenew.errors import Canceled, WebUIHTTPError
from stablenew.pipeline import PipelineRunner, StageSequencer, StageType
from stablenew.run import JobOutputs, JobState, RunRecorder


def png_b64(shade: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, 40, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class StandInExecutor:
    """Renders a different image on every call; can fail a stage a given number of times."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = dict(fail or {})

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((stage_type.value, list(payload["input_images"])))
        if self.fail.get(stage_type.value, 0) > 0:
            self.fail[stage_type.value] -= 1
            raise WebUIHTTPError(503, "busy", stage=stage_type.value)
        number = len(self.calls)
        return {
            "images": [png_b64(number * 37)],
            "meta": {
                "stage": stage_type.value,
                "seed": 1000 + number,
                "seeds": [1000 + number],
                "endpoint": f"/sdapi/v1/{stage_type.value}",
                "requests": [{"prompt": "p", "init_images": ["<image 0>"]}],
                "info": {"seed": 1000 + number},
                "duration_s": 0.01,
                "not_kept": "x",
            },
        }

    def stages_called(self) -> list[str]:
        return [stage for stage, _ in self.calls]


class Saved:
    """A persist callback that keeps a copy of every state it was given."""

    def __init__(self) -> None:
        self.states: list[tuple[JobState, bool]] = []

    def __call__(self, state: JobState, progress_only: bool) -> None:
        self.states.append((state.model_copy(deep=True), progress_only))

    @property
    def last(self) -> JobState:
        return self.states[-1][0]


@pytest.fixture
def plan(configs):
    return StageSequencer().build_plan(configs.three_stage())


def run(plan, outputs, executor, *, state=None, should_cancel=lambda: False):
    saved = Saved()
    recorder = RunRecorder(outputs, plan, state=state, persist=saved, should_cancel=should_cancel)
    try:
        PipelineRunner(executor, hooks=recorder).run(plan)
    except Canceled as exc:
        recorder.canceled(exc)
        return recorder, saved
    except Exception as exc:
        recorder.failed(exc)
        return recorder, saved
    recorder.finished()
    return recorder, saved


def test_a_run_records_every_stage_with_its_outputs_seed_and_kept_meta(tmp_path, plan):
    outputs = JobOutputs(tmp_path, "job")
    executor = StandInExecutor()

    recorder, saved = run(plan, outputs, executor)

    state = saved.last
    assert state.status == "finished"
    assert state.runs == 1
    assert [s.status for s in state.stages] == ["finished", "finished", "finished"]
    assert [s.seed for s in state.stages] == [1001, 1002, 1003]
    for stage in state.stages:
        [output] = stage.outputs
        assert hashlib.sha256((tmp_path / output.path).read_bytes()).hexdigest() == output.sha256
        assert stage.attempts == 1 and stage.progress == 1.0
        assert stage.started_at and stage.ended_at
        assert "not_kept" not in stage.meta and stage.meta["endpoint"].startswith("/sdapi/v1/")
    # each stage was persisted as it started and as it finished, not only at the end
    running = [[s.status for s in st.stages] for st, _ in saved.states]
    assert ["finished", "running", "pending"] in running
    assert state.manifest == str(outputs.manifest_path)
    assert recorder.summary()["status"] == "finished"


def test_the_manifest_holds_the_plan_requests_seeds_and_outputs_but_no_image_data(tmp_path, configs):
    # Given an img2img plan whose config carries an init image
    init = png_b64(5)
    config = {"img2img_enabled": True, "img2img_config": {"init_images": [init], "prompt": "x"}}
    plan = StageSequencer().build_plan(config)
    outputs = JobOutputs(tmp_path, "job")

    run(plan, outputs, StandInExecutor())

    text = outputs.manifest_path.read_text()
    assert init not in text
    manifest = json.loads(text)
    assert manifest["plan"]["stages"][0]["config"]["init_images"] == ["<image 0>"]
    assert manifest["plan"]["stages"][0]["config"]["prompt"] == "x"
    [stage] = manifest["stages"]
    assert stage["requests"] == [{"prompt": "p", "init_images": ["<image 0>"]}]
    assert stage["seed"] == 1001
    assert stage["endpoint"] == "/sdapi/v1/img2img"
    assert stage["outputs"][0]["sha256"]
    assert manifest["status"] == "finished"
    assert manifest["software"]["stablenew"]


def test_the_manifest_never_shows_the_webui_password(tmp_path, plan):
    outputs = JobOutputs(tmp_path, "job")
    recorder = RunRecorder(outputs, plan, webui_url="http://user:hunter2@gpu-host:7860")
    PipelineRunner(StandInExecutor(), hooks=recorder).run(plan)
    recorder.finished()

    assert "hunter2" not in outputs.manifest_path.read_text()


def test_a_rerun_resumes_after_the_stages_whose_files_are_intact(tmp_path, plan):
    # Given a run that failed in img2img after txt2img finished
    outputs = JobOutputs(tmp_path, "job")
    first_executor = StandInExecutor(fail={"img2img": 1})
    _, first = run(plan, outputs, first_executor)
    assert [s.status for s in first.last.stages] == ["finished", "failed", "pending"]
    assert "stage 1 (img2img)" in first.last.error

    # When the job runs again from its stored state
    executor = StandInExecutor()
    _, second = run(plan, outputs, executor, state=first.last)

    # Then txt2img is not run again, and img2img is handed txt2img's file from disk
    assert executor.stages_called() == ["img2img", "upscale"]
    txt2img_file = tmp_path / second.last.stages[0].outputs[0].path
    assert executor.calls[0][1] == [base64.b64encode(txt2img_file.read_bytes()).decode()]
    assert second.last.status == "finished"
    assert second.last.runs == 2
    assert [s.attempts for s in second.last.stages] == [1, 2, 1]


def test_once_a_stage_runs_again_every_later_stage_runs_again_too(tmp_path, plan):
    # Given a run where txt2img and img2img finished, then upscale failed
    outputs = JobOutputs(tmp_path, "job")
    _, first = run(plan, outputs, StandInExecutor(fail={"upscale": 1}))
    # and txt2img's file was damaged afterwards (img2img's is intact)
    (tmp_path / first.last.stages[0].outputs[0].path).write_bytes(b"damaged")

    # When the job runs again
    executor = StandInExecutor()
    _, second = run(plan, outputs, executor, state=first.last)

    # Then txt2img runs again, and so does img2img: its stored image was made from the old
    # txt2img image, so keeping it would chain outputs that do not belong together
    assert executor.stages_called() == ["txt2img", "img2img", "upscale"]
    new_txt2img = (tmp_path / second.last.stages[0].outputs[0].path).read_bytes()
    assert executor.calls[1][1] == [base64.b64encode(new_txt2img).decode()]
    assert second.last.status == "finished"


def test_a_state_for_another_plan_is_discarded(tmp_path, plan, configs):
    outputs = JobOutputs(tmp_path, "job")
    other = JobState.for_plan("job", StageSequencer().build_plan(configs.two_stage()))
    other.runs = 5
    other.stages[0].status = "finished"

    executor = StandInExecutor()
    _, saved = run(plan, outputs, executor, state=other)

    assert executor.stages_called() == ["txt2img", "img2img", "upscale"]
    assert saved.last.runs == 1
    assert len(saved.last.stages) == 3


def test_a_cancel_between_stages_stops_before_the_next_stage_and_keeps_finished_outputs(tmp_path, plan):
    # Given a cancel that arrives once txt2img has finished
    outputs = JobOutputs(tmp_path, "job")
    executor = StandInExecutor()

    def canceled_after_first_stage() -> bool:
        return len(executor.calls) >= 1

    # When the plan runs
    _, saved = run(plan, outputs, executor, should_cancel=canceled_after_first_stage)

    # Then no later stage ran, the job and the stages left are canceled, txt2img's file remains
    assert executor.stages_called() == ["txt2img"]
    state = saved.last
    assert state.status == "canceled"
    assert "before stage 1 (img2img)" in state.error
    assert [s.status for s in state.stages] == ["finished", "canceled", "canceled"]
    assert (tmp_path / state.stages[0].outputs[0].path).is_file()
    assert json.loads(outputs.manifest_path.read_text())["status"] == "canceled"


def test_a_failure_is_recorded_on_its_stage_and_named_in_the_message(tmp_path, plan):
    outputs = JobOutputs(tmp_path, "job")
    recorder = RunRecorder(outputs, plan)
    recorder.before_stage(0, plan.stages[0])

    message = recorder.failed(WebUIHTTPError(503, "busy"))

    assert message == "stage 0 (txt2img): WebUIHTTPError: WebUI HTTP 503: busy"
    assert recorder.state.stages[0].status == "failed"
    assert recorder.state.stages[0].error == "WebUI HTTP 503: busy"
    manifest = json.loads(outputs.manifest_path.read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"] == message


def test_progress_is_saved_at_most_once_per_interval(tmp_path, plan, monkeypatch):
    # Given a clock we control
    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr("stablenew.run._recorder.time", types.SimpleNamespace(monotonic=lambda: clock.now))
    saved = Saved()
    recorder = RunRecorder(JobOutputs(tmp_path, "job"), plan, persist=saved)

    # When progress arrives before any stage, then several times during stage 0
    recorder.on_progress(StageType.TXT2IMG, 0.5)
    recorder.before_stage(0, plan.stages[0])
    for fraction in (0.1, 0.2, 0.3):
        recorder.on_progress(StageType.TXT2IMG, fraction)
    clock.now += 1.0
    recorder.on_progress(StageType.TXT2IMG, 0.6)

    # Then progress before a stage is ignored, and within the interval only the first is saved
    progress_saves = [state.stages[0].progress for state, progress_only in saved.states if progress_only]
    assert progress_saves == [0.1, 0.6]
    assert recorder.state.stages[0].progress == 0.6
