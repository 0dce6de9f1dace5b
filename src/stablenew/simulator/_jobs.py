"""A1111's generation queue as the simulator plays it: one generation at a time, each taking the configured
latency (cut short by an interrupt or by stopping), the ``/sdapi/v1/progress`` answer while one runs, and the
per-task ``/internal/progress`` answer (``modules/progress.py``).

A generation is a list of passes, each one ``state`` job of some sampling steps (``nextjob`` after it); a pass
may add jobs to ``state.job_count`` when it starts, as ADetailer does for the masks it found after its 1-step
dummy pass. The latency is shared among the passes by their steps. Progress follows ``Api.progressapi``:
``0.01 + job_no / job_count + (sampling_step / sampling_steps) / job_count``, at most 1.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._api import Dropped, validation_error

_FINISHED_KEPT = 16  # modules/progress.py keeps the last 16 finished task ids
_JOB_NAMES = {
    "/sdapi/v1/txt2img": "scripts_txt2img",
    "/sdapi/v1/img2img": "scripts_img2img",
    "/sdapi/v1/extra-single-image": "extras",
}


@dataclass(frozen=True)
class Pass:
    """One ``state`` job of a generation: first ``lead`` step-lengths of work that samples nothing (ADetailer's
    detection), then ``adds`` jobs to ``job_count``, then ``steps`` sampling steps."""

    adds: int
    steps: int
    lead: int = 0


@dataclass
class _Job:
    started: float
    latency: float
    passes: list[Pass]
    name: str

    def state_at(self, elapsed: float) -> tuple[int, int, int, int]:
        """(job_count, job_no, sampling_step, sampling_steps) ``elapsed`` seconds in."""
        total = sum(max(1, p.steps) + p.lead for p in self.passes)
        done = total if self.latency <= 0 else min(total, elapsed / self.latency * total)
        count = last_steps = 0
        for index, one in enumerate(self.passes):
            if done < one.lead:  # nextjob ran, nothing samples yet: job_no == job_count shows "done"
                return count, index, 0, last_steps
            done -= one.lead
            count += one.adds
            last_steps = one.steps
            weight = max(1, one.steps)
            if done < weight:
                return count, index, min(one.steps, int(done / weight * one.steps)), one.steps
            done -= weight
        return count, len(self.passes), 0, self.passes[-1].steps if self.passes else 0


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
        self._pending: dict[str, float] = {}  # task id -> when it was queued (add_task_to_queue)
        self._current_task: str | None = None
        self._finished: list[str] = []
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
    def run(
        self,
        route: str,
        steps: int,
        prepare: Callable[[], None] | None = None,
        *,
        passes: list[Pass] | None = None,
        task_id: str | None = None,
    ) -> Iterator[str]:
        """Hold the generation lock for one job, call ``prepare`` (a checkpoint swap), sleep its latency (cut
        short by interrupt or stop); yield the job's timestamp. ``passes`` default to one of ``steps``;
        ``task_id`` (the request's ``force_task_id``) is what ``/internal/progress`` knows the job by.

        Raises:
            Dropped: the simulator stopped while the job waited or ran.
        """
        task = task_id or f"task({secrets.token_hex(8)})"
        with self._lock:
            self._pending[task] = time.monotonic()
        try:
            while not self._generation_lock.acquire(timeout=0.05):
                if self.stopping.is_set():
                    raise Dropped
        except BaseException:
            with self._lock:
                self._pending.pop(task, None)
            raise
        finished = False
        try:
            if prepare is not None:
                prepare()
            with self._lock:
                self._interrupt.clear()  # state.begin() clears the interrupt flag
                self._interrupted = False
                self._pending.pop(task, None)
                self._current_task = task  # start_task, right after begin
                latency = self._route_latency.get(route, self._latency)
                plan = passes if passes else [Pass(1, steps)]
                self._job = _Job(time.monotonic(), latency, plan, _JOB_NAMES.get(route, ""))
                self._job_timestamp = stamp = time.strftime("%Y%m%d%H%M%S")
            if latency > 0:
                self._interrupt.wait(latency)
            if self.stopping.is_set():
                raise Dropped
            yield stamp
            finished = True
        finally:
            with self._lock:
                self._job = None
                self._pending.pop(task, None)
                if finished:  # finish_task runs only when processing returned
                    self._finished = [*self._finished, task][-_FINISHED_KEPT:]
                    if self._current_task == task:
                        self._current_task = None
            self._generation_lock.release()

    def progress(self) -> dict[str, Any]:
        """The ``GET /sdapi/v1/progress`` answer."""
        with self._lock:
            job, interrupted, stamp = self._job, self._interrupted, self._job_timestamp
        progress = eta = 0.0
        count = number = step = steps = 0
        name = ""
        if job is not None:
            elapsed = time.monotonic() - job.started
            count, number, step, steps = job.state_at(float("inf") if interrupted else elapsed)
            progress = _progress(count, number, step, steps)
            eta, name = max(job.latency - elapsed, 0.0), job.name
        state = {
            "skipped": False, "interrupted": interrupted, "stopping_generation": False, "job": name,
            "job_count": count, "job_timestamp": stamp, "job_no": number,
            "sampling_step": step, "sampling_steps": steps,
        }  # fmt: skip
        return {
            "progress": progress,
            "eta_relative": eta,
            "state": state,
            "current_image": None,
            "textinfo": None,
        }

    def task_progress(self, body: Any) -> dict[str, Any]:
        """The ``POST /internal/progress`` answer for ``{"id_task": ...}`` (``modules/progress.py::progressapi``).

        Raises:
            HTTPError: 422 without an ``id_task`` string.
        """
        task = body.get("id_task") if isinstance(body, dict) else None
        if not isinstance(task, str):
            raise validation_error(["body", "id_task"], "field required", "value_error.missing")
        with self._lock:
            active, queued = task == self._current_task, task in self._pending
            completed = task in self._finished
            order = sorted(self._pending, key=self._pending.__getitem__)
            job = self._job if active else None
        answer: dict[str, Any] = {
            "active": active, "queued": queued, "completed": completed, "progress": None, "eta": None,
            "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting...",
        }  # fmt: skip
        if queued:
            answer["textinfo"] = f"In queue: {order.index(task) + 1}/{len(order)}"
        if job is not None:
            count, number, step, steps = job.state_at(time.monotonic() - job.started)
            answer["progress"] = _progress(count, number, step, steps) - 0.01 if count else 0.0
            answer["textinfo"] = None
        return answer

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


def _progress(count: int, number: int, step: int, steps: int) -> float:
    """``Api.progressapi``'s fraction: 0 when no job counts yet, at most 1."""
    if count <= 0:
        return 0.0
    fraction = 0.01 + number / count + (step / steps / count if steps else 0.0)
    return min(fraction, 1.0)
