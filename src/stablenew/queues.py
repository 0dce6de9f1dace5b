"""The queue names, highest priority first: the one definition settings, jobs and the CLI share.

Imports nothing, so that the CLI's argument parser (``stablenew --help``) can use it for free.
"""

from __future__ import annotations

QUEUES: tuple[str, ...] = ("high", "default", "low")
DEFAULT_QUEUE = "default"

__all__ = ["DEFAULT_QUEUE", "QUEUES"]
