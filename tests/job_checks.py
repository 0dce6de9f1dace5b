"""Waiting for a condition or for a job to reach a state (through the producer's public ``status``),
and checking what a finished job left on disk (shared by the integration and reliability suites)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from stablenew.jobs.producer import JobView, Producer


def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail naming ``what`` after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.02)
    return value


def wait_for(
    producer: Producer, job_id: str, until: Callable[[JobView], bool], what: str, timeout: float = 60.0
) -> JobView:
    """Poll ``producer.status`` until ``until(view)``; fail with the last view after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    view = producer.status(job_id)
    while not until(view):
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: {what} not reached in {timeout} s; last {view.to_dict()}")
        time.sleep(0.05)
        view = producer.status(job_id)
    return view


def wait_done(producer: Producer, job_id: str, timeout: float = 60.0) -> JobView:
    return wait_for(producer, job_id, lambda v: v.done, "an end state", timeout)


def stage_running(index: int) -> Callable[[JobView], bool]:
    """``until`` for :func:`wait_for`: stage ``index`` is running (the job ending first is an error)."""

    def check(view: JobView) -> bool:
        if view.done:
            raise AssertionError(f"job ended before stage {index} ran: {view.to_dict()}")
        return len(view.stages) > index and view.stages[index]["status"] == "running"

    return check


def verify_outputs(view: JobView, root: Path) -> dict[str, Any]:
    """The job finished with one output per stage; each file exists whole (size, sha256, decodes
    fully), the manifest lists exactly the state's outputs, and the job's folder holds nothing else
    (no duplicate, no temporary file). Returns the manifest."""
    folder = root / view.job_id
    assert view.status == "finished", view.to_dict()
    assert view.manifest is not None
    assert Path(view.manifest) == folder / "manifest.json"
    manifest = json.loads(Path(view.manifest).read_text())
    assert manifest["job_id"] == view.job_id
    assert manifest["status"] == "finished"
    assert [s["type"] for s in manifest["stages"]] == [s["type"] for s in view.stages]
    expected = {"manifest.json"}
    for stage, listed in zip(view.stages, manifest["stages"], strict=True):
        assert stage["status"] == listed["status"] == "finished", stage
        assert len(stage["outputs"]) == 1, stage
        assert [(o["path"], o["sha256"]) for o in listed["outputs"]] == [
            (o["path"], o["sha256"]) for o in stage["outputs"]
        ]
        for out, record in zip(stage["outputs"], listed["outputs"], strict=True):
            path = root / out["path"]
            assert path.parent == folder
            assert path.name.startswith(f"{stage['index']:02d}-{stage['type']}-")
            data = path.read_bytes()
            assert len(data) == record["bytes"], f"{path.name} is {len(data)} bytes, not {record['bytes']}"
            assert hashlib.sha256(data).hexdigest() == out["sha256"]
            with Image.open(path) as image:
                image.load()  # decodes every byte: a truncated PNG raises here
                assert image.size == (out["width"], out["height"])
            expected.add(path.name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    return manifest


def band_job_ids(connection: Any, band: str) -> list[str]:
    """The ids waiting in ``band``: on the band's queue and its checkpoint queues (a plan naming a
    checkpoint waits on ``<band>.ckpt.<slug>``), in submission order."""
    from rq import Queue

    from stablenew.jobs.affinity import checkpoint_queues

    ids = []
    for name in [band, *checkpoint_queues(connection, [band])]:
        ids += Queue(name, connection=connection).get_job_ids()
    created = {i: connection.hget(f"rq:job:{i}", "created_at") or b"" for i in ids}
    return sorted(ids, key=lambda i: created[i])
