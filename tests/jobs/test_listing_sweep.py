"""The time index of ``list`` stays near the jobs RQ holds: each write sweeps the entries of expired
jobs (never a queued job's, however old), safely beside other writers and sweeps; and the backfill
walks every queue a job can be on. On fakeredis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from interleaving import on_replies
from stablenew.jobs.affinity import affinity_queue, register_queue
from stablenew.jobs.keys import JOB_FUNCTION, jobs_index_key, jobs_text_key
from stablenew.jobs.listing import IndexEntry, index_jobs, sweep
from stablenew.jobs.producer import Producer, build_checked_plan
from stablenew.settings import Settings

BASE = "sd_xl_base_1.0.safetensors"
A_MONTH = 30 * 24 * 3600


def ids(views: Any) -> list[str]:
    return [v.job_id for v in views]


def job_key(job_id: str) -> str:
    return f"rq:job:{job_id}"


def submitted_ago(conn: Any, job_ids: list[str], band: str, seconds: float) -> None:
    """Score the entries of ``job_ids`` as enqueued ``seconds`` ago."""
    score = (time.time() - seconds) * 1_000_000
    for key in (jobs_index_key(None), jobs_index_key(band)):
        conn.zadd(key, dict.fromkeys(job_ids, score))


def indexed(conn: Any, job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` that the index of all queues still holds."""
    return [j for j in job_ids if conn.zscore(jobs_index_key(None), j) is not None]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_entries_of_jobs_rq_expired_long_ago_are_swept_while_an_old_queued_job_stays_listed(
    conn: Any, env: None, run_worker: Any, configs: Any
) -> None:
    # Given three jobs that ran and that RQ has since expired (their result TTL ran out), and one
    # that still waits on a queue no worker serves, all four submitted a month ago
    producer = Producer(conn, Settings(result_ttl=1))
    done = [producer.submit(configs.txt2img(f"done {i}")).job_id for i in range(3)]
    assert run_worker(["default"]) == done
    waiting = producer.submit(configs.txt2img("still waiting"), queue="low").job_id
    wait_until(lambda: not any(conn.exists(job_key(j)) for j in done))
    submitted_ago(conn, done, "default", A_MONTH)
    submitted_ago(conn, [waiting], "low", A_MONTH)

    # When a job is submitted (nobody lists)
    fresh = producer.submit(configs.txt2img("fresh")).job_id

    # Then the expired jobs left every index and the texts; the old queued job is still there
    for key in (jobs_index_key(None), jobs_index_key("default")):
        assert [conn.zscore(key, j) for j in done] == [None, None, None]
    assert conn.hmget(jobs_text_key(), done) == [None, None, None]
    assert conn.zscore(jobs_index_key("low"), waiting) is not None
    assert ids(producer.list_jobs()) == [fresh, waiting]
    assert ids(producer.list_jobs(grep="still waiting")) == [waiting]


