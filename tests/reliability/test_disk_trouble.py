"""The disk under a running job: a folder that cannot be written, a folder deleted mid-job.

However a job ends, its webhook goes out once and names the real cause; a job never ends
``finished`` while a file it lists is missing."""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from job_checks import wait_until
from plan_configs import TinyConfigs
from stablenew.jobs.producer import Producer
from stablenew.simulator import SimulatedWebUI
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0
_wait = functools.partial(wait_until, timeout=DEADLINE_S)


def test_a_job_whose_folder_cannot_be_written_fails_with_that_cause_and_sends_one_webhook(
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    """Its folder is taken by a file: every write fails (the manifest's too). The job still ends
    failed, naming the image write, with exactly one job.failed webhook after its last retry."""
    job_id = producer.submit(
        {**TinyConfigs.two_stage("no room"), "callback_url": webhook_receiver.url}
    ).job_id
    (tmp_path / "outputs").mkdir(exist_ok=True)
    (tmp_path / "outputs" / job_id).write_bytes(b"not a folder")
    worker_process("default", webui_url=simulator.url)

    _wait("the job ends", lambda: producer.status(job_id).done)
    _wait("its webhook", lambda: webhook_receiver.deliveries)
    time.sleep(0.5)  # a second delivery would arrive here

    view = producer.status(job_id)
    assert view.status == "failed", view.to_dict()
    assert view.error is not None and "File exists" in view.error, view.error
    assert ".tmp" not in view.error and "manifest" not in view.error, view.error
    assert webhook_receiver.events() == ["job.failed"]
    assert webhook_receiver.deliveries[0].json()["error"] == view.error


def test_a_job_folder_deleted_mid_job_never_ends_finished_listing_missing_files(
    producer: Producer,
    worker_process: Callable[..., Any],
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    """The folder goes while stage 2 of 2 runs: the worker sees the first stage's image gone before
    finishing, runs what is missing again, and every file the webhook lists is on disk."""
    sim = SimulatedWebUI(port=0, latency=1.0).start()
    try:
        worker_process("default", webui_url=sim.url)
        job_id = producer.submit(
            {**TinyConfigs.two_stage("folder deleted"), "callback_url": webhook_receiver.url}
        ).job_id
        folder = tmp_path / "outputs" / job_id
        _wait("stage 1 written", lambda: any(folder.glob("00-*")))
        _wait("stage 2 running", lambda: producer.status(job_id).stages[1]["status"] == "running")
        shutil.rmtree(folder)
        _wait("the job ends", lambda: producer.status(job_id).done)
        _wait("its webhook", lambda: webhook_receiver.deliveries)
    finally:
        sim.stop()

    first, *more = webhook_receiver.deliveries
    assert more == []
    event, summary = first.headers["X-StableNew-Event"], first.json()
    outputs = [o["path"] for st in summary["stages"] for o in st["outputs"]]
    assert event == "job.finished" and summary["status"] == "finished", summary
    assert outputs and all((tmp_path / "outputs" / p).is_file() for p in outputs), outputs
    assert (folder / "manifest.json").is_file()
