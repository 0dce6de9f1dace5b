"""The worker tells a plan's callback_url how the job ended, and a failing webhook never fails a job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stablenew.jobs.producer import Producer
from stablenew.run import verify_signature
from stablenew.simulator import Fault
from webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver("/hook?token=abc") as r:
        yield r


def test_a_finished_job_posts_a_signed_summary_to_its_callback_url(
    producer: Producer,
    run_worker: Any,
    receiver: WebhookReceiver,
    configs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a webhook secret and a plan with a callback_url
    monkeypatch.setenv("STABLENEW_WEBHOOK_SECRET", "s3cret")
    sub = producer.submit({**configs.two_stage(), "callback_url": receiver.url})

    # When the job runs
    run_worker()

    # Then exactly one delivery arrived, describing the finished job, signed with the secret
    assert len(receiver.deliveries) == 1
    delivery = receiver.deliveries[0]
    summary = json.loads(delivery.body)
    assert summary["job_id"] == sub.job_id
    assert summary["status"] == "finished"
    assert [s["type"] for s in summary["stages"]] == ["txt2img", "img2img"]
    assert all(s["outputs"] for s in summary["stages"])
    assert verify_signature(
        delivery.body,
        delivery.headers["X-StableNew-Signature"],
        "s3cret",
        timestamp=delivery.headers["X-StableNew-Timestamp"],
    )


def test_a_permanently_failed_job_posts_its_error(
    producer: Producer, run_worker: Any, receiver: WebhookReceiver, configs: Any
) -> None:
    sub = producer.submit(
        {**configs.txt2img(model="no-such-model.safetensors"), "callback_url": receiver.url}
    )

    run_worker()

    assert producer.status(sub.job_id).status == "failed"
    assert len(receiver.deliveries) == 1
    summary = json.loads(receiver.deliveries[0].body)
    assert summary["status"] == "failed"
    assert "no-such-model" in summary["error"]


def test_a_transient_failure_that_will_be_retried_is_not_announced(
    producer: Producer,
    run_worker: Any,
    receiver: WebhookReceiver,
    configs: Any,
    sim: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given one 503 and one retry allowed
    monkeypatch.setenv("STABLENEW_RETRY_MAX", "1")
    sim.inject(Fault("status", route="/sdapi/v1/txt2img", status=503, count=1))
    sub = Producer(producer.connection).submit({**configs.txt2img(), "callback_url": receiver.url})

    run_worker()

    # Then only the final outcome was posted
    assert producer.status(sub.job_id).status == "finished"
    assert [json.loads(d.body)["status"] for d in receiver.deliveries] == ["finished"]


def test_an_unreachable_callback_does_not_fail_the_job(
    producer: Producer, run_worker: Any, configs: Any
) -> None:
    sub = producer.submit({**configs.txt2img(), "callback_url": "http://127.0.0.1:1/hook"})

    run_worker()

    assert producer.status(sub.job_id).status == "finished"


def test_a_callback_host_outside_the_allow_list_is_refused_at_submit(
    conn: Any, configs: Any, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stablenew.errors import ConfigError
    from stablenew.settings import Settings

    monkeypatch.setenv("STABLENEW_WEBHOOK_ALLOWED_HOSTS", "hooks.example.org, 127.0.0.1:9000")
    producer = Producer(conn, Settings())

    with pytest.raises(ConfigError) as info:
        producer.submit({**configs.txt2img(), "callback_url": "http://169.254.169.254/latest"})

    assert info.value.problems[0].path == "callback_url"
    assert conn.keys("rq:job:*") == []
    assert producer.submit({**configs.txt2img(), "callback_url": "http://127.0.0.1:9000/x"}).job_id
