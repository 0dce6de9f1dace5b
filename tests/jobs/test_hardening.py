"""Defences against reused ids, crafted jobs, other hosts' WebUIs and leaked secrets."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rq import Callback, Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from stablenew.errors import ConfigError, is_permanent
from stablenew.jobs.keys import inventory_key
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.run import callback_allowed
from stablenew.settings import Settings, redact_url
from stablenew.simulator import SimulatedWebUI

CALLS: list[Any] = []


def record_call(*args: Any, **kwargs: Any) -> None:
    """A callback a crafted job names; nothing may ever call it."""
    CALLS.append(args)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:36463\\@hooks.example.com/steal",
        "http://user:pw@hooks.example.com/x",
        "http://hooks.example.com:99999/x",
        "http://hooks.example.com/a b",
        "ftp://hooks.example.com/x",
    ],
)
def test_a_callback_url_that_parsers_could_read_differently_is_refused_at_submit(
    producer: Producer, configs: Any, conn: Any, url: str
) -> None:
    with pytest.raises(ConfigError) as info:
        producer.submit({**configs.txt2img(), "callback_url": url})

    assert info.value.problems[0].path == "callback_url"
    assert conn.keys("rq:job:*") == []


def test_the_allow_list_checks_the_host_requests_would_contact() -> None:
    settings = Settings(webhook_allowed_hosts="hooks.example.com")

    assert callback_allowed(settings, "https://hooks.example.com/x")
    assert not callback_allowed(settings, "http://127.0.0.1:36463\\@hooks.example.com/steal")
    assert not callback_allowed(settings, "http://hooks.example.com.evil.net/x")
    assert not callback_allowed(settings, "http://hooks.example.com:99999/x")  # never raises


def test_a_job_id_reused_after_its_job_expired_runs_the_new_plan(
    producer: Producer, run_worker: Any, configs: Any, conn: Any, sim: Any
) -> None:
    # Given a finished job whose RQ hash has expired (its stage state lives longer)
    first = producer.submit(configs.txt2img("a red bicycle"), job_id="nightly")
    run_worker()
    conn.delete(f"rq:job:{first.job_id}")

    # When the same id is submitted with another plan
    producer.submit(configs.txt2img("a blue whale", seed=99), job_id="nightly")
    run_worker()

    # Then the new plan really ran, and its outputs are its own
    prompts = [r.body["prompt"] for r in sim.requests if r.path == "/sdapi/v1/txt2img"]
    assert prompts == ["a red bicycle", "a blue whale"]
    view = producer.status("nightly")
    assert view.status == "finished"
    assert view.stages[0]["outputs"][0]["seed"] == 99


def test_an_abandoned_job_naming_a_callback_runs_nothing_in_maintenance_or_listing(
    producer: Producer, conn: Any
) -> None:
    # Given a crafted job with a failure callback, abandoned in the started registry long ago
    CALLS.clear()
    queue = Queue("default", connection=conn, serializer=JSONSerializer, job_class=StableNewJob)
    job = queue.enqueue("builtins.len", "x", on_failure=Callback(f"{__name__}.record_call"))
    # (the registry as a worker's maintenance builds it: rq's clean_registries passes the queue's class)
    registry = StartedJobRegistry(queue.name, conn, job_class=StableNewJob, serializer=JSONSerializer)
    conn.zadd(registry.key, {job.id: (datetime.now(UTC) - timedelta(hours=1)).timestamp()})

    # When a GUI lists jobs, and a worker's maintenance cleans the registry
    producer.list_jobs()
    registry.cleanup()

    # Then the callback was never imported or called, and nothing raised
    assert CALLS == []


def test_workers_on_different_hosts_never_share_a_webui_inventory(
    producer: Producer, run_worker: Any, configs: Any, monkeypatch: pytest.MonkeyPatch, sim: Any
) -> None:
    # Given worker "gpu-a" whose WebUI has a custom checkpoint, and has cached its inventory
    monkeypatch.setenv("STABLENEW_WORKER_NAME", "gpu-a")
    with SimulatedWebUI(models=["custom_v2.safetensors [abcdef1234]"]) as webui_a:
        monkeypatch.setenv("STABLENEW_WEBUI_URL", webui_a.url)
        ok = producer.submit(configs.txt2img(model="custom_v2.safetensors"))
        run_worker()
    assert producer.status(ok.job_id).status == "finished"

    # When worker "gpu-b", whose WebUI lacks it, gets a job naming it
    monkeypatch.setenv("STABLENEW_WORKER_NAME", "gpu-b")
    monkeypatch.setenv("STABLENEW_WEBUI_URL", sim.url)
    bad = producer.submit(configs.txt2img(model="custom_v2.safetensors"))
    run_worker()

    # Then it fails naming the checkpoint instead of silently running another model
    view = producer.status(bad.job_id)
    assert view.status == "failed"
    assert "custom_v2" in (view.error or "")
    assert not [r for r in sim.requests if r.path == "/sdapi/v1/txt2img"]
    assert inventory_key("gpu-a", "http://x") != inventory_key("gpu-b", "http://x")


def test_a_job_canceled_while_running_expires_like_a_failed_one(
    producer: Producer, run_worker: Any, configs: Any, conn: Any, sim: Any
) -> None:
    import threading

    sim.set_latency(1.0)
    sub = producer.submit(configs.two_stage())
    threading.Timer(0.3, producer.cancel, args=(sub.job_id,)).start()
    run_worker()

    assert producer.status(sub.job_id).status == "canceled"
    assert conn.ttl(f"rq:job:{sub.job_id}") > 0


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (ValueError("bad"), True),
        (KeyError("k"), True),
        (OSError("disk full"), False),
        (ConnectionError(), False),
    ],
)
def test_errors_from_our_own_code_are_permanent_and_io_errors_are_retried(
    exc: Exception, permanent: bool
) -> None:
    assert is_permanent(exc) is permanent


def test_output_files_are_readable_by_others_as_the_umask_allows(
    producer: Producer, run_worker: Any, configs: Any, output_dir: Path
) -> None:
    sub = producer.submit(configs.txt2img())
    run_worker()

    mask = os.umask(0)
    os.umask(mask)
    for path in (output_dir / sub.job_id).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://:s3cret@h:6379/0", "s3cret"),
        ("redis://user:p/w#x@h:1/0", "p/w#x"),
        ("unix:///tmp/r.sock?db=0&password=s3cret", "s3cret"),
        ("http://u:s3cret@host:7860", "s3cret"),
    ],
)
def test_redacted_urls_hide_every_password(url: str, secret: str) -> None:
    assert secret not in redact_url(url)
    assert "***" in redact_url(url)
