"""Benchmark 7: ``rerun`` with only the ADetailer denoise changed, against the ADetailer stage alone.

A real ``stablenew worker`` runs the four-stage example (1024 -> img2img -> x2 -> ADetailer on
2048x2048, realistic PNG sizes) on the bench WebUI with every generation taking ``LATENCY`` seconds,
as a GPU would. Then, in interleaved rounds (each with a new denoise, so the ADetailer stage is never
itself reused):

- **rerun**: ``Producer.rerun(job, {"adetailer_config.adetailer_denoise": d})`` until the new job is
  finished: validation, enqueue, dequeue, the three reused stages (looked up, sha256-checked, linked)
  and the ADetailer call;
- **alone**: the same ADetailer request (captured from the first run, denoise changed) posted
  straight to the WebUI with ``requests``: what the stage costs by itself.

Targets: rerun / alone <= 1.1 (median of per-round ratios), and exactly one WebUI generation call per
rerun (the first run made four). Each round's ratio is printed too: on a shared machine one round
can land in a burst of load on either side.
"""

from __future__ import annotations

import copy
import subprocess
import time
import uuid

import redis
import requests

from bench.environment import (
    STABLENEW,
    BenchWebUI,
    four_stage_config,
    process_env,
    redis_url,
    reset,
    scratch_dir,
)
from bench.harness import BenchResult, Target, interleave, median
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings

NAME = "rerun_reuse"
DENOISE = "adetailer_config.adetailer_denoise"
GENERATION_POSTS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image")


def _generation_calls(sim: BenchWebUI, since: float) -> int:
    return sum(
        1 for r in sim.requests if r.method == "POST" and r.path in GENERATION_POSTS and r.time >= since
    )


def _finished(producer: Producer, job_id: str, timeout: float = 300.0) -> float:
    """Wait until ``job_id`` ends; return when it was seen finished (``time.perf_counter``)."""
    deadline = time.monotonic() + timeout
    while True:
        view = producer.status(job_id)
        if view.done:
            if view.status != "finished":
                raise RuntimeError(f"job {job_id} ended {view.status}: {view.error}")
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not done in {timeout:.0f} s")
        time.sleep(0.01)


def run(smoke: bool) -> BenchResult:
    latency = 0.3 if smoke else 3.0
    rounds = 2 if smoke else 6
    started = time.perf_counter()
    with redis_url() as url, BenchWebUI() as sim, scratch_dir("rerun") as root:
        conn = redis.Redis.from_url(url)
        reset(conn)
        producer = Producer(conn, Settings(result_ttl=3600, failure_ttl=3600))
        env = process_env(url, sim.url, root / "out")
        log = open(root / "worker.log", "wb")  # noqa: SIM115 - closed below
        worker = subprocess.Popen(
            [STABLENEW, "worker", "default", "--name", f"bench-{uuid.uuid4().hex[:8]}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            sim.set_latency(latency)
            sim.keep_bodies = True
            t0 = time.perf_counter()
            first = producer.submit(four_stage_config()).job_id
            full_s = _finished(producer, first) - t0
            sim.keep_bodies = False
            first_calls = [r for r in sim.requests if r.method == "POST" and r.path in GENERATION_POSTS]
            adetailer = copy.deepcopy(first_calls[-1].body)
            denoise = iter([0.30 + 0.01 * i for i in range(2 * rounds)])
            calls: list[int] = []

            def rerun() -> float:
                since = time.time()
                begin = time.perf_counter()
                job = producer.rerun(first, {DENOISE: round(next(denoise), 2)}).job_id
                elapsed = _finished(producer, job) - begin
                calls.append(_generation_calls(sim, since))
                return elapsed

            def alone() -> float:
                body = copy.deepcopy(adetailer)
                body["alwayson_scripts"]["ADetailer"]["args"][2]["ad_denoising_strength"] = round(
                    next(denoise), 2
                )
                begin = time.perf_counter()
                answer = requests.post(sim.url + "/sdapi/v1/img2img", json=body, timeout=300)
                answer.raise_for_status()
                return time.perf_counter() - begin

            times = interleave({"rerun": rerun, "alone": alone}, rounds)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
    ratios = [r / a for r, a in zip(times["rerun"], times["alone"], strict=True)]
    ratio = median(ratios)
    rows = [
        ["first run: four stages", f"{full_s:.2f}", len(first_calls)],
        ["rerun, ADetailer denoise changed (median)", f"{median(times['rerun']):.2f}", max(calls)],
        ["the ADetailer request alone (median)", f"{median(times['alone']):.2f}", 1],
    ]
    return BenchResult(
        name=NAME,
        title="rerun over the ADetailer stage alone",
        params={"latency_s": latency, "rounds": rounds},
        header=["variant", "s", "WebUI generation calls"],
        rows=rows,
        targets=[
            Target("rerun / ADetailer stage alone", ratio, 1.1, "<="),
            Target("WebUI generation calls per rerun", float(max(calls)), 1, "<=", unit=" calls"),
        ],
        raw={"full_s": full_s, "rerun_s": times["rerun"], "alone_s": times["alone"], "calls": calls},
        notes=["rerun / alone, round by round: " + ", ".join(f"{r:.3f}" for r in ratios)],
        seconds=time.perf_counter() - started,
    )
