"""Benchmark 6: ``list`` with many jobs. ``Producer.list_page`` (the time index) against the walk
``list_jobs`` did before it (every queue's list and registry, oldest first, cut at the limit).

Redis is filled with N four-stage jobs over the three queues (``submit_many`` in batches, outside
the timing); a third of them are moved to the finished registry, so that both RQ's lists and its
registries hold jobs. Timed, each a median of interleaved rounds: the first page of 50, a deep page
(the page after job N/2: by cursor for the index, by slicing the walk for the old way, the only
way it could page), a text filter that matches one job and a status filter that matches none (the
worst cases: every entry checked), one that matches a third of the jobs, and resolving a short id
(SCAN over the job keys).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.environment import distinct_configs, redis_url, reset
from bench.harness import BenchResult, Target, interleave, median
from stablenew.jobs.keys import jobs_index_key
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.views import job_view
from stablenew.queues import QUEUES
from stablenew.settings import Settings

NAME = "job_listing"
PAGE = 50
_BATCH = 1000


def old_walk(producer: Producer, limit: int, offset: int = 0) -> list[Any]:
    """What ``list_jobs`` did before the index: each queue high, default, low, each oldest first."""
    ids: list[str] = []
    for name in QUEUES:
        q = producer.queue(name)
        ids.extend(q.started_job_registry.get_job_ids(cleanup=False))
        ids.extend(q.get_job_ids())
        for registry in (q.failed_job_registry, q.canceled_job_registry, q.finished_job_registry):
            ids.extend(registry.get_job_ids(cleanup=False))
    ids = list(dict.fromkeys(ids))[offset : offset + limit]
    jobs = StableNewJob.fetch_many(ids, connection=producer.connection, serializer=JSONSerializer)
    states = producer.store.load_many(ids)
    return [job_view(job, states.get(job.id), producer.queue) for job in jobs if job is not None]


def _fill(conn: redis.Redis, producer: Producer, count: int) -> list[str]:
    """Submit ``count`` jobs over the queues, newest last; move every third to finished."""
    configs = distinct_configs(min(count, _BATCH))
    job_ids: list[str] = []
    for start in range(0, count, _BATCH):
        size = min(_BATCH, count - start)
        queue = QUEUES[(start // _BATCH) % len(QUEUES)]
        subs = producer.submit_many(configs[:size], queue=queue)
        job_ids.extend(s.job_id for s in subs)
    for name in QUEUES:
        queue = Queue(name, connection=conn, serializer=JSONSerializer)
        finished = FinishedJobRegistry(name, conn, serializer=JSONSerializer)
        moved = queue.get_job_ids()[::3]
        with conn.pipeline() as pipe:
            for job_id in moved:
                pipe.lrem(queue.key, 1, job_id)
                pipe.zadd(finished.key, {job_id: time.time() + 3600})
                pipe.hset(f"rq:job:{job_id}", "status", "finished")
            pipe.execute()
    return job_ids


def run(smoke: bool) -> BenchResult:
    count, rounds = (600, 3) if smoke else (20_000, 5)
    started = time.perf_counter()
    with redis_url() as url:
        conn = redis.Redis.from_url(url)
        reset(conn)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        needle = producer.submit(distinct_configs(1)[0], source="needle-config.json").job_id  # the oldest
        job_ids = _fill(conn, producer, count)
        newest = job_ids[-1]
        deep = count // 2
        member, score = conn.zrevrange(jobs_index_key(None), deep - 1, deep - 1, withscores=True)[0]
        cursor = f"{int(score)}:{member.decode()}"
        producer.list_page(limit=1)  # the one-time backfill check, and warm connections
        seen: dict[str, Any] = {}

        def timed(name: str, action: Any) -> Any:
            def run_once() -> float:
                begun = time.perf_counter()
                result = action()
                elapsed = time.perf_counter() - begun
                seen[name] = result
                return elapsed

            return run_once

        variants = {
            "index: first page": timed("index first", lambda: producer.list_jobs(limit=PAGE)),
            "old walk: first page": timed("old first", lambda: old_walk(producer, PAGE)),
            "index: deep page (cursor)": timed(
                "index deep", lambda: producer.list_jobs(limit=PAGE, cursor=cursor)
            ),
            "old walk: deep page (slice)": timed("old deep", lambda: old_walk(producer, PAGE, deep)),
            "index: --grep, 1 match": timed("grep", lambda: producer.list_jobs(limit=PAGE, grep="needle")),
            "index: --status finished": timed(
                "finished", lambda: producer.list_jobs(limit=PAGE, status="finished")
            ),
            "index: --status failed, 0 match": timed(
                "none", lambda: producer.list_jobs(limit=PAGE, status="failed")
            ),
            "short id (8 chars) resolve": timed("resolve", lambda: producer.resolve_job_id(newest[:8])),
        }
        raw = interleave(variants, rounds)
        reset(conn)
    times = {name: median(values) for name, values in raw.items()}
    if [v.job_id for v in seen["grep"]] != [needle]:
        raise RuntimeError(f"--grep found {len(seen['grep'])} jobs, expected the one")
    newest_first = {
        "index": seen["index first"][0].job_id == newest,
        "old walk": any(v.job_id == newest for v in seen["old first"]),
    }
    rows = [[name, times[name] * 1000] for name in variants]
    first_ratio = times["old walk: first page"] / times["index: first page"]
    deep_ratio = times["index: deep page (cursor)"] / times["index: first page"]
    notes = [
        f"newest job on the first page: index {'yes' if newest_first['index'] else 'NO'}, "
        f"old walk {'yes' if newest_first['old walk'] else 'no'}",
        f"old walk / index, first page: {first_ratio:.1f}x; index deep page / first page: {deep_ratio:.2f}x",
        "with no match, --grep reads every job's text (an HMGET per batch) and --status walks the "
        "whole index against RQ's list or registry: the worst cases",
    ]
    return BenchResult(
        name=NAME,
        title=f"6. list: {count:,} jobs, a page of {PAGE}, the time index vs the old walk",
        params={"jobs": count, "rounds": rounds, "page": PAGE},
        header=["variant", "ms (median)"],
        rows=rows,
        targets=[
            Target("old walk / index, first page", first_ratio, 2.0, ">="),
            Target("index deep page / first page", deep_ratio, 2.0, "<="),
            Target("newest job on the first page", 1.0 if newest_first["index"] else 0.0, 1.0, ">=", ""),
        ],
        notes=notes,
        raw={"seconds": raw, "newest_first": newest_first},
        seconds=time.perf_counter() - started,
    )
