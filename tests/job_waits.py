"""Waiting for a job to reach a state, through the producer's public ``status`` (shared by the
integration and reliability suites)."""

from __future__ import annotations

import time
from collections.abc import Callable

from stablenew.jobs.producer import JobView, Producer


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
