"""A fleet of N hosts, K checkpoints, plans submitted interleaved: model-aware dispatch against FIFO.

Each host is a real ``stablenew worker`` process with its own simulated WebUI, which swaps
checkpoints like A1111 (a swap costs ``swap`` seconds, 5x a generation). Per fleet size, three
runs on fresh hosts (each WebUI starts with the first checkpoint loaded):

- *one checkpoint*: the same number of plans, all for the loaded checkpoint (no swap at all);
- *affinity*: the K checkpoints interleaved (plan i asks for checkpoint i mod K), our dispatch;
- *FIFO*: the same plans, the same workers with ``STABLENEW_AFFINITY_MAX_WAIT=0``.

The lower bound is the one-checkpoint makespan plus the K-1 swaps no schedule avoids, spread over
the hosts: ``one_checkpoint + (K - 1) * swap / N``. Makespan runs from the submit to the last plan
finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Worker
from rq.serializers import JSONSerializer

from bench.environment import REPO, STABLENEW, process_env, redis_url, reset, scratch_dir
from bench.harness import BenchResult, Target
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

NAME = "fleet_affinity"
MAKESPAN_VS_BOUND = 1.15
FIFO_VS_AFFINITY = 2.5


def _checkpoints(k: int) -> list[str]:
    return [f"fleet_{chr(ord('a') + i)}.safetensors" for i in range(k)]


def _config(model: str, index: int) -> dict[str, Any]:
    section = {
        "prompt": f"plan {index}",
        "width": 64,
        "height": 64,
        "steps": 2,
        "seed": index,
        "model": model,
    }
    return {"txt2img_enabled": True, "txt2img_config": section}


class _Fleet:
    """N worker processes, each with its own simulated WebUI, started fresh for one run."""

    def __init__(self, url: str, root: Path, n: int, models: list[str], gen: float, swap: float, **env: str):
        self.sims = [
            SimulatedWebUI(port=0, models=models, latency=gen, swap_seconds=swap, keep_requests=False).start()
            for _ in range(n)
        ]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.names: list[str] = []
        for i, sim in enumerate(self.sims):
            name = f"fleet-{i}-{uuid.uuid4().hex[:6]}"
            log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
            self.logs.append(log)
            extra = {f"STABLENEW_{k.upper()}": v for k, v in env.items()}
            proc_env = process_env(url, sim.url, root / "out", STABLENEW_PROGRESS_INTERVAL="0.1", **extra)
            self.procs.append(
                subprocess.Popen(
                    [STABLENEW, "worker", "--name", name],
                    cwd=REPO,
                    env=proc_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            self.names.append(name)

    def wait_ready(self, conn: redis.Redis, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            registered = {w.name for w in Worker.all(connection=conn, serializer=JSONSerializer)}
            if set(self.names) <= registered:
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.05)
        raise RuntimeError("fleet workers did not start")

    @property
    def swaps(self) -> int:
        return sum(sim.swaps for sim in self.sims)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()
        for sim in self.sims:
            sim.stop()


def _wait_finished(conn: redis.Redis, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = [s.decode() if s else "" for s in pipe.execute()]
        if any(s in ("failed", "stopped", "canceled") for s in statuses):
            raise RuntimeError(f"a plan did not finish: {statuses}")
        if all(s == "finished" for s in statuses):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{len(ids)} plans not finished in {timeout:.0f} s")


def _run_once(
    url: str, root: Path, n: int, models: list[str], plans: list[str], gen: float, swap: float, max_wait: str
) -> dict[str, float]:
    conn = redis.Redis.from_url(url)
    reset(conn)
    (root / "out").mkdir(exist_ok=True)
    fleet = _Fleet(url, root, n, models, gen, swap, affinity_max_wait=max_wait)
    try:
        fleet.wait_ready(conn)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        configs = [_config(model, i) for i, model in enumerate(plans)]
        started = time.monotonic()
        ids = [s.job_id for s in producer.submit_many(configs)]
        _wait_finished(conn, ids, timeout=60 + len(plans) * (gen + swap) * 2)
        makespan = time.monotonic() - started
        return {"makespan_s": makespan, "swaps": fleet.swaps}
    finally:
        fleet.stop()
        conn.close()


def run(smoke: bool) -> BenchResult:
    t0 = time.perf_counter()
    k = 2 if smoke else 4
    gen = 0.05 if smoke else 0.4
    swap = 5 * gen
    fleets = [2] if smoke else [2, 4]
    per_host = 2 if smoke else 16
    models = _checkpoints(k)
    rows: list[list[Any]] = []
    targets: list[Target] = []
    raw: dict[str, Any] = {}
    with redis_url() as url, scratch_dir("fleet") as root:
        for n in fleets:
            count = per_host * n
            interleaved = [models[i % k] for i in range(count)]
            if smoke:  # start-up dominates a tiny run: the one-checkpoint makespan as computed
                one = {"makespan_s": count / n * gen, "swaps": 0}
            else:
                one = _run_once(url, root, n, models, [models[0]] * count, gen, swap, "300")
            ours = _run_once(url, root, n, models, interleaved, gen, swap, "300")
            fifo = _run_once(url, root, n, models, interleaved, gen, swap, "0")
            bound = one["makespan_s"] + (k - 1) * swap / n
            raw[f"n{n}"] = {
                "plans": count,
                "one_checkpoint": one,
                "affinity": ours,
                "fifo": fifo,
                "bound_s": bound,
            }
            for label, figures in (("one checkpoint", one), ("affinity", ours), ("FIFO (max wait 0)", fifo)):
                rows.append(
                    [
                        f"N={n}: {label}",
                        count,
                        int(figures["swaps"]),
                        figures["makespan_s"],
                        figures["makespan_s"] / bound,
                    ]
                )
            targets += [
                Target(
                    f"N={n}: affinity makespan / lower bound",
                    ours["makespan_s"] / bound,
                    MAKESPAN_VS_BOUND,
                    "<=",
                ),
                Target(f"N={n}: affinity swaps", float(ours["swaps"]), float(k - 1 + n), "<=", unit=""),
                Target(
                    f"N={n}: FIFO makespan / affinity makespan",
                    fifo["makespan_s"] / ours["makespan_s"],
                    FIFO_VS_AFFINITY,
                    ">=",
                ),
            ]
            rows.append([f"N={n}: lower bound", count, k - 1, bound, 1.0])
    return BenchResult(
        name=NAME,
        title="fleet: model-aware dispatch vs FIFO (hosts x checkpoints, interleaved plans)",
        params={"K": k, "generation_s": gen, "swap_s": swap, "plans_per_host": per_host, "hosts": fleets},
        header=["run", "plans", "swaps", "makespan s", "x bound"],
        rows=rows,
        targets=targets,
        raw=raw,
        notes=[
            "lower bound = one-checkpoint makespan + (K-1) swaps / N; each run on fresh hosts holding checkpoint 1",
        ],
        seconds=time.perf_counter() - t0,
    )
