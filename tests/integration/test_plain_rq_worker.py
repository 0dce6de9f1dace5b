"""The worker also runs as plain ``rq worker`` with our Job class, exactly as worker/README.md shows."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from job_checks import wait_done
from stablenew.config_files import load_config_file
from stablenew.jobs.producer import Producer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "producer" / "examples"


def _documented_rq_command(redis_url: str) -> list[str]:
    """The `rq worker ...` line of worker/README.md, its URL filled in, its name and queues cut off."""
    text = (ROOT / "worker" / "README.md").read_text(encoding="utf-8")
    line = next(m for m in re.findall(r"^(rq worker .+)$", text, re.M))
    argv = shlex.split(line.replace('"$STABLENEW_REDIS_URL"', redis_url))
    name_at = argv.index("--name")
    rq_script = str(Path(sys.executable).with_name("rq"))
    assert argv[name_at + 2 :] == ["high", "default", "low"]
    return [rq_script, *argv[1:name_at]]


def test_plain_rq_worker_with_our_job_class_runs_a_plan(
    producer: Producer, simulator: Any, worker_process: Any, redis_url: str
) -> None:
    # Given the documented plain RQ worker command
    command = _documented_rq_command(redis_url)
    worker_process("high", "default", "low", webui_url=simulator.url, command=command)

    # When a plan is submitted
    sub = producer.submit(load_config_file(EXAMPLES / "txt2img_only.json"))

    # Then it runs to the end, with its outputs
    view = wait_done(producer, sub.job_id)
    assert view.status == "finished"
    assert view.stages[0]["outputs"]


def test_plain_rq_worker_with_our_job_class_refuses_a_foreign_function_and_goes_on(
    producer: Producer, simulator: Any, worker_process: Any, redis_url: str
) -> None:
    command = _documented_rq_command(redis_url)
    worker_process("default", webui_url=simulator.url, command=command)

    # Given a JSON job naming a function that is not ours, queued before a real plan
    queue = Queue("default", connection=producer.connection, serializer=JSONSerializer)
    evil = queue.enqueue("os.getcwd")
    sub = producer.submit(load_config_file(EXAMPLES / "txt2img_only.json"))

    # Then the foreign job fails as not allowed, and the plan still runs
    assert wait_done(producer, sub.job_id).status == "finished"
    evil.refresh()
    assert evil.get_status().value == "failed"
    result = evil.latest_result()
    assert result is not None and "JobNotAllowed" in (result.exc_string or "")
