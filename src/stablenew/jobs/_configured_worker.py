"""The base of each part of our worker class: RQ's ``BaseWorker`` with the settings it runs under."""

from __future__ import annotations

from rq.worker.base import BaseWorker

from stablenew.settings import Settings


class ConfiguredWorker(BaseWorker):
    """RQ's ``BaseWorker`` with its :class:`~stablenew.settings.Settings`: those that
    :func:`~stablenew.jobs.rq_classes.make_worker` gave it, else those of the environment, read when
    first needed."""

    settings: Settings

    def _settings(self) -> Settings:
        if not hasattr(self, "settings"):
            self.settings = Settings()
        return self.settings
