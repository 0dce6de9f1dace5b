"""Benchmark 5: start-up. Wall time of ``stablenew --help``, and from launching
``stablenew worker --burst`` to the first HTTP call of its first job at the simulator.

``--help`` runs against ``python -c pass`` (the interpreter's own start-up, the floor). For the
worker, the database is emptied (so no inventory is cached: the job's first call is its
preflight, as on a fresh host), one four-stage plan is queued, and ``time.time()`` just before launch is compared with the
simulator's ``RecordedRequest.time`` (also ``time.time()``, same clock) of the first request that
is not the worker's own start-up ping (``GET /sdapi/v1/memory``). The plain ``rq worker`` running
the baseline job is timed the same way, for comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.environment import (
    REPO,
    STABLENEW,
    BenchWebUI,
    bodies_from,
    empty_dir,
    four_stage_config,
    process_env,
    redis_url,
    reset,
    run_process,
    scratch_dir,
)
from bench.harness import BenchResult, Target, interleave, median
from bench.worker_overhead import RQ
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings

NAME = "startup"
_PING = ("GET", "/sdapi/v1/memory")


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def run(smoke: bool) -> BenchResult:
    help_reps, worker_rounds = (3, 1) if smoke else (15, 5)
    started = time.perf_counter()
    env = dict(os.environ)
    helps = interleave(
        {
            "help": lambda: _wall([STABLENEW, "--help"], env),
            "python": lambda: _wall([sys.executable, "-c", "pass"], env),
        },
        help_reps,
    )
    with redis_url() as url, BenchWebUI() as sim, scratch_dir(NAME) as root:
        conn = redis.Redis.from_url(url)
        out = root / "out"
        out.mkdir()
        worker_env = process_env(url, sim.url, out)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        bodies: list[dict[str, Any]] = []

        def first_call(argv: list[str], enqueue: Any) -> dict[str, float]:
            reset(conn)
            enqueue()
            sim.clear_requests()
            launched = time.time()
            run_process(argv, worker_env, timeout=120, what=argv[1])
            ended = time.time()
            calls = [r for r in sim.requests if (r.method, r.path) != _PING]
            posts = [r for r in calls if r.method == "POST"]
            empty_dir(out)
            if not posts:
                raise RuntimeError(f"{argv[1]}: its job made no call")
            return {
                "first_call_s": calls[0].time - launched,
                "first_post_s": posts[0].time - launched,
                "wall_s": ended - launched,
            }

        def ours() -> dict[str, float]:
            def enqueue() -> None:
                producer.submit(four_stage_config(), reuse=False)

            argv = [STABLENEW, "worker", "default", "--burst", "--name", f"bench-{uuid.uuid4().hex[:8]}"]
            return first_call(argv, enqueue)

        def plain_rq() -> dict[str, float]:
            def enqueue() -> None:
                queue = Queue("default", connection=conn, serializer=JSONSerializer)
                queue.enqueue(
                    "bench.baseline_job.run", sim.url, bodies, str(out / "plain"), description="bench"
                )

            argv = [
                RQ,
                "worker",
                "--burst",
                "-S",
                "json",
                "--with-scheduler",
                "-c",
                "bench.baseline_job",
                "-u",
                url,
                "default",
            ]
            return first_call(argv, enqueue)

        sim.keep_bodies = True  # warm-up: renders the images and captures the baseline's calls
        ours()
        bodies.extend(bodies_from(sim.requests))
        sim.keep_bodies = False
        plain_rq()
        workers = interleave({"ours": ours, "rq": plain_rq}, worker_rounds)
    help_s, python_s = median(helps["help"]), median(helps["python"])
    first = {name: median([r["first_call_s"] for r in runs]) for name, runs in workers.items()}
    post = {name: median([r["first_post_s"] for r in runs]) for name, runs in workers.items()}
    rows = [
        ["stablenew --help", help_s, help_s - python_s, ""],
        ["python -c pass (floor)", python_s, 0.0, ""],
        [
            "stablenew worker --burst: launch -> first job call",
            first["ours"],
            first["ours"] - first["rq"],
            post["ours"],
        ],
        ["rq worker --burst (baseline job): same", first["rq"], 0.0, post["rq"]],
    ]
    return BenchResult(
        name=NAME,
        title="5. start-up: CLI --help and worker launch to its first job's first HTTP call",
        params={
            "help_reps": help_reps,
            "worker_rounds": worker_rounds,
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        },
        header=["what", "s (median)", "s over floor", "s to first POST"],
        rows=rows,
        targets=[
            Target("stablenew --help wall time", help_s, 0.3, "<=", " s"),
            Target("worker launch -> first job's first HTTP call", first["ours"], 1.5, "<=", " s"),
        ],
        raw={"help": helps, "workers": workers},
        notes=[
            "the rq row's first call is its txt2img (it does no preflight); ours is the preflight's first GET",
        ],
        seconds=time.perf_counter() - started,
    )
