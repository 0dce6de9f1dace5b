"""A job's webhook, sent by the worker once the job's end is recorded (:mod:`stablenew.jobs._webhooks`).

:class:`WebhookHandOff` is the part of :class:`~stablenew.jobs.rq_classes.StableNewBaseWorker` that takes
the delivery a run left and hands it to the worker's sending thread.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job

from ._configured_worker import ConfiguredWorker
from ._webhooks import WebhookOutbox, WebhookSender


class WebhookHandOff(ConfiguredWorker):
    """After each job, its webhook (if its run left one) goes to a thread while the worker goes on."""

    _webhooks: WebhookSender | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's, then the job's webhook (if its run left one): its end is recorded by now, RQ's
        status included, and a thread sends it while this worker takes its next job."""
        try:
            super().execute_job(job, queue)
        finally:
            self._send_webhook(job.id)

    def _send_webhook(self, job_id: str) -> None:
        s = self._settings()
        try:
            delivery = WebhookOutbox(self.connection, ttl=max(s.failure_ttl, s.result_ttl)).take(job_id)
        except redis.RedisError:
            self.log.warning("Worker %s: job %s: its webhook could not be read from Redis", self.name, job_id)
            return
        if delivery is None:
            return
        if self._webhooks is None:
            self._webhooks = WebhookSender(s)
        self._webhooks.send(*delivery)
