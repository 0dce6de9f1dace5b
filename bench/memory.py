"""Benchmark 4: memory. Peak RSS of the process running one four-stage plan whose last image is
4096x4096 (txt2img 1024 -> img2img -> upscale x4 -> ADetailer on 4096x4096), above its RSS just
before the job, as a multiple of the largest image's base64 size.

Method: a child process builds what ``stablenew worker`` builds (it imports the worker module,
connects to Redis and makes the worker with ``make_worker``), but with RQ's ``SimpleWorker``, so
the job runs in that process instead of a forked work horse (a horse is a copy of its parent, so
the baseline is the same). It records ``VmRSS`` from ``/proc/self/status``, resets the peak
(``echo 5 > /proc/self/clear_refs`` resets ``VmHWM``), works the queue in burst mode, then reads
``VmHWM``. Excess = VmHWM - VmRSS before. For comparison the "plain" variant makes the same four
calls with plain ``requests`` in a fresh process, measured the same way: what any Python client
holding JSON-in-memory responses pays.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.environment import (
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
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings

NAME = "memory"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(argv: list[str]) -> None:
    """``python -m bench.memory ours|plain WEBUI BODIES OUT``: run one plan, print RSS figures (kB)."""
    variant, webui, bodies_file, out = argv
    if variant == "ours":
        from rq import SimpleWorker

        from stablenew.jobs import job_run  # noqa: F401  # loaded before the run, as the CLI does
        from stablenew.jobs.connection import connect
        from stablenew.jobs.rq_classes import make_worker
        from stablenew.settings import Settings as WorkerSettings

        settings = WorkerSettings()
        worker = make_worker(
            connect(settings.redis_url.get_secret_value()), ["default"], worker_class=SimpleWorker
        )

        def work() -> None:
            worker.work(burst=True, logging_level="WARNING")

    else:
        import requests

        from bench.baseline_job import four_calls

        bodies = json.loads(Path(bodies_file).read_text())
        session = requests.Session()

        def work() -> None:
            four_calls(session, webui, bodies, out)

    gc.collect()
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    work()
    peak = _status_kb("VmHWM")
    print(json.dumps({"rss_before_kb": before, "peak_kb": peak, "rss_after_kb": _status_kb("VmRSS")}))


def run(smoke: bool) -> BenchResult:
    upscale, rounds = (2.0, 1) if smoke else (4.0, 3)
    started = time.perf_counter()
    config = four_stage_config(upscale=upscale)
    with redis_url() as url, BenchWebUI() as sim, scratch_dir(NAME) as root:
        conn = redis.Redis.from_url(url)
        out = root / "out"
        out.mkdir()
        bodies_file = root / "bodies.json"
        env = process_env(url, sim.url, out)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        largest = {"png_bytes": 0}

        def measure(variant: str) -> dict[str, Any]:
            reset(conn)
            if variant == "ours":
                producer.submit(config, reuse=False)
            argv = [
                sys.executable,
                "-m",
                "bench.memory",
                variant,
                sim.url,
                str(bodies_file),
                str(out / "plain"),
            ]
            result: dict[str, Any] = json.loads(run_process(argv, env, timeout=300, what=f"memory {variant}"))
            if variant == "ours":
                finished = FinishedJobRegistry(
                    queue=Queue("default", connection=conn, serializer=JSONSerializer)
                )
                if finished.count != 1:
                    raise RuntimeError("memory: the plan did not finish")
            sizes = [p.stat().st_size for p in out.rglob("*.png")]
            largest["png_bytes"] = max(largest["png_bytes"], *sizes)
            empty_dir(out)
            result["excess_kb"] = result["peak_kb"] - result["rss_before_kb"]
            return result

        sim.keep_bodies = True  # warm-up: renders every image and captures the calls "plain" repeats
        measure("ours")
        bodies_file.write_text(json.dumps(bodies_from(sim.requests)))
        sim.keep_bodies = False
        sim.clear_requests()
        raw = interleave({"ours": lambda: measure("ours"), "plain": lambda: measure("plain")}, rounds)
    b64_bytes = (largest["png_bytes"] + 2) // 3 * 4
    excess = {name: median([r["excess_kb"] for r in runs]) * 1024 for name, runs in raw.items()}
    before = {name: median([r["rss_before_kb"] for r in runs]) * 1024 for name, runs in raw.items()}
    rows = [
        [
            label,
            before[name] / 1e6,
            (before[name] + excess[name]) / 1e6,
            excess[name] / 1e6,
            excess[name] / b64_bytes,
        ]
        for name, label in (
            ("ours", "ours: stablenew worker (SimpleWorker)"),
            ("plain", "plain requests, same calls"),
        )
    ]
    side = int(1024 * upscale)
    return BenchResult(
        name=NAME,
        title=f"4. memory: peak RSS running one four-stage plan ending at {side}x{side}",
        params={
            "rounds": rounds,
            "last_image": f"{side}x{side}",
            "largest_b64_mb": round(b64_bytes / 1e6, 1),
        },
        header=["variant", "RSS before MB", "peak MB", "excess MB", "x largest b64"],
        rows=rows,
        targets=[
            Target("our excess peak RSS / largest image's base64", excess["ours"] / b64_bytes, 3.0, "<=")
        ],
        raw={"runs": raw, "largest_png_bytes": largest["png_bytes"], "largest_b64_bytes": b64_bytes},
        notes=[f"largest image: {largest['png_bytes'] / 1e6:.1f} MB PNG, {b64_bytes / 1e6:.1f} MB base64"],
        seconds=time.perf_counter() - started,
    )


if __name__ == "__main__":
    child(sys.argv[1:])
