"""A worker while its WebUI is down: no jobs, probes with backoff until it answers again.

The breaker (:class:`~stablenew.jobs.resilience.WebUIBreaker`) is shared by the worker and its work
horses; :class:`WebUIOutage` is the part of :class:`~stablenew.jobs.rq_classes.StableNewBaseWorker` that
waits on it before each dequeue.
"""

from __future__ import annotations

import time
from typing import Any

from rq.worker import WorkerStatus

from stablenew.errors import WebUIError
from stablenew.jobs.resilience import WebUIBreaker, probe_webui
from stablenew.settings import redact_url

from ._configured_worker import ConfiguredWorker


class WebUIOutage(ConfiguredWorker):
    """Waits out an open breaker, probing the WebUI with a backoff kept from one outage to the next."""

    _probe_delay: float | None = None  # the probe backoff reached, kept until a stage succeeds

    def _wait_for_webui(self) -> None:
        """While the breaker is open: no jobs; probe the WebUI with backoff until it answers.

        The backoff carries over from one pause to the next until a stage succeeds: a WebUI out of
        memory still answers the probe but fails every generation, and each failed trial must wait
        longer than the last (not hammer it, nor hand the same job back every few milliseconds)."""
        s = self._settings()
        breaker = WebUIBreaker(self.connection, self.name, threshold=s.webui_failure_threshold)
        if not breaker.seen_since_success():
            self._probe_delay = None  # a stage succeeded: the WebUI works again
        if not breaker.is_open():
            return
        self.log.warning(
            "Worker %s: %d WebUI failures in a row; taking no jobs until %s answers",
            self.name,
            breaker.failures(),
            redact_url(s.webui_url),
        )
        self.set_state(WorkerStatus.SUSPENDED)
        self.procline("WebUI down: probing " + redact_url(s.webui_url))  # type: ignore[no-untyped-call]
        previous = self._probe_delay
        delay = previous or s.webui_probe_interval
        wait_first = previous is not None  # the last trial after an answered probe failed again
        while not self._stop_requested:
            if wait_first:
                self.heartbeat()
                _sleep_unless(lambda: self._stop_requested, delay)
                delay = min(delay * 2, s.webui_probe_max)
                if self._stop_requested:
                    break
            wait_first = True
            self.heartbeat()
            try:
                probe_webui(s)
            except WebUIError as exc:
                self.log.info(
                    "Worker %s: WebUI still failing (%s); next probe in %.1f s", self.name, exc, delay
                )
                continue
            breaker.half_open()
            self._probe_delay = delay
            self.log.warning("Worker %s: the WebUI answers again; trying one job", self.name)
            return


def _sleep_unless(stop: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
