"""The time index of ``list``, on fakeredis: an entry is written only once its job exists, and the
backfill walks every queue a job can be on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis
from rq import Queue
from rq.serializers import JSONSerializer

from stablenew.jobs.affinity import affinity_queue, register_queue
from stablenew.jobs.keys import JOB_FUNCTION, jobs_index_key
from stablenew.jobs.producer import Producer, build_checked_plan
from stablenew.settings import Settings

BASE = "sd_xl_base_1.0.safetensors"


def ids(views: Any) -> list[str]:
    return [v.job_id for v in views]


def job_key(job_id: str) -> str:
    return f"rq:job:{job_id}"


def on_replies(server: fakeredis.FakeServer, callback: Callable[[int], None]) -> Any:
    """A client on ``server`` that calls ``callback(n)`` once it has read its n-th reply, as
    another client's commands may run on Redis between two of ours."""
    replies = 0
    armed = False

    class Connection(fakeredis.FakeRedisConnection):
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal replies
            reply = super().read_response(*args, **kwargs)
            if armed:
                replies += 1
                callback(replies)
            return reply

    client = fakeredis.FakeRedis(server=server, connection_class=Connection)
    client.ping()  # the connection's own handshake is not one of the replies counted
    armed = True
    return client


def test_an_index_entry_is_never_written_before_its_job(
    conn: Any, server: fakeredis.FakeServer, env: None, configs: Any
) -> None:
    # (So an entry without its job hash is an expired job's.)
    orphans: set[str] = set()

    def look(_: int) -> None:
        entries = [e.decode() for e in conn.zrange(jobs_index_key(None), 0, -1)]
        orphans.update(e for e in entries if not conn.exists(job_key(e)))

    producer = Producer(on_replies(server, look), Settings())
    producer.submit(configs.txt2img("one"))
    producer.submit_many([configs.txt2img(f"batch {i}") for i in range(3)])

    assert conn.zcard(jobs_index_key(None)) == 4
    assert orphans == set()


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
