"""Benchmark 1: worker overhead. N four-stage plans through one ``stablenew worker`` process
against (a) the same four HTTP calls as a minimal job run by the plain RQ worker and (b) a plain loop.

Sizes: txt2img 1024x1024 -> img2img 1024x1024 -> upscale x2 -> ADetailer on 2048x2048 (PNG bytes
1.75, 1.75, 7.0 and 7.0 MB). The bodies of (a) and (b) are the ones our worker sent, captured by
the simulator in a warm-up, so all three make byte-identical calls and get byte-identical answers.

Interleaving: the three processes are started once and live for the whole benchmark, each
processing N plans in all, fed in batches in turn (ours, a, b, ours, a, b, ...): this machine's
load drifts within seconds, so batches of ~10 s compare each variant with its neighbours in
time, where whole-N runs (minutes each) would compare different machine states. The workers
therefore run without ``--burst``, which would end them whenever their queue is empty; the job
path is the same (start-up is benchmark 5's subject), and they stop with SIGTERM at the end.

Time per plan of a batch = (its last plan's txt2img arrival - its first's) / (batch - 1), on the
simulator's clock: batch - 1 whole plan cycles, with everything between two plans (dequeue, fork,
state, outputs, result). Ratios are taken per round (a batch of each variant) and their median is
reported. (a) runs ``rq worker -S json --with-scheduler``: the same RQ ``Worker`` class, the same
serializer and the scheduler ours always runs, so ours - (a) is what our code adds.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
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
    scratch_dir,
    tree_bytes,
)
from bench.harness import BenchResult, Target, interleave, median
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings

NAME = "worker_overhead"
STAGES = 4
RQ = str(Path(sys.executable).with_name("rq"))
_TICKS = os.sysconf("SC_CLK_TCK")


class _Processes:
    """The three long-lived variants and how to feed each one batch."""

    def __init__(self, url: str, sim: BenchWebUI, root: Path, batch_timeout: float) -> None:
        self.url, self.sim, self.root, self.batch_timeout = url, sim, root, batch_timeout
        self.conn = redis.Redis.from_url(url)
        self.producer = Producer(self.conn, Settings(result_ttl=3600, failure_ttl=3600))
        self.bodies_file = root / "bodies.json"
        self.out = root / "out"
        self.out.mkdir()
        self.env = process_env(url, sim.url, self.out)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cpu_marks: dict[str, list[float]] = {}
        self.logs: list[Any] = []
        self.done = {"ours": 0, "a": 0}
        self.queues = {
            "ours": Queue("default", connection=self.conn, serializer=JSONSerializer),
            "a": Queue("bench", connection=self.conn, serializer=JSONSerializer),
        }

    def start(self, name: str, argv: list[str], **kwargs: Any) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            argv, cwd=REPO, env=self.env, stderr=log, start_new_session=True, **kwargs
        )

    def start_workers(self) -> None:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.start("ours", [STABLENEW, "worker", "default", "--name", name], stdout=subprocess.DEVNULL)

    def start_baselines(self) -> None:
        argv = [RQ, "worker", "-S", "json", "--with-scheduler", "-c", "bench.baseline_job", "-u", self.url]
        self.start("a", [*argv, "bench"], stdout=subprocess.DEVNULL)
        floor = [sys.executable, "-m", "bench.floor", self.sim.url, str(self.bodies_file)]
        self.start("b", floor, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            if name == "b" and proc.stdin:
                proc.stdin.close()
            else:
                proc.send_signal(signal.SIGTERM)  # RQ's warm shut-down
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()

    def _log_tail(self, name: str) -> str:
        return (self.root / f"{name}.log").read_bytes().decode(errors="replace")[-3000:]

    def _wait_rq(self, name: str, count: int) -> None:
        queue, proc = self.queues[name], self.procs[name]
        self.done[name] += count
        deadline = time.monotonic() + self.batch_timeout
        while FinishedJobRegistry(queue=queue).count < self.done[name]:
            if FailedJobRegistry(queue=queue).count or proc.poll() is not None:
                raise RuntimeError(f"{name}: a plan failed or the worker died:\n{self._log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: batch of {count} plans not done in {self.batch_timeout:.0f} s")
            time.sleep(0.025)

    def feed(self, name: str, count: int) -> None:
        """Run one batch of ``count`` plans through variant ``name``; return when all are done."""
        if name == "ours":
            self.producer.submit_many([four_stage_config()] * count, reuse=False)  # every plan on the WebUI
            self._wait_rq(name, count)
        elif name == "a":
            bodies = json.loads(self.bodies_file.read_text())
            datas = [
                Queue.prepare_data(
                    "bench.baseline_job.run",
                    args=(self.sim.url, bodies, str(self.out / f"plan-{i}")),
                    result_ttl=3600,
                    description="bench baseline plan",
                )
                for i in range(count)
            ]
            with self.conn.pipeline() as pipe:
                self.queues["a"].enqueue_many(datas, pipeline=pipe)
                pipe.execute()
            self._wait_rq(name, count)
        else:
            proc = self.procs["b"]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{count} {self.out}\n".encode())
            proc.stdin.flush()
            if not proc.stdout.readline():
                raise RuntimeError(f"floor loop died:\n{self._log_tail('b')}")

    def cpu_seconds(self, name: str) -> float:
        """CPU time of variant ``name``'s process and its reaped children (work horses), from /proc."""
        stat = Path(f"/proc/{self.procs[name].pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return sum(int(v) for v in fields[11:15]) / _TICKS

    def batch(self, name: str, count: int) -> dict[str, Any]:
        self.sim.clear_requests()
        self.cpu_marks.setdefault(name, []).append(self.cpu_seconds(name))
        self.feed(name, count)
        starts = self.sim.times("POST", "/sdapi/v1/txt2img")
        if len(starts) != count:
            raise RuntimeError(f"{name}: the simulator saw {len(starts)} txt2img calls for {count} plans")
        files, size = tree_bytes(self.out)
        empty_dir(self.out)
        return {
            "per_plan_s": (starts[-1] - starts[0]) / (count - 1),
            "span_s": starts[-1] - starts[0],
            "files": files,
            "bytes": size,
        }

    def capture_bodies(self) -> None:
        """Two plans through our worker with bodies kept: the calls (a) and (b) will repeat."""
        self.sim.keep_bodies = True
        try:
            self.batch("ours", 2)
            self.bodies_file.write_text(json.dumps(bodies_from(self.sim.requests, STAGES)))
        finally:
            self.sim.keep_bodies = False
            self.sim.clear_requests()


def run(smoke: bool) -> BenchResult:
    rounds, size = (1, 3) if smoke else (20, 10)
    count = rounds * size
    started = time.perf_counter()
    with redis_url() as url, BenchWebUI() as sim, scratch_dir(NAME) as root:
        procs = _Processes(url, sim, root, batch_timeout=120 + 10 * size)
        try:
            procs.start_workers()
            procs.capture_bodies()  # also the warm-up of ours, and renders every image size
            procs.start_baselines()
            for warm in ("a", "b"):
                procs.batch(warm, 2)
            raw = interleave(
                {name: lambda name=name: procs.batch(name, size) for name in ("ours", "a", "b")}, rounds
            )
            time.sleep(0.5)  # let the last work horses be reaped, so that their CPU time is counted
            cpu = {}
            for name, marks in procs.cpu_marks.items():
                marks = [*marks[-rounds:], procs.cpu_seconds(name)]
                cpu[name] = [(after - before) / size for before, after in itertools.pairwise(marks)]
        finally:
            procs.stop()
    per = {name: [r["per_plan_s"] for r in batches] for name, batches in raw.items()}
    pooled = {name: sum(r["span_s"] for r in b) / (len(b) * (size - 1)) for name, b in raw.items()}
    med = {name: median(values) for name, values in per.items()}
    ratio = {
        "ours/a": median([o / a for o, a in zip(per["ours"], per["a"], strict=True)]),
        "ours/b": median([o / b for o, b in zip(per["ours"], per["b"], strict=True)]),
        "a/b": median([a / b for a, b in zip(per["a"], per["b"], strict=True)]),
    }
    added_ms = median([(o - a) * 1000 for o, a in zip(per["ours"], per["a"], strict=True)])
    written = {name: sorted({(r["files"], r["bytes"]) for r in batches}) for name, batches in raw.items()}
    cpu_med = {name: median(values) for name, values in cpu.items()}
    rows = [
        [
            "ours: stablenew worker",
            med["ours"] * 1000,
            pooled["ours"] * 1000,
            ratio["ours/b"],
            cpu_med["ours"] * 1000,
        ],
        [
            "(a) rq worker + minimal job",
            med["a"] * 1000,
            pooled["a"] * 1000,
            ratio["a/b"],
            cpu_med["a"] * 1000,
        ],
        ["(b) plain loop (floor)", med["b"] * 1000, pooled["b"] * 1000, 1.0, cpu_med["b"] * 1000],
    ]
    notes = [
        f"ours/(a) = {ratio['ours/a']:.3f}, ours/(b) = {ratio['ours/b']:.3f}, (a)/(b) = {ratio['a/b']:.3f} "
        "(medians of the per-round ratios)",
        f"ours adds {added_ms:.1f} ms per plan over (a) = {added_ms / STAGES:.2f} ms per stage; "
        f"(a) adds {(med['a'] - med['b']) * 1000:.1f} ms per plan over (b)",
        f"CPU per plan (worker + its work horses; the simulator's CPU excluded): ours - (a) = "
        f"{(cpu_med['ours'] - cpu_med['a']) * 1000:.1f} ms, (a) - (b) = {(cpu_med['a'] - cpu_med['b']) * 1000:.1f} ms",
        f"(PNG files, bytes) per batch: {written}",
    ]
    if len({tuple(w) for w in written.values()}) != 1 or any(len(w) != 1 for w in written.values()):
        raise RuntimeError(f"the variants did not write the same files and bytes: {written}")
    return BenchResult(
        name=NAME,
        title="1. worker overhead: four-stage plans (1024 -> 1024 -> x2 -> 2048 ADetailer)",
        params={"plans_per_variant": count, "rounds": rounds, "batch": size},
        header=["variant", "ms/plan (median)", "ms/plan (pooled mean)", "x floor", "CPU ms/plan"],
        rows=rows,
        targets=[
            Target("ours/(a) time per plan", ratio["ours/a"], 1.10, "<="),
            Target("our added cost per stage beyond (a)", added_ms / STAGES, 5.0, "<=", " ms"),
        ],
        raw={
            "per_plan_s": per,
            "pooled_per_plan_s": pooled,
            "ratios": ratio,
            "cpu_per_plan_s": cpu,
            "batches": raw,
        },
        notes=notes,
        seconds=time.perf_counter() - started,
    )
