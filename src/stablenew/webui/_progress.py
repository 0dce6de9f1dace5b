"""The progress poller of a running stage: progress -> callback, cancel -> interrupt.

While a call runs, :class:`ProgressPoller` reads ``/sdapi/v1/progress`` every ``progress_interval``
seconds, reports the stage's fraction to ``on_progress`` and asks ``should_cancel``. The fraction comes
from A1111's ``state`` (``job_no`` / ``job_count`` and the sampling step), as it is: it rises within a job
and may fall where A1111's own count grows (ADetailer adds a job per mask it found after its 1-step dummy
pass, whose "1.0" is left out); an idle WebUI (between calls) reports nothing. A cancel interrupts only
while our own request is the one generating (``POST /internal/progress`` answers ``active`` for its
``force_task_id``), and then also aborts our read of the call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stablenew.errors import WebUIError
from stablenew.pipeline import StageType

if TYPE_CHECKING:
    from ._executor import WebUIExecutor

_log = logging.getLogger("stablenew.webui.executor")  # the name log filters already use


class ProgressPoller:
    """Background thread: progress -> callback, cancel -> interrupt. Never raises into the stage."""

    def __init__(self, executor: WebUIExecutor, stage_type: StageType) -> None:
        self._executor = executor
        self._stage_type = stage_type
        self.part = (0, 1)  # (call number, calls in the stage): one poller serves the whole stage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stablenew-progress", daemon=True)
        self.task: str | None = None  # the force_task_id of the call running now
        self.canceled = False
        self._undecidable = False  # the WebUI cannot tell whose request runs: stop after the call

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        ex = self._executor
        warned = False
        while not self._stop.wait(ex.progress_interval):
            try:
                if not self.canceled and ex.should_cancel and ex.should_cancel():
                    self.canceled = True
                if self.canceled:
                    if self._interrupt_if_ours():
                        return
                    continue
                if ex.on_progress:
                    index, count = self.part
                    fraction = self.fraction(ex.client.progress())
                    if fraction is not None:
                        ex.on_progress(self._stage_type, (index + fraction) / count)
            except WebUIError:
                continue  # progress is best effort; the stage call itself reports real failures
            except Exception:
                # A failing callback (e.g. the state store is briefly down) must not end the thread:
                # it is also what turns a cancel request into an interrupt.
                if not warned:
                    _log.warning(
                        "progress/cancel check failed during %s", self._stage_type.value, exc_info=True
                    )
                    warned = True

    def _interrupt_if_ours(self) -> bool:
        """Interrupt if our request is the one generating; True once nothing is left to do here."""
        if self._undecidable or self._stage_type is StageType.UPSCALE:
            return True  # the call runs to its end; the stage raises Canceled after it
        if self.task is None:
            return False  # the first request is not sent yet
        answer = self._executor.client.task_progress(self.task)
        if answer is None:
            self._undecidable = True
            return True
        if answer.get("active"):
            self._executor.client.interrupt()
            self._executor.client.abort()  # our read ends now, whether or not the WebUI heeds the interrupt
            return True
        return False  # queued behind another client's request, or already done: ask again

    def fraction(self, answer: Mapping[str, Any]) -> float | None:
        """This call's share done, from A1111's ``state`` (``Api.progressapi`` reads the same numbers);
        None while nothing runs (``job_count`` 0: idle, or not begun)."""
        state = answer.get("state")
        if not isinstance(state, Mapping):
            progress = answer.get("progress")
            return float(progress) if isinstance(progress, int | float) and progress > 0 else None
        count, number = _int(state.get("job_count")), _int(state.get("job_no"))
        step, steps = _int(state.get("sampling_step")), _int(state.get("sampling_steps"))
        if count <= 0:
            return None
        within = min(1.0, step / steps) if steps > 0 else 0.0
        if self._stage_type is StageType.ADETAILER:
            # Job 1 is ADetailer's 1-step dummy pass; the jobs it adds per mask found are the real work.
            real = count - 1
            if real <= 0 or number < 1:
                return 0.0
            return max(0.0, min(1.0, (number - 1 + within) / real))
        return max(0.0, min(1.0, (number + within) / count))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
