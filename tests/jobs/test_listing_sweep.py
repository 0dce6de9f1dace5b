"""The time index of ``list``, on fakeredis: an entry is written only once its job exists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis

from stablenew.jobs.keys import jobs_index_key
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings


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
