"""Webhooks against real worker processes: sent after the job's end is recorded, never holding the
worker, and cut off at their deadline however slowly a receiver answers."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import pytest

from job_checks import wait_until
from plan_configs import TinyConfigs
from stablenew.jobs.producer import Producer
from stablenew.simulator import SimulatedWebUI
from webhook_receiver import Answer, Delivery, WebhookReceiver

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0
WEBHOOK_DEADLINE_S = 4.0
_wait = functools.partial(wait_until, timeout=DEADLINE_S)


def test_a_receiver_asking_status_in_its_handler_sees_the_end_already_recorded(
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
) -> None:
    seen: list[tuple[str, str, str]] = []  # (job id, event, status at delivery)

    def ask_status(delivery: Delivery) -> None:
        """Before answering 204, as a receiver's handler would."""
        job_id = delivery.json()["job_id"]
        seen.append((job_id, delivery.headers["X-StableNew-Event"], producer.status(job_id).status))

    with WebhookReceiver(on_delivery=ask_status) as checking_receiver:
        worker_process("default", webui_url=simulator.url)
        ids = [
            producer.submit({**TinyConfigs.txt2img(f"job {i}"), "callback_url": checking_receiver.url}).job_id
            for i in range(5)
        ]

        _wait("five webhooks", lambda: len(seen) >= 5)
        time.sleep(0.3)  # a second delivery of any job would show here

    assert sorted(seen) == sorted((i, "job.finished", "finished") for i in ids)


def test_a_trickling_webhook_receiver_neither_holds_the_worker_nor_outlives_its_deadline(
    request: pytest.FixtureRequest,
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
) -> None:
    # Its answer's head sent one byte every 0.5 s: 57 bytes, 28.5 s for the whole head, each gap under 5 s
    with WebhookReceiver(then=Answer(200, drip=0.5)) as receiver:
        worker_process(
            "default", webui_url=simulator.url, env={"STABLENEW_WEBHOOK_DEADLINE": str(WEBHOOK_DEADLINE_S)}
        )
        first = producer.submit(
            {**TinyConfigs.txt2img("with a slow receiver"), "callback_url": receiver.url}
        ).job_id
        _wait("the first job ends", lambda: producer.status(first).done)
        second = producer.submit(TinyConfigs.txt2img("the next job")).job_id
        submitted = time.monotonic()
        _wait("the next job ends", lambda: producer.status(second).done)
        next_job_s = time.monotonic() - submitted
        _wait("the slow delivery is cut off", lambda: [d for d in receiver.deliveries if d.ended], timeout=15)

    assert producer.status(first).status == "finished"
    assert producer.status(second).status == "finished"
    assert next_job_s < WEBHOOK_DEADLINE_S - 1, next_job_s  # not behind the webhook
    (delivery, *more) = receiver.deliveries
    assert more == []  # cut off at the deadline: no further attempt
    accepted, closed = delivery.arrived, delivery.ended
    assert closed is not None
    assert WEBHOOK_DEADLINE_S <= closed - accepted < WEBHOOK_DEADLINE_S + 2, closed - accepted
    request.node.user_properties.append(("next_job_done_behind_slow_webhook_s", round(next_job_s, 2)))
    request.node.user_properties.append(("slow_webhook_cut_off_after_s", round(closed - accepted, 2)))
