"""``stablenew watch`` / ``submit --wait``: live per-stage progress with rich, and the text view."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

from stablenew.cli import EXIT_JOB, EXIT_OK

_ICONS = {
    "pending": "·",
    "running": "▶",
    "finished": "✔",
    "failed": "✘",
    "skipped": "↷",
    "canceled": "■",
}


def _eta(stage: dict[str, Any]) -> str:
    """Remaining time of a running stage, from its progress so far (linear)."""
    if stage["status"] != "running" or not stage.get("started_at") or stage["progress"] <= 0.02:
        return ""
    started = datetime.fromisoformat(stage["started_at"])
    elapsed = (datetime.now(started.tzinfo) - started).total_seconds()
    remaining = elapsed * (1 - stage["progress"]) / stage["progress"]
    return f"ETA {remaining:4.0f}s"


def render_text(view: Any) -> str:
    """A plain-text status (what ``status`` prints without ``--json``)."""
    lines = [
        f"job {view.job_id}: {view.status}"
        + (
            f" (queue {view.queue}, position {view.position})"
            if view.position is not None
            else f" (queue {view.queue})"
        )
    ]
    for st in view.stages:
        bar = "#" * int(st["progress"] * 20)
        lines.append(
            f"  {_ICONS.get(st['status'], '?')} {st['index']}. {st['type']:<9} {st['status']:<9} "
            f"[{bar:<20}] {st['progress']:4.0%} attempts={st['attempts']} {_eta(st)}".rstrip()
        )
        for out in st["outputs"]:
            lines.append(f"       {out['path']} ({out['width']}x{out['height']}, seed {out['seed']})")
        if st["error"]:
            lines.append(f"       error: {st['error']}")
    if view.error:
        lines.append(f"error: {view.error}")
    if view.manifest:
        lines.append(f"manifest: {view.manifest}")
    return "\n".join(lines)


def _table(views: list[Any]) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("job", "stage", "status", "progress", "", "attempts", "eta"):
        table.add_column(column)
    for view in views:
        for st in view.stages:
            job = f"{view.job_id[:12]} {view.status}" if st["index"] == 0 else ""
            table.add_row(
                job,
                f"{st['index']}. {st['type']}",
                f"{_ICONS.get(st['status'], '?')} {st['status']}",
                ProgressBar(total=1.0, completed=st["progress"], width=30),
                f"{st['progress']:4.0%}",
                str(st["attempts"]),
                _eta(st),
            )
    return table


def watch_jobs(producer: Any, job_ids: list[str], *, interval: float = 0.5, quiet: bool = False) -> int:
    """Show live progress until every job ends; exit 5 if any failed or was canceled."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=quiet)
    views = [producer.status(j) for j in job_ids]
    if console.is_terminal:
        with Live(_table(views), console=console, refresh_per_second=8, transient=False) as live:
            while not all(v.done for v in views):
                time.sleep(interval)
                views = [producer.status(j) for j in job_ids]
                live.update(_table(views))
    else:
        seen: dict[tuple[str, int], str] = {}
        while True:
            for view in views:
                for st in view.stages:
                    key = (view.job_id, st["index"])
                    label = f"{st['status']} {st['progress']:.0%}"
                    if seen.get(key) != label:
                        seen[key] = label
                        print(
                            f"{view.job_id[:12]} {st['index']}. {st['type']:<9} {label} {_eta(st)}".rstrip(),
                            file=sys.stderr if quiet else sys.stdout,
                            flush=True,
                        )
            if all(v.done for v in views):
                break
            time.sleep(interval)
            views = [producer.status(j) for j in job_ids]
    out = sys.stderr if quiet else sys.stdout
    for view in views:
        print(f"job {view.job_id}: {view.status}", file=out)
        root = producer.settings.output_dir
        for st in view.stages:
            for o in st["outputs"]:
                print(
                    f"  {st['index']}. {st['type']:<9} {root / o['path']} ({o['width']}x{o['height']})",
                    file=out,
                )
        if view.error:
            print(f"  error: {view.error}", file=out)
        if view.manifest:
            print(f"  manifest: {view.manifest}", file=out)
    return EXIT_OK if all(v.status == "finished" for v in views) else EXIT_JOB
