"""Benchmark 2: submit throughput. ``Producer.submit`` / ``submit_many`` of full configs against raw
RQ ``Queue.enqueue`` / ``enqueue_many`` of a no-op function with a JSON argument of the same size.

The configs are the four-stage example, each with its own prompt and seed. The raw baseline's
argument is the very plan JSON our producer enqueues for that config (built before timing), on a
queue with the same JSON serializer; ``enqueue_many`` runs in one pipeline, as ``submit_many``
does. Our numbers include everything a GUI waits for: validation, planning, the ADetailer tab
checks, serialization and the enqueue. The database is emptied between runs (outside the timing).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.environment import distinct_configs, redis_url, reset
from bench.harness import BenchResult, Target, interleave, median
from stablenew.jobs.producer import Producer, build_checked_plan
from stablenew.settings import Settings

NAME = "submit_throughput"
NOOP = "bench.baseline_job.noop"


def run(smoke: bool) -> BenchResult:
    count, rounds = (50, 1) if smoke else (2000, 5)
    started = time.perf_counter()
    configs = distinct_configs(count)
    plan_jsons = [build_checked_plan(c).to_json() for c in configs]
    with redis_url() as url:
        conn = redis.Redis.from_url(url)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        queue = Queue("default", connection=conn, serializer=JSONSerializer)

        def timed(action: Any) -> float:
            reset(conn)
            begun = time.perf_counter()
            action()
            elapsed = time.perf_counter() - begun
            if queue.count != count:
                raise RuntimeError(f"expected {count} queued jobs, found {queue.count}")
            return elapsed

        def submit() -> None:
            for config in configs:
                producer.submit(config)

        def enqueue() -> None:
            for plan_json in plan_jsons:
                queue.enqueue(NOOP, plan_json)

        def submit_many() -> None:
            producer.submit_many(configs)

        def enqueue_many() -> None:
            datas = [Queue.prepare_data(NOOP, args=(plan_json,)) for plan_json in plan_jsons]
            with conn.pipeline() as pipe:
                queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()

        def validate_only() -> float:
            begun = time.perf_counter()
            for config in configs:
                build_checked_plan(config)
            return time.perf_counter() - begun

        variants = {
            "submit": submit,
            "enqueue": enqueue,
            "submit_many": submit_many,
            "enqueue_many": enqueue_many,
        }
        timed(submit_many)  # warm-up: imports, connection, pydantic's first validations
        runs: dict[str, Any] = {
            name: lambda action=action: timed(action) for name, action in variants.items()
        }
        raw = interleave({**runs, "validate": validate_only}, rounds)
        reset(conn)

    def paired(top: str, bottom: str) -> float:
        """Median over rounds of the jobs/s ratio top/bottom (= time ratio bottom/top)."""
        return median([b / t for t, b in zip(raw[top], raw[bottom], strict=True)])

    rate = {name: count / median(times) for name, times in raw.items()}
    us = {name: median(times) / count * 1e6 for name, times in raw.items()}
    ratio = {
        "submit/enqueue": paired("submit", "enqueue"),
        "submit_many/enqueue_many": paired("submit_many", "enqueue_many"),
        "submit_many/submit": paired("submit_many", "submit"),
        "enqueue_many/enqueue": paired("enqueue_many", "enqueue"),
    }
    rows = [
        ["Producer.submit, one by one", rate["submit"], us["submit"], ratio["submit/enqueue"]],
        ["raw Queue.enqueue, one by one", rate["enqueue"], us["enqueue"], 1.0],
        ["Producer.submit_many", rate["submit_many"], us["submit_many"], ratio["submit_many/enqueue_many"]],
        ["raw Queue.enqueue_many (pipeline)", rate["enqueue_many"], us["enqueue_many"], 1.0],
        ["  part: build_checked_plan alone (no Redis)", rate["validate"], us["validate"], ""],
    ]
    notes = [
        "x raw: median of the per-round ratios; jobs/s and us/job: medians",
        f"raw RQ's own batching gain, enqueue_many / enqueue = {ratio['enqueue_many/enqueue']:.2f}x: the "
        f"ceiling of submit_many / submit when both add the same per-job work (ours: "
        f"{ratio['submit_many/submit']:.2f}x)",
    ]
    return BenchResult(
        name=NAME,
        title="2. submit throughput: full four-stage configs vs raw RQ enqueue of the same-size JSON",
        params={"jobs": count, "rounds": rounds, "plan_json_bytes": len(plan_jsons[0])},
        header=["variant", "jobs/s", "us/job", "x raw"],
        rows=rows,
        targets=[
            Target("submit / raw enqueue (jobs/s)", ratio["submit/enqueue"], 0.6, ">="),
            Target("submit_many / raw enqueue_many (jobs/s)", ratio["submit_many/enqueue_many"], 0.6, ">="),
            Target("submit_many / our submit one by one (jobs/s)", ratio["submit_many/submit"], 4.0, ">="),
        ],
        notes=notes,
        raw={"seconds": raw, "jobs_per_s": rate, "ratios": ratio},
        seconds=time.perf_counter() - started,
    )
