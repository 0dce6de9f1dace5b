"""A1111's generation queue as the simulator plays it: one generation at a time, each taking the configured
latency (cut short by an interrupt or by stopping), and the ``/sdapi/v1/progress`` answer while one runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stablenew.simulator._api import Dropped


@dataclass
class _Job:
    started: float
    latency: float
    steps: int


class JobRunner:
    """Runs generations one at a time (A1111's queue lock) and reports on the one running; thread-safe."""

    def __init__(self, latency: float = 0.0) -> None:
        self._lock = threading.Lock()  # guards the mutable state below
        self._generation_lock = threading.Lock()
        self.stopping = threading.Event()  # set by stop(): every wait ends and every request is dropped
        self._interrupt = threading.Event()
        self._latency = 0.0
        self._route_latency: dict[str, float] = {}
        self._job: _Job | None = None
        self._interrupted = False
        self._interrupted_count = 0
        self._job_timestamp = "0"
        self.set_latency(latency)

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Seconds each generation takes from now on; with ``route``, only that route's (others keep theirs)."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            if route is None:
                self._latency = float(seconds)
            else:
                self._route_latency[route] = float(seconds)

    def start(self) -> None:
        self.stopping.clear()

    def stop(self) -> None:
        """Cut short every wait: the generations in hand end with their connection dropped."""
        self.stopping.set()
        self._interrupt.set()

    @contextlib.contextmanager
    def run(self, route: str, steps: int, prepare: Callable[[], None] | None = None) -> Iterator[str]:
        """Hold the generation lock for one job, call ``prepare`` (a checkpoint swap), sleep its latency (cut
        short by interrupt or stop); yield the job's timestamp.

        Raises:
            Dropped: the simulator stopped while the job waited or ran.
        """
        while not self._generation_lock.acquire(timeout=0.05):
            if self.stopping.is_set():
                raise Dropped
        try:
            if prepare is not None:
                prepare()
            with self._lock:
                self._interrupt.clear()
                self._interrupted = False
                latency = self._route_latency.get(route, self._latency)
                self._job = _Job(time.monotonic(), latency, steps)
                self._job_timestamp = stamp = time.strftime("%Y%m%d%H%M%S")
            if latency > 0:
                self._interrupt.wait(latency)
            if self.stopping.is_set():
                raise Dropped
            yield stamp
        finally:
            with self._lock:
                self._job = None
            self._generation_lock.release()

    def progress(self) -> dict[str, Any]:
        """The ``GET /sdapi/v1/progress`` answer."""
        with self._lock:
            job, interrupted, stamp = self._job, self._interrupted, self._job_timestamp
        progress = eta = 0.0
        step = steps = 0
        if job is not None:
            elapsed = time.monotonic() - job.started
            progress = 1.0 if job.latency <= 0 or interrupted else min(elapsed / job.latency, 1.0)
            eta, steps = max(job.latency - elapsed, 0.0), job.steps
            step = min(steps, int(progress * steps))
        state = {
            "skipped": False, "interrupted": interrupted, "stopping_generation": False, "job": "",
            "job_count": int(job is not None), "job_timestamp": stamp, "job_no": 0,
            "sampling_step": step, "sampling_steps": steps,
        }  # fmt: skip
        return {
            "progress": progress,
            "eta_relative": eta,
            "state": state,
            "current_image": None,
            "textinfo": None,
        }

    def interrupt(self) -> dict[str, Any]:
        """The ``POST /sdapi/v1/interrupt`` answer: the running generation ends now."""
        with self._lock:
            self._interrupted_count += 1
            self._interrupted = True
        self._interrupt.set()
        return {}

    @property
    def interrupted_count(self) -> int:
        with self._lock:
            return self._interrupted_count
