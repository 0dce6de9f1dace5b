"""A submit writes its job and everything that goes with it in one transaction, and a submit under a
known id stays idempotent when another submit of that id lands between any two of its replies. On
fakeredis, with a client that lets other clients' commands run between two of its replies."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from interleaving import on_replies
from stablenew.errors import JobError
from stablenew.jobs.keys import config_key, jobs_index_key, state_key
from stablenew.jobs.producer import Producer
from stablenew.queues import QUEUES
from stablenew.settings import Settings

JOB_ID = "nightly-7"


def queued(conn: Any) -> list[str]:
    return [i.decode() for name in QUEUES for i in conn.lrange(f"rq:queue:{name}", 0, -1)]


def test_no_one_sees_a_submitted_job_without_its_index_entry_dashboard_view_and_config(
    conn: Any, server: fakeredis.FakeServer, env: None, configs: Any
) -> None:
    # (A worker may take a job the moment it is queued: what the producer writes of it after that
    # would overwrite what the worker wrote, or be missing for rerun and list.)
    seen: list[str] = []

    def look(_: int) -> None:
        for job_id in queued(conn):
            meta = json.loads(conn.hget(f"rq:job:{job_id}", "meta") or b"{}")
            complete = (
                conn.zscore(jobs_index_key(None), job_id) is not None
                and meta.get("stablenew", {}).get("status") == "queued"
                and conn.exists(config_key(job_id))
            )
            seen.append("complete" if complete else f"{job_id} incomplete")

    producer = Producer(on_replies(server, look), Settings())
    producer.submit(configs.txt2img("one"))
    producer.submit(configs.txt2img("two"), job_id=JOB_ID)
    producer.submit_many([configs.txt2img(f"batch {i}") for i in range(3)])

    assert len(queued(conn)) == 5
    assert seen and set(seen) == {"complete"}


@pytest.mark.parametrize("after", [0, 1, 2, 3, 4, 5])
def test_two_submits_of_one_new_id_at_once_make_one_job_and_neither_touches_the_others_state(
    conn: Any, server: fakeredis.FakeServer, env: None, configs: Any, after: int
) -> None:
    config = configs.txt2img("nightly render")
    other = Producer(fakeredis.FakeRedis(server=server), Settings())
    theirs: list[Any] = []

    def meanwhile() -> None:
        # another submit of the same id, whose job a worker takes at once (it records its state)
        theirs.append(other.submit(config, job_id=JOB_ID))
        conn.set(state_key(JOB_ID), "the running job's state")

    # When a submit of the same id runs with the other one landing between any two of its replies
    if after == 0:
        meanwhile()
    producer = Producer(on_replies(server, lambda n: meanwhile() if n == after else None), Settings())
    ours = producer.submit(config, job_id=JOB_ID)
    if not theirs:  # the submit needed fewer replies than ``after``: the other one lands after it
        meanwhile()

    # Then there is one job under that id, queued once and indexed once; one submit made it, the
    # other returned it; and the state its worker recorded is still there
    assert queued(conn) == [JOB_ID]
    assert conn.zrange(jobs_index_key(None), 0, -1) == [JOB_ID.encode()]
    assert [s.job_id for s in (ours, *theirs)] == [JOB_ID, JOB_ID]
    assert sorted(s.existing for s in (ours, *theirs)) == [False, True]
    assert conn.get(state_key(JOB_ID)) == b"the running job's state"


def test_submit_under_the_id_of_a_hash_that_is_no_job_is_refused_and_leaves_it(
    producer: Producer, conn: Any, configs: Any
) -> None:
    conn.hset(f"rq:job:{JOB_ID}", "status", "queued")  # written by something else: no data

    with pytest.raises(JobError, match=f"job {JOB_ID} exists but is not a stablenew plan"):
        producer.submit(configs.txt2img(), job_id=JOB_ID)

    assert conn.hgetall(f"rq:job:{JOB_ID}") == {b"status": b"queued"}
    assert queued(conn) == []
