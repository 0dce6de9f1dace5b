"""Webhooks sent by the worker once a job's end is recorded, beside its next job.

A run of a job (in the work horse) does not POST its webhook itself: it leaves the delivery in
Redis (:class:`WebhookOutbox`, one per job). The worker takes it once the job's end is recorded
(RQ's status included), after the horse exited, and hands it to :class:`WebhookSender`, a thread of
the worker's own process that sends one delivery at a time within ``webhook_deadline`` seconds. So
a receiver that calls ``status`` in its handler sees the end, and a slow receiver never holds the
GPU: the worker takes its next job at once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

import redis

from stablenew.jobs.keys import webhook_key
from stablenew.run import delivery_address, notify
from stablenew.settings import Settings

log = logging.getLogger("stablenew.worker")


class WebhookOutbox:
    """The webhook each job left to be sent: ``{"url": ..., "summary": {...}}`` at one key per job."""

    def __init__(self, connection: redis.Redis, *, ttl: int) -> None:
        self.connection = connection
        self.ttl = ttl

    def put(self, job_id: str, url: str, summary: dict[str, Any], *, pipeline: Any = None) -> None:
        doc = json.dumps({"url": url, "summary": summary}, separators=(",", ":"))
        (pipeline or self.connection).set(webhook_key(job_id), doc, ex=self.ttl)

    def take(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """The job's delivery, removed in the same step (it is sent at most once)."""
        with self.connection.pipeline() as pipe:
            pipe.get(webhook_key(job_id))
            pipe.delete(webhook_key(job_id))
            raw, _ = pipe.execute()
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return str(doc["url"]), dict(doc["summary"])
        except (ValueError, TypeError, KeyError):
            log.warning("job %s: its webhook record is unreadable; not sent", job_id)
            return None


class WebhookSender:
    """A daemon thread that sends deliveries one at a time, each within ``settings.webhook_deadline``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stablenew-webhooks", daemon=True)
        self._thread.start()

    def send(self, url: str, summary: dict[str, Any]) -> None:
        self._queue.put((url, summary))

    def close(self, timeout: float | None = None) -> None:
        """Send what is waiting (each delivery within its deadline), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            deliver(self.settings, *item)


def deliver(settings: Settings, url: str, summary: dict[str, Any]) -> bool:
    """Send one webhook within ``settings.webhook_deadline``, if the URL is still allowed; never raises."""
    job_id = summary.get("job_id")
    address, refusal = delivery_address(settings, url)
    if refusal is not None:
        log.warning("job %s: webhook not sent: the callback URL's %s", job_id, refusal)
        return False
    secret = settings.webhook_secret
    try:
        return notify(
            url,
            summary,
            secret=secret.get_secret_value() if secret else None,
            deadline=settings.webhook_deadline,
            address=address,
        )
    except Exception:  # a webhook must never fail the job or stop the worker
        log.exception("job %s: webhook delivery crashed", job_id)
        return False
