"""A job that a plain ``rq`` tool re-saved without ``-S json``: run where it can run, refused where it
cannot, and ``status`` says what happened.

The real ``rq`` command line (the venv's ``rq``, on the test Redis) re-saves a failed job's meta with
pickle when it requeues it without ``-S json``. Its plan (``data``) stays JSON, so our worker runs it
and writes its meta again as JSON. A job whose plan a script re-saved with RQ's default serializer
cannot be recovered: ``stablenew retry`` refuses it (exit 2) and ``status`` says to resubmit.
Jobs run in process on a :class:`StableNewSimpleWorker` in burst mode (our real worker class).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer

from plan_configs import Configs
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewSimpleWorker, make_worker
from stablenew.settings import Settings
from stablenew.simulator import Fault, SimulatedWebUI

pytestmark = pytest.mark.integration

RQ = str(Path(sys.executable).parent / "rq")
PICKLE_PROTO = b"\x80"  # the first byte of every pickle RQ's default serializer writes
REWRITTEN = "was rewritten by a tool without -S json; resubmit its config"


@pytest.fixture
def settings(simulator: SimulatedWebUI, tmp_path: Path) -> Settings:
    return Settings(webui_url=simulator.url, output_dir=tmp_path / "outputs", retry_max=0)


def run_jobs(connection: redis.Redis, settings: Settings) -> None:
    """Our worker class takes every job on ``default`` and stops."""
    worker = make_worker(connection, ["default"], worker_class=StableNewSimpleWorker, settings=settings)
    worker.work(burst=True)


def failed_job(
    connection: redis.Redis,
    settings: Settings,
    simulator: SimulatedWebUI,
    config: dict[str, Any] | None = None,
) -> str:
    """A job (small: one txt2img of 4 steps, unless ``config``) that failed for good at its txt2img
    (the WebUI rejected it)."""
    simulator.inject(Fault("status", route="/sdapi/v1/txt2img", status=422))
    job_id = Producer(connection, settings).submit(config or Configs.txt2img()).job_id
    run_jobs(connection, settings)
    assert Producer(connection, settings).status(job_id).status == "failed"
    return job_id


def raw(connection: redis.Redis, job_id: str, field: str) -> bytes:
    value = connection.hget(f"rq:job:{job_id}", field)
    assert isinstance(value, bytes)
    return zlib.decompress(value) if field == "data" else value


def status_json(run_cli: Any, job_id: str) -> dict[str, Any]:
    shown = run_cli("status", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    view: dict[str, Any] = json.loads(shown.stdout)
    return view


def test_rq_requeue_without_json_leaves_a_job_our_worker_still_runs_to_the_end(
    connection: redis.Redis,
    redis_url: str,
    settings: Settings,
    simulator: SimulatedWebUI,
    run_cli: Any,
) -> None:
    # Given a failed job, requeued by the plain rq command line without -S json
    job_id = failed_job(connection, settings, simulator)
    done = subprocess.run(
        [RQ, "requeue", "-u", redis_url, "--queue", "default", job_id], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert raw(connection, job_id, "meta")[:1] == PICKLE_PROTO  # what rq did to it
    assert raw(connection, job_id, "data")[:1] == b"["  # its plan untouched

    # Then status says what happened, instead of the earlier run's error alone
    queued = status_json(run_cli, job_id)
    assert queued["status"] == "queued"
    assert "its meta was rewritten by a tool without -S json" in queued["error"]

    # When our worker takes it, it runs (its meta is never unpickled) and its meta is JSON again
    run_jobs(connection, settings)
    view = status_json(run_cli, job_id)
    assert view["status"] == "finished", view
    assert view["error"] is None
    assert [s["status"] for s in view["stages"]] == ["finished"]
    meta = json.loads(raw(connection, job_id, "meta"))
    assert meta["stablenew"]["status"] == "finished"


def test_retry_repairs_a_failed_job_whose_meta_a_tool_rewrote_and_it_runs(
    connection: redis.Redis,
    settings: Settings,
    simulator: SimulatedWebUI,
    run_cli: Any,
) -> None:
    # Given a failed job that a script using RQ's default serializer re-saved (its meta now a pickle)
    job_id = failed_job(connection, settings, simulator)
    Job.fetch(job_id, connection=connection, serializer=DefaultSerializer).save()
    assert raw(connection, job_id, "meta")[:1] == PICKLE_PROTO

    # When it is retried
    retried = run_cli("retry", job_id)

    # Then its meta is JSON again at once, and it runs to the end
    assert retried.returncode == 0, retried.stderr
    assert json.loads(raw(connection, job_id, "meta"))["stablenew"]["job_id"] == job_id
    run_jobs(connection, settings)
    assert status_json(run_cli, job_id)["status"] == "finished"


def test_retry_refuses_a_job_whose_plan_a_tool_rewrote_with_pickle_and_changes_nothing(
    connection: redis.Redis,
    settings: Settings,
    simulator: SimulatedWebUI,
    run_cli: Any,
) -> None:
    # Given a failed job whose plan a script re-saved with RQ's default serializer (pickle)
    job_id = failed_job(connection, settings, simulator)
    func, instance, args, kwargs = json.loads(raw(connection, job_id, "data"))
    job = Job.fetch(job_id, connection=connection, serializer=DefaultSerializer)
    job.data = DefaultSerializer.dumps((func, instance, args, kwargs))
    job.save()
    assert raw(connection, job_id, "data")[:1] == PICKLE_PROTO

    # When it is retried
    retried = run_cli("retry", job_id)

    # Then retry refuses in one line, exit 2, and the job stays failed, requeued nowhere
    assert retried.returncode == 2, (retried.stdout, retried.stderr)
    assert retried.stderr.strip().splitlines() == [f"error: job {job_id} {REWRITTEN}"]
    assert "requeued" not in retried.stdout
    assert FailedJobRegistry("default", connection=connection).get_job_ids() == [job_id]
    assert connection.lrange("rq:queue:default", 0, -1) == []
    # ... and status says what happened, not the earlier run's unrelated error
    view = status_json(run_cli, job_id)
    assert view["status"] == "failed"
    assert view["error"] == f"job {job_id} {REWRITTEN}"


def test_a_job_whose_plan_was_rewritten_fails_at_once_on_our_worker_saying_so(
    connection: redis.Redis,
    redis_url: str,
    settings: Settings,
    simulator: SimulatedWebUI,
    run_cli: Any,
) -> None:
    # Given a failed job whose plan was re-saved with pickle, then requeued by rq without -S json
    job_id = failed_job(connection, settings, simulator, Configs.four_stage())
    job = Job.fetch(job_id, connection=connection, serializer=DefaultSerializer)
    job.data = DefaultSerializer.dumps(tuple(json.loads(raw(connection, job_id, "data"))))
    job.save()
    done = subprocess.run(
        [RQ, "requeue", "-u", redis_url, "--queue", "default", job_id], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    # When our worker takes it
    run_jobs(connection, settings)

    # Then it fails at once (the plan is never unpickled) and status says to resubmit
    view = status_json(run_cli, job_id)
    assert view["status"] == "failed"
    assert view["error"] == f"job {job_id} {REWRITTEN}"
    assert [s["status"] for s in view["stages"]][1:] == ["skipped"] * 3


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: the marker exists only if something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_a_queued_job_whose_meta_is_a_live_pickle_runs_without_unpickling_it(
    connection: redis.Redis, settings: Settings, tmp_path: Path, run_cli: Any
) -> None:
    # Given a queued job whose meta was replaced by a pickle that would create a file if unpickled
    marker = tmp_path / "unpickled"
    job_id = Producer(connection, settings).submit(Configs.txt2img()).job_id
    connection.hset(f"rq:job:{job_id}", "meta", DefaultSerializer.dumps({"x": TouchOnUnpickle(marker)}))

    # When our worker takes it, and status and the dashboard's copy are read
    run_jobs(connection, settings)
    view = status_json(run_cli, job_id)

    # Then it ran to the end, its meta is JSON again, and nothing was unpickled
    assert view["status"] == "finished", view
    assert json.loads(raw(connection, job_id, "meta"))["stablenew"]["status"] == "finished"
    assert not marker.exists()
    control = tmp_path / "control"  # the same payload, unpickled, does create its marker
    DefaultSerializer.loads(DefaultSerializer.dumps(TouchOnUnpickle(control)))
    assert control.exists()