@pytest.mark.parametrize("batch", [1, 20])
def test_under_a_steady_stream_the_index_stays_near_the_jobs_rq_holds(
    producer: Producer, conn: Any, configs: Any, batch: int
) -> None:
    # Given a stream of submissions (one by one, or in batches) where RQ holds only the last 100
    # jobs: it expires the older ones
    held = 100
    submitted: list[str] = []
    for round_ in range(300 // batch):
        made = [configs.txt2img(f"job {round_} {i}") for i in range(batch)]
        if batch == 1:
            submitted.append(producer.submit(made[0]).job_id)
        else:
            submitted.extend(s.job_id for s in producer.submit_many(made))
        for job_id in submitted[-held - batch : -held]:
            conn.delete(job_key(job_id))  # what RQ's TTL does to a job hash

    # Then after 300 jobs, the indexes and the texts hold the jobs RQ holds and at most half as
    # many more plus one batch (see stablenew.jobs.listing), not every job ever submitted
    bound = held + held // 2 + batch
    for key in (jobs_index_key(None), jobs_index_key("default")):
        assert held <= conn.zcard(key) <= bound
    assert held <= conn.hlen(jobs_text_key()) <= bound
    assert indexed(conn, submitted[-held:]) == submitted[-held:]
    assert ids(producer.list_jobs(limit=held)) == list(reversed(submitted[-held:]))


def test_an_index_entry_is_never_written_before_its_job(
    conn: Any, server: fakeredis.FakeServer, env: None, configs: Any
) -> None:
    # (So an entry without its job hash is an expired job's: what the sweep relies on.)
    orphans: set[str] = set()

    def look(_: int) -> None:
        entries = [e.decode() for e in conn.zrange(jobs_index_key(None), 0, -1)]
        orphans.update(e for e in entries if not conn.exists(job_key(e)))

    producer = Producer(on_replies(server, look), Settings())
    producer.submit(configs.txt2img("one"))
    producer.submit_many([configs.txt2img(f"batch {i}") for i in range(3)])

    assert conn.zcard(jobs_index_key(None)) == 4
    assert orphans == set()


@pytest.mark.parametrize("after", [0, 1, 2, 3, 4])
def test_two_sweeps_at_once_never_drop_an_entry_written_meanwhile(
    producer: Producer, conn: Any, server: fakeredis.FakeServer, configs: Any, after: int
) -> None:
    # Given expired jobs in the index, one of them submitted under an id of the caller's choosing
    reused = producer.submit(configs.txt2img("first life"), job_id="nightly-42").job_id
    others = [producer.submit(configs.txt2img(f"expired {i}")).job_id for i in range(3)]
    for job_id in (reused, *others):
        conn.delete(job_key(job_id))
    submitted_ago(conn, [reused, *others], "default", A_MONTH)
    fresh: list[str] = []

    def meanwhile() -> None:
        # another sweep runs whole, and two submits write fresh entries, one under the expired id
        sweep(fakeredis.FakeRedis(server=server))
        fresh.append(producer.submit(configs.txt2img("second life"), job_id="nightly-42").job_id)
        fresh.append(producer.submit(configs.txt2img("new")).job_id)

    # When a sweep runs with the other sweep and the submits landing between any two of its replies
    if after == 0:
        meanwhile()
    sweep(on_replies(server, lambda n: meanwhile() if n == after else None))
    if not fresh:  # the sweep needed fewer replies than ``after``: they land after it
        meanwhile()

    # Then the fresh entries are there (the reused id's with its new text), the expired ones gone
    assert indexed(conn, [reused, *others]) == [reused]
    assert ids(producer.list_jobs()) == list(reversed(fresh))
    assert ids(producer.list_jobs(grep="second life")) == [reused]
    assert producer.list_jobs(grep="first life") == []


def test_the_backfill_finds_jobs_on_checkpoint_queues(
    producer: Producer, conn: Any, run_worker: Any, configs: Any
) -> None:
    # Given plans for a checkpoint put straight on its checkpoint queue through RQ (as a producer
    # that kept no index did), the queue known to the workers as the producer makes it known: one
    # plan ran (it sits in a registry), one still waits; neither is indexed
    name = affinity_queue("default", BASE)
    register_queue(conn, name, BASE)
    queue = Queue(name, connection=conn, serializer=JSONSerializer)
    plan = build_checked_plan(configs.txt2img("an old sdxl job", model=BASE)).to_json()
    ran = queue.enqueue(JOB_FUNCTION, args=(plan,)).id
    assert run_worker(["default"]) == [ran]
    waiting = queue.enqueue(JOB_FUNCTION, args=(plan,)).id

    # Then the first listing finds both, under their band, newest first
    views = producer.list_jobs()
    assert ids(views) == [waiting, ran]
    assert [(v.queue, v.checkpoint, v.status) for v in views] == [
        ("default", BASE, "queued"),
        ("default", BASE, "finished"),
    ]
    assert ids(producer.list_jobs(queue="default", grep="old sdxl")) == [waiting, ran]


def test_one_write_records_every_entry_under_its_queue_in_order_and_sweeps(conn: Any) -> None:
    # Given an index holding the entry of a job RQ has expired
    index_jobs(conn, [IndexEntry("gone", "low", "old text")], at=time.time() - A_MONTH)

    # When a batch of jobs that exist is recorded (one of them on a queue that is not a band)
    for job_id in ("a", "b", "c"):
        conn.hset(job_key(job_id), "status", "queued")
    batch = [IndexEntry("a", "high", "first"), IndexEntry("b", "default", "second"), IndexEntry("c", "x", "")]
    index_jobs(conn, batch)

    # Then each is in the index of all queues, in batch order, and in its own queue's, with its
    # text; the expired job's entry is gone from every index and the texts
    assert conn.zrange(jobs_index_key(None), 0, -1) == [b"a", b"b", b"c"]
    assert [conn.zrange(jobs_index_key(q), 0, -1) for q in ("high", "default", "low", "x")] == [
        [b"a"],
        [b"b"],
        [],
        [b"c"],
    ]
    assert conn.hgetall(jobs_text_key()) == {b"a": b"first", b"b": b"second", b"c": b""}
