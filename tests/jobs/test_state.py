"""Per-stage job state: its schema, its public view, and the Redis store."""

from __future__ import annotations

import json

import pytest

from stablenew.jobs.keys import state_key
from stablenew.jobs.state import StateStore
from stablenew.pipeline import StageSequencer
from stablenew.run import JobState, OutputRecord


@pytest.fixture
def plan(configs):
    return StageSequencer().build_plan(configs.three_stage())


def test_a_new_state_has_one_pending_stage_per_plan_stage(plan):
    state = JobState.for_plan("job", plan)

    assert state.status == "queued"
    assert state.runs == 0
    assert [(s.index, s.type, s.status, s.attempts) for s in state.stages] == [
        (0, "txt2img", "pending", 0),
        (1, "img2img", "pending", 0),
        (2, "upscale", "pending", 0),
    ]


def test_a_state_matches_only_a_plan_with_the_same_stages(plan, configs):
    state = JobState.for_plan("job", plan)

    assert state.matches(plan)
    assert not state.matches(StageSequencer().build_plan(configs.two_stage()))
    assert not JobState(job_id="job").matches(plan)


def test_the_public_view_has_every_stage_field_but_not_the_private_meta(plan):
    state = JobState.for_plan("job", plan)
    stage = state.stages[0]
    stage.status = "finished"
    stage.progress = 0.123456
    stage.seed = 9
    stage.meta = {"requests": [{"prompt": "secret-ish and large"}]}
    stage.outputs = [
        OutputRecord(path="job/00-txt2img-00.png", sha256="ab" * 32, width=8, height=8, seed=9, bytes=5)
    ]

    view = state.view()

    assert set(view) == {"status", "error", "manifest", "stages"}
    first = view["stages"][0]
    assert first["progress"] == 0.1235
    assert "meta" not in first
    assert first["outputs"] == [
        {"path": "job/00-txt2img-00.png", "sha256": "ab" * 32, "width": 8, "height": 8, "seed": 9}
    ]
    json.dumps(view)  # the view goes into job.meta and status --json: it must be plain JSON


def test_the_store_round_trips_a_state_as_json_with_a_ttl(conn, plan):
    store = StateStore(conn, ttl=600)
    state = JobState.for_plan("job", plan)
    state.stages[1].error = "boom"

    store.save(state)

    raw = conn.get(state_key("job"))
    assert json.loads(raw)["stages"][1]["error"] == "boom"
    assert 0 < conn.ttl(state_key("job")) <= 600
    assert store.load("job") == state


def test_saving_stamps_the_update_time(conn, plan):
    state = JobState.for_plan("job", plan)
    state.updated_at = "1970-01-01T00:00:00+00:00"

    StateStore(conn).save(state)

    assert StateStore(conn).load("job").updated_at > "1970"
    assert StateStore(conn).load("job").updated_at != "1970-01-01T00:00:00+00:00"


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"status": "exploded"}', b"\x80\x04\x95pickle"])
def test_unreadable_state_is_treated_as_none(conn, raw):
    conn.set(state_key("job"), raw)

    assert StateStore(conn).load("job") is None


def test_load_many_returns_the_readable_states_and_skips_missing_and_garbage(conn, plan):
    store = StateStore(conn)
    store.save(JobState.for_plan("a", plan))
    store.save(JobState.for_plan("c", plan))
    conn.set(state_key("b"), b"garbage")

    found = store.load_many(["a", "b", "c", "d"])

    assert sorted(found) == ["a", "c"]
    assert found["c"].job_id == "c"
    assert store.load_many([]) == {}
