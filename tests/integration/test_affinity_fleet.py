"""Model-aware dispatch across a fleet: real Redis, real ``stablenew worker`` processes, each with
its own simulated WebUI that swaps checkpoints like A1111 (a swap costs time, and is counted).

Swap and generation times are short so that the suite stays quick; the ratios are what matter
(``make bench`` measures the same workload at scale).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from job_checks import wait_done, wait_for
from plan_configs import Configs
from stablenew.jobs.affinity import read_held
from stablenew.jobs.producer import Producer
from stablenew.jobs.worker_views import list_workers
from stablenew.simulator import SimulatedWebUI
from worker_processes import StartWorker

pytestmark = pytest.mark.integration

CHECKPOINTS = [
    "ckpt_a.safetensors [aaaaaaaaaa]",
    "ckpt_b.safetensors [bbbbbbbbbb]",
    "ckpt_c.safetensors [cccccccccc]",
    "ckpt_d.safetensors [dddddddddd]",
]
NAMES = [c.split(" [")[0] for c in CHECKPOINTS]
SWAP_S = 0.6
GENERATION_S = 0.12


@pytest.fixture
def webuis() -> Iterator[list[SimulatedWebUI]]:
    sims = [
        SimulatedWebUI(port=0, models=list(CHECKPOINTS), latency=GENERATION_S, swap_seconds=SWAP_S).start()
        for _ in range(2)
    ]
    try:
        yield sims
    finally:
        for sim in sims:
            sim.stop()


def plan(model: str | None, prompt: str = "a red bicycle") -> dict[str, Any]:
    extra = {"model": model} if model else {}
    return Configs.txt2img(prompt, steps=2, **extra)


def start_fleet(worker_process: StartWorker, sims: list[SimulatedWebUI], **env: str) -> list[Any]:
    extra = {f"STABLENEW_{k.upper()}": v for k, v in env.items()}
    return [worker_process(webui_url=sim.url, env=extra) for sim in sims]


def swaps(sims: list[SimulatedWebUI]) -> int:
    return sum(sim.swaps for sim in sims)


def finish_order(producer: Producer, ids: list[str]) -> list[str]:
    views = [wait_done(producer, job_id, timeout=90) for job_id in ids]
    assert all(v.status == "finished" for v in views), [v.to_dict() for v in views]
    return ids


def test_an_interleaved_workload_finishes_with_few_swaps_and_the_workers_show_them(
    producer: Producer, connection: redis.Redis, worker_process: StartWorker, webuis: list[SimulatedWebUI]
) -> None:
    # Given 16 plans for 4 checkpoints submitted interleaved, before two workers start
    subs = producer.submit_many([plan(NAMES[i % 4], f"p{i}") for i in range(16)])
    # When two workers, each with its own WebUI, drain them
    workers = start_fleet(worker_process, webuis)
    finish_order(producer, [s.job_id for s in subs])
    # Then few swaps were paid: at most one per checkpoint not loaded at start, plus one per host
    # (FIFO pays about one per plan)
    assert swaps(webuis) <= len(NAMES) - 1 + len(webuis), [sim.loaded_checkpoints for sim in webuis]
    # and each worker shows what its WebUI holds and its swaps, as counted by the WebUI itself
    views = {v.name: v for v in list_workers(connection)}
    for worker, sim in zip(workers, webuis, strict=True):
        view = views[worker.name]
        assert view.checkpoint == sim.loaded_checkpoints[-1].split(" [")[0]
        assert view.swaps == sim.swaps
        assert view.to_dict()["swaps"] == sim.swaps


def test_affinity_off_gives_fifo_across_the_band(
    producer: Producer, worker_process: StartWorker, webuis: list[SimulatedWebUI]
) -> None:
    # Given plans for two checkpoints interleaved, and one worker with affinity off
    subs = producer.submit_many([plan(NAMES[i % 2], f"p{i}") for i in range(6)])
    start_fleet(worker_process, webuis[:1], affinity_max_wait="0")
    ids = [s.job_id for s in subs]
    finish_order(producer, ids)
    # Then it ran them in submission order, swapping each time
    started = sorted(ids, key=lambda i: producer.status(i).stages[0]["started_at"] or "")
    assert started == ids
    assert webuis[0].swaps == 5


def test_priorities_hold_and_order_within_a_checkpoint_is_kept(
    producer: Producer, worker_process: StartWorker, webuis: list[SimulatedWebUI]
) -> None:
    # Given low plans for the loaded checkpoint, and later high plans for another one
    low = producer.submit_many([plan(NAMES[0], f"low{i}") for i in range(3)], queue="low")
    high = producer.submit_many([plan(NAMES[1], f"high{i}") for i in range(3)], queue="high")
    start_fleet(worker_process, webuis[:1])
    ids = [s.job_id for s in high + low]
    finish_order(producer, ids)
    # Then every high plan ran before any low one (a swap is no reason to break priority), each
    # band in submission order
    started = sorted(ids, key=lambda i: producer.status(i).stages[0]["started_at"] or "")
    assert started == ids


def test_an_old_plan_for_a_rare_checkpoint_is_served_within_the_max_wait(
    producer: Producer, worker_process: StartWorker, webuis: list[SimulatedWebUI]
) -> None:
    # Given a worker busy with a steady stream of plans for the checkpoint it holds
    max_wait = 2.0
    start_fleet(worker_process, webuis[:1], affinity_max_wait=str(max_wait))
    stream = [producer.submit(plan(NAMES[0], "warm")).job_id]
    wait_done(producer, stream[0])
    rare = producer.submit(plan(NAMES[3], "rare")).job_id
    submitted = time.monotonic()
    deadline = submitted + 12
    while time.monotonic() < deadline and producer.status(rare).status == "queued":
        # keep its own checkpoint's queue from ever running dry
        stream += [s.job_id for s in producer.submit_many([plan(NAMES[0], "warm")] * 2)]
        time.sleep(GENERATION_S * 2)
    view = wait_for(producer, rare, lambda v: v.status != "queued", "the rare plan taken", timeout=1)
    waited = time.monotonic() - submitted
    # Then the rare plan was taken once it passed the max wait (plus one plan in hand and a poll)
    assert view.status in ("started", "finished")
    assert waited < max_wait + 3, waited
    assert wait_done(producer, rare).status == "finished"
    # Whether the stream still had a plan waiting at that moment depends on the machine's speed (the
    # worker may drain it first), so this test does not tell the max-wait rule from an empty queue.


def test_status_says_a_plan_waits_for_a_worker_with_its_checkpoint(
    producer: Producer, worker_process: StartWorker, webuis: list[SimulatedWebUI], connection: redis.Redis
) -> None:
    # Given a worker that holds ckpt_a, and a plan for ckpt_c no worker holds
    (worker,) = start_fleet(worker_process, webuis[:1], affinity_max_wait="600")
    assert read_held(connection, worker.name).checkpoint == NAMES[0]
    busy = producer.submit_many([plan(NAMES[0], f"busy{i}") for i in range(4)])
    waiting = producer.submit(plan(NAMES[2])).job_id
    view = producer.status(waiting)
    assert view.status == "queued"  # the worker runs its own checkpoint's plans first
    assert view.checkpoint == NAMES[2]
    assert view.waiting_for is not None and NAMES[2] in view.waiting_for
    assert view.position is not None and view.position >= 1
    finish_order(producer, [s.job_id for s in busy] + [waiting])
