"""PlanRun: one run of a plan on the simulated WebUI, wired from settings as both callers use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plan_configs import Configs
from stablenew.pipeline import StageSequencer
from stablenew.run import JobState, PlanRun
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI() as server:
        yield server


@pytest.fixture
def settings(sim: SimulatedWebUI, tmp_path: Path) -> Settings:
    return Settings(webui_url=sim.url, output_dir=tmp_path, progress_interval=0.05)


def test_a_plan_run_writes_every_stage_and_reports_each_stage_the_webui_answered(settings: Settings) -> None:
    plan = StageSequencer().build_plan(Configs.two_stage())
    answered: list[int] = []
    saved: list[str] = []

    with PlanRun(
        settings,
        plan,
        "job-1",
        persist=lambda state, progress_only: saved.append(state.status),
        worker="host-a",
        on_stage_done=lambda: answered.append(1),
    ) as run:
        run.run()
    run.recorder.finished()

    view = run.recorder.summary()
    assert [s["status"] for s in view["stages"]] == ["finished", "finished"]
    for stage in view["stages"]:
        assert (settings.output_dir / stage["outputs"][0]["path"]).is_file()
    assert len(answered) == 2
    assert saved[-1] == "finished"
    assert run.recorder.state.worker == "host-a"


def test_a_resumed_run_reports_only_the_stages_it_ran_again(settings: Settings) -> None:
    plan = StageSequencer().build_plan(Configs.two_stage())
    with PlanRun(settings, plan, "job-2") as first:
        first.run()
    first.recorder.finished()
    state = JobState.model_validate(first.recorder.state.model_dump())
    state.stages[1].status = "failed"  # as if the run had died in its last stage

    answered: list[int] = []
    with PlanRun(settings, plan, "job-2", state=state, on_stage_done=lambda: answered.append(1)) as second:
        second.run()

    assert len(answered) == 1
    assert second.recorder.state.runs == 2


def test_progress_reaches_the_recorder_and_the_listener(settings: Settings) -> None:
    plan = StageSequencer().build_plan(Configs.txt2img(steps=20))
    heard: list[tuple[str, float]] = []
    with SimulatedWebUI(latency=0.4) as slow:
        slow_settings = settings.model_copy(update={"webui_url": slow.url})
        with PlanRun(
            slow_settings, plan, "job-3", on_progress=lambda stage, f: heard.append((stage.value, f))
        ) as run:
            run.run()

    assert heard, "the listener heard no progress"
    assert {stage for stage, _ in heard} == {"txt2img"}
    assert run.recorder.state.stages[0].progress == 1.0


def test_an_unsafe_run_id_is_refused_before_anything_is_built(settings: Settings) -> None:
    plan = StageSequencer().build_plan(Configs.txt2img())
    with pytest.raises(ValueError, match="not a safe folder name"):
        PlanRun(settings, plan, "../escape")
