"""Model-aware dispatch on one Redis: queue names, the producer's routing, the order a worker takes
queues in, and our in-process worker taking plans for the checkpoint its WebUI holds first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from stablenew.jobs.affinity import (
    QueueHead,
    affinity_queue,
    band_of,
    checkpoint_queues,
    checkpoint_slug,
    order_queues,
    read_held,
    record_loaded,
)
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings

BASE = "sd_xl_base_1.0.safetensors"
REFINER = "sd_xl_refiner_1.0.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"


# ------------------------------------------------------------------------------------------ names
def test_a_checkpoint_title_with_or_without_its_hash_gets_one_readable_queue() -> None:
    assert checkpoint_slug(f"{BASE} [31e35c80fc]") == checkpoint_slug(BASE) == BASE
    assert affinity_queue("default", BASE) == f"default.ckpt.{BASE}"
    assert affinity_queue("high", None) == "high"
    assert band_of(f"low.ckpt.{BASE}") == "low"
    assert band_of("default") == "default"
    assert band_of("other.ckpt.x") is None
    assert band_of("default.ckpt.") is None


def test_a_checkpoint_name_unsafe_for_a_queue_is_made_safe_and_kept_apart_from_its_lookalikes() -> None:
    spaced, slashed = checkpoint_slug("my model v2.safetensors"), checkpoint_slug("my/model v2.safetensors")
    assert spaced != slashed
    for slug in (spaced, slashed, checkpoint_slug("x" * 300)):
        assert all(c.isalnum() or c in "._-" for c in slug), slug
        assert len(slug) <= 90
    with pytest.raises(ValueError):
        affinity_queue("urgent", BASE)


# ------------------------------------------------------------------------------------------ producer
def test_the_producer_puts_a_plan_on_its_checkpoint_queue_and_a_plan_without_one_on_the_band(
    producer: Producer, conn: Any, configs: Any
) -> None:
    with_model = producer.submit(configs.txt2img(model=f"{BASE} [31e35c80fc]"), queue="high")
    without = producer.submit(configs.txt2img())
    many = producer.submit_many(
        [configs.txt2img(model=REFINER), configs.txt2img(), configs.txt2img(model=REFINER)]
    )

    def ids(name: str) -> list[str]:
        return Queue(name, connection=conn, serializer=JSONSerializer).get_job_ids()

    assert ids(f"high.ckpt.{BASE}") == [with_model.job_id]
    assert ids("default") == [without.job_id, many[1].job_id]
    assert ids(f"default.ckpt.{REFINER}") == [many[0].job_id, many[2].job_id]
    assert checkpoint_queues(conn) == {f"default.ckpt.{REFINER}": REFINER, f"high.ckpt.{BASE}": BASE}
    view = producer.status(with_model.job_id)
    assert (view.queue, view.checkpoint, view.position) == ("high", f"{BASE} [31e35c80fc]", 1)
    assert view.to_dict()["checkpoint"] == f"{BASE} [31e35c80fc]"
    assert "a worker holding" in (view.waiting_for or "")  # no worker holds it
    assert [v.checkpoint for v in producer.list_jobs(queue="default")] == [REFINER, None, REFINER, None]


# ------------------------------------------------------------------------------------------ order
def head(name: str, waiting: int, age: float, checkpoint: str | None = None) -> QueueHead:
    return QueueHead(name=name, band=band_of(name) or name, checkpoint=checkpoint, waiting=waiting, age_s=age)


A, B, C = "default.ckpt.a", "default.ckpt.b", "default.ckpt.c"


def test_a_worker_takes_its_own_checkpoint_before_an_older_plan_for_another() -> None:
    heads = [head("default", 0, 0), head(A, 3, 5, "a"), head(B, 3, 50, "b")]
    assert order_queues(heads, ["default"], held="a", max_wait=300)[0] == A
    # a plan without a checkpoint runs anywhere without a swap: oldest of the two first
    heads.append(head("default", 1, 9))
    heads = [h for h in heads if not (h.name == "default" and h.waiting == 0)]
    assert order_queues(heads, ["default"], held="a", max_wait=300)[:2] == ["default", A]


def test_with_nothing_for_its_checkpoint_a_worker_takes_the_one_under_most_pressure() -> None:
    heads = [head(A, 1, 100, "a"), head(B, 10, 20, "b"), head(C, 2, 60, "c")]
    assert order_queues(heads, ["default"], held="z", max_wait=300) == [B, C, A]
    # ... preferring a checkpoint no other worker serves
    assert order_queues(heads, ["default"], held="z", max_wait=300, served_elsewhere={"b": 1}) == [C, A]
    # ... and joining one that others serve only when it has enough plans to be worth a swap
    heads.append(head(B, 11, 20, "b"))
    heads = [h for h in heads if h.waiting != 10]
    assert order_queues(heads, ["default"], held="z", max_wait=300, served_elsewhere={"b": 1}) == [C, A, B]


def test_a_worker_one_too_many_on_its_checkpoint_leaves_for_one_no_worker_serves() -> None:
    heads = [head(A, 8, 10, "a"), head(B, 8, 9, "b"), head(C, 8, 8, "c")]
    # the first holder of "a" stays; the second goes to the checkpoint under most pressure, the third to the next
    assert order_queues(heads, ["default"], held="a", max_wait=300, served_elsewhere={"a": 2}, rank=0)[0] == A
    assert order_queues(heads, ["default"], held="a", max_wait=300, served_elsewhere={"a": 2}, rank=1)[0] == B
    assert order_queues(heads, ["default"], held="a", max_wait=300, served_elsewhere={"a": 2}, rank=2)[0] == C
    # and stays when every other checkpoint is served already
    served = {"a": 2, "b": 1, "c": 1}
    assert order_queues(heads, ["default"], held="a", max_wait=300, served_elsewhere=served, rank=2)[0] == A


def test_a_plan_past_the_max_wait_goes_first_whatever_the_worker_holds() -> None:
    heads = [head(A, 5, 10, "a"), head(B, 1, 400, "b")]
    assert order_queues(heads, ["default"], held="a", max_wait=300)[0] == B


def test_affinity_off_is_fifo_across_the_band() -> None:
    heads = [head(A, 5, 10, "a"), head(B, 1, 40, "b"), head("default", 2, 20)]
    assert order_queues(heads, ["default"], held="a", max_wait=0) == [B, "default", A]


def test_bands_keep_strict_priority() -> None:
    heads = [head("high", 0, 0), head("high.ckpt.b", 1, 1, "b"), head(A, 9, 900, "a"), head("low", 3, 999)]
    order = order_queues(heads, ["low", "default", "high"], held="a", max_wait=300)
    assert order.index("high.ckpt.b") < order.index(A) < order.index("low")
    assert order.index("high") < order.index(A)  # empty queues stay listed (a blocking wait sees them)


# ------------------------------------------------------------------------------------------ worker
def test_our_worker_takes_the_plans_for_the_checkpoint_its_webui_holds_first_and_counts_its_swaps(
    producer: Producer, conn: Any, configs: Any, run_our_worker: Any
) -> None:
    # Given plans submitted interleaved for two checkpoints; the WebUI holds the first one loaded
    subs = producer.submit_many([configs.txt2img(str(i), model=(SD15 if i % 2 else BASE)) for i in range(6)])
    # When our worker drains the queues
    performed = run_our_worker()
    # Then it ran every plan for the loaded checkpoint first, in order, then the others: one swap
    ids = [s.job_id for s in subs]
    assert performed == ids[0::2] + ids[1::2]
    assert all(producer.status(i).status == "finished" for i in ids)
    assert [v.status for v in producer.list_jobs()] == ["finished"] * 6


def test_a_worker_whose_webui_lacks_a_checkpoint_never_takes_its_plans(
    producer: Producer, conn: Any, configs: Any, run_our_worker: Any
) -> None:
    # Given another live worker whose WebUI has a checkpoint this one lacks
    conn.sadd("rq:workers", "rq:worker:other-host")
    conn.set("stablenew:models:other-host", json.dumps(["not_on_this_host.safetensors"]))
    missing = producer.submit(configs.txt2img(model="not_on_this_host.safetensors"))
    fine = producer.submit(configs.txt2img(model=BASE))
    assert run_our_worker() == [fine.job_id]
    assert producer.status(missing.job_id).status == "queued"


def test_a_plan_for_a_checkpoint_no_worker_has_fails_at_once_instead_of_waiting_forever(
    producer: Producer, configs: Any, run_our_worker: Any
) -> None:
    missing = producer.submit(configs.txt2img(model="not_anywhere.safetensors"))
    assert run_our_worker() == [missing.job_id]
    view = producer.status(missing.job_id)
    assert view.status == "failed"
    assert "not_anywhere.safetensors" in (view.error or "")


def test_the_swap_record_counts_changes_only(conn: Any) -> None:
    record_loaded(conn, "w1", f"{BASE} [31e35c80fc]", count_swap=False)
    record_loaded(conn, "w1", BASE)  # the same checkpoint, another spelling
    record_loaded(conn, "w1", SD15)
    held = read_held(conn, "w1")
    assert (held.checkpoint, held.swaps) == (SD15, 1)


def test_retry_puts_a_failed_checkpoint_plan_back_on_its_own_queue(
    conn: Any, configs: Any, run_our_worker: Any, env: None, sim: Any
) -> None:
    producer = Producer(conn, Settings(retry_max=0))
    job = producer.submit(configs.txt2img(model=BASE))
    conn.hset(f"rq:job:{job.job_id}", "status", "failed")  # as RQ leaves it
    from rq.registry import FailedJobRegistry

    q = Queue(f"default.ckpt.{BASE}", connection=conn, serializer=JSONSerializer)
    q.remove(job.job_id)
    FailedJobRegistry(q.name, connection=conn).add(producer._fetch(job.job_id), ttl=60)
    producer.retry(job.job_id)
    assert q.get_job_ids() == [job.job_id]
    assert run_our_worker() == [job.job_id]


def test_the_worker_records_the_checkpoint_each_generation_loaded_and_its_swaps(
    producer: Producer, conn: Any, configs: Any, run_our_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two plans for checkpoints other than the one the WebUI holds at start
    producer.submit_many([configs.txt2img(model=SD15), configs.txt2img(model=REFINER)])
    monkeypatch.setattr("stablenew.jobs.rq_classes.forget_worker", lambda *_: None)  # keep it to read
    # When our worker runs them
    run_our_worker()
    # Then its record says what the WebUI holds now, and the two swaps it made
    (key,) = [k.decode() for k in conn.keys("stablenew:checkpoint:*")]
    held = read_held(conn, key.rsplit(":", 1)[1])
    assert (held.checkpoint, held.swaps, held.serving) == (REFINER, 2, REFINER)


def test_a_queued_plans_position_counts_the_older_plans_on_every_queue_of_its_band_and_higher_bands(
    producer: Producer, configs: Any
) -> None:
    subs = producer.submit_many(
        [configs.txt2img(), configs.txt2img(model=BASE), configs.txt2img(), configs.txt2img(model=SD15)]
    )
    urgent = producer.submit(configs.txt2img(model=SD15), queue="high")
    assert [producer.status(s.job_id).position for s in subs] == [2, 3, 4, 5]
    assert producer.status(urgent.job_id).position == 1
    assert [v.position for v in producer.list_jobs()] == [1, 5, 4, 3, 2]


def test_queue_counts_and_moves_see_a_bands_checkpoint_queues(
    producer: Producer, conn: Any, configs: Any
) -> None:
    from stablenew.jobs.queue_control import move_job, queue_views

    plain = producer.submit(configs.txt2img())
    for_base = producer.submit(configs.txt2img(model=BASE))
    assert {v.name: v.queued for v in queue_views(conn)} == {"high": 0, "default": 2, "low": 0}
    # moved to another band, a plan for a checkpoint stays on that checkpoint's queue of the band
    move_job(conn, for_base.job_id, queue="high")
    assert Queue(f"high.ckpt.{BASE}", connection=conn).get_job_ids() == [for_base.job_id]
    move_job(conn, plain.job_id, queue="low")
    assert {v.name: v.queued for v in queue_views(conn)} == {"high": 1, "default": 0, "low": 1}
