"""The one progress renderer of the CLI (``watch``, ``submit --wait``, ``demo``, ``run``).

A row per stage of each job, built on :class:`rich.progress.Progress`: job, stage, status, bar,
percent and the time remaining, which rich estimates from how fast the stage's progress has been
moving. When the output is not a terminal (a log, a pipe, CI) the same tasks are kept without
drawing them, and a plain line is printed each time a stage's status or whole percent changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

ICONS = {
    "pending": "·",
    "running": "▶",
    "finished": "✔",
    "failed": "✘",
    "skipped": "↷",
    "canceled": "■",
    "reused": "♻",
}
SHORT_ID = 12  # what the rows show; every command accepts a unique prefix of 8 or more


class JobProgress:
    """Live per-stage progress of jobs. Feed it with :meth:`update` (a job id and its stages, in
    the shape of ``status --json``'s ``stages``); use it as a context manager."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.progress = Progress(
            TextColumn("{task.fields[job]:<22}"),
            TextColumn("{task.fields[stage]:<12}"),
            TextColumn("{task.fields[state]:<10}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
            refresh_per_second=8,
        )
        self._tasks: dict[tuple[str, int], TaskID] = {}
        self._printed: dict[tuple[str, int], str] = {}

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, job_id: str, stages: Sequence[dict[str, Any]], job_status: str = "") -> None:
        """Show the latest state of one job's stages."""
        for stage in stages:
            key = (job_id, int(stage["index"]))
            status = str(stage["status"])
            label = f"{ICONS.get(status, '?')} {status}"
            job = self._job_label(job_id, job_status, stage)
            name = f"{stage['index']}. {stage['type']}"
            task = self._tasks.get(key)
            if task is None:
                task = self.progress.add_task("", total=1.0, start=False, state=label, job=job, stage=name)
                self._tasks[key] = task
            if status == "running" and not self.progress.tasks[self._index(task)].started:
                self.progress.start_task(task)
            self.progress.update(task, completed=float(stage["progress"]), state=label, job=job, stage=name)
            if status in ("finished", "failed", "skipped", "canceled", "reused"):
                self.progress.stop_task(task)
            if not self.live:
                self._print_change(key, job_id, stage, task)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    @staticmethod
    def _job_label(job_id: str, job_status: str, stage: dict[str, Any]) -> str:
        if stage["index"] != 0:
            return ""
        return f"{job_id[:SHORT_ID]} {job_status}".rstrip()

    def _print_change(self, key: tuple[str, int], job_id: str, stage: dict[str, Any], task: TaskID) -> None:
        text = f"{stage['status']} {stage['progress']:.0%}"
        if self._printed.get(key) == text:
            return
        self._printed[key] = text
        remaining = self.progress.tasks[self._index(task)].time_remaining
        eta = f" ETA {remaining:.0f}s" if stage["status"] == "running" and remaining is not None else ""
        line = f"{job_id[:SHORT_ID]} {stage['index']}. {stage['type']:<9} {text}{eta}"
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


__all__ = ["ICONS", "SHORT_ID", "JobProgress"]
