"""RedisStageIndex: a record is trusted only while the job it names holds that stage done with the
very files recorded; a run that lost its job is stopped before it takes anything."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from stablenew.errors import Superseded
from stablenew.jobs.keys import owner_key, stage_index_key
from stablenew.jobs.reuse_index import RedisStageIndex
from stablenew.jobs.state import StateStore
from stablenew.run import JobState, OutputFile, OutputRecord, ReusableStage, StageState

FILE = OutputFile("source/00-txt2img-00.png", "ab" * 32, 64, 64, 7, 100)


def source_state(status: Any = "finished", sha256: str = FILE.sha256) -> JobState:
    output = OutputRecord(path=FILE.path, sha256=sha256, width=64, height=64, seed=7, bytes=100)
    stage = StageState(index=0, type="txt2img", status=status, outputs=[output], seed=7)
    return JobState(job_id="source", status="finished", stages=[stage])


@pytest.fixture
def conn() -> Any:
    return fakeredis.FakeRedis()


@pytest.fixture
def index(conn: Any) -> RedisStageIndex:
    index = RedisStageIndex(conn, ttl=600)
    index.remember({"k0": ReusableStage("source", 0, "txt2img", [FILE], 7)})
    return index


def test_a_stage_its_job_still_holds_done_with_the_recorded_files_is_found(conn: Any, index: Any) -> None:
    StateStore(conn).save(source_state())

    found = index.find("k0")

    assert found == ReusableStage("source", 0, "txt2img", [FILE], 7)
    assert index.find("another key") is None


@pytest.mark.parametrize(
    "state",
    [None, source_state(status="failed"), source_state(status="running"), source_state(sha256="cd" * 32)],
    ids=["expired", "failed", "running again", "other files"],
)
def test_a_record_whose_job_no_longer_holds_that_stage_is_not_found(
    conn: Any, index: Any, state: JobState | None
) -> None:
    if state is not None:
        StateStore(conn).save(state)

    assert index.find("k0") is None


def test_a_record_that_is_not_one_is_not_found(conn: Any, index: Any) -> None:
    StateStore(conn).save(source_state())
    for garbage in (b"not json", b"[1, 2]", b'{"job_id": 5}', b'{"job_id": "source"}'):
        conn.set(stage_index_key("k0"), garbage)
        assert index.find("k0") is None


def test_remember_records_every_stage_given_with_the_results_ttl(conn: Any) -> None:
    second = ReusableStage("source", 1, "img2img", [FILE], 7)
    RedisStageIndex(conn, ttl=600).remember(
        {"k0": ReusableStage("source", 0, "txt2img", [FILE], 7), "k1": second}
    )

    assert ReusableStage.from_json(conn.get(stage_index_key("k1"))) == second
    assert 0 < conn.ttl(stage_index_key("k0")) <= 600


def test_a_run_that_lost_its_job_is_stopped_when_it_looks_a_stage_up(conn: Any, index: Any) -> None:
    # Given a run holding token 1 of job "new", and a later run that has since taken token 2
    StateStore(conn).save(source_state())
    conn.set(owner_key("new"), 1)
    fenced = RedisStageIndex(conn, ttl=600, owner=("new", 1))
    assert fenced.find("k0") is not None

    conn.incr(owner_key("new"))

    # Then its lookup raises instead of handing it a stage to take
    with pytest.raises(Superseded) as caught:
        fenced.find("k0")
    assert caught.value.job_id == "new"
