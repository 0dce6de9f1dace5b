"""``stablenew watch`` / ``submit --wait`` / ``demo``: follow jobs until they end, then say where
their images are; and the plain-text view ``status`` prints."""

from __future__ import annotations

import sys
import time
from pathlib import PurePath
from typing import Any, TextIO

from stablenew.cli import EXIT_JOB, EXIT_OK
from stablenew.cli.progress import ICONS, JobProgress


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
    if getattr(view, "checkpoint", None):
        lines.append(f"  checkpoint {view.checkpoint}")
    if getattr(view, "waiting_for", None):
        lines.append(f"  waiting for {view.waiting_for}")
    for st in view.stages:
        bar = "#" * int(st["progress"] * 20)
        lines.append(
            f"  {ICONS.get(st['status'], '?')} {st['index']}. {st['type']:<9} {st['status']:<9} "
            f"[{bar:<20}] {st['progress']:4.0%} attempts={st['attempts']}"
        )
        if st.get("reused_from"):
            source = st["reused_from"]
            lines.append(f"       reused from job {source['job_id']} stage {source['index']} (no WebUI call)")
        for out in st["outputs"]:
            lines.append(f"       {out['path']} ({out['width']}x{out['height']}, seed {out['seed']})")
        if st["error"]:
            lines.append(f"       error: {st['error']}")
    if view.error:
        lines.append(f"error: {view.error}")
    lines.extend(_where(view))
    return "\n".join(lines)


def _where(view: Any) -> list[str]:
    """Where the images are, as the worker recorded it: output paths are relative to the worker's
    output root, which the manifest path (``<root>/<job_id>/manifest.json``) names; the watcher's
    own output folder has nothing to do with it (the worker may run on another host)."""
    has_outputs = any(st["outputs"] for st in view.stages)
    if not view.manifest:
        return ["  (image paths are relative to the worker's output root)"] if has_outputs else []
    manifest = PurePath(view.manifest)
    lines = []
    if has_outputs and manifest.parent.name == view.job_id:
        lines.append(
            f"output root: {manifest.parent.parent} (on the worker's host; image paths are relative to it)"
        )
    lines.append(f"manifest: {view.manifest}")
    return lines


def print_outcome(view: Any, out: TextIO) -> None:
    """What a job ended with: its status, its images, its error, its manifest."""
    print(f"job {view.job_id}: {view.status}", file=out)
    for st in view.stages:
        source = st.get("reused_from")
        note = f"  reused from {source['job_id']}" if source else ""
        for o in st["outputs"]:
            print(
                f"  {st['index']}. {st['type']:<9} {o['path']} ({o['width']}x{o['height']}){note}", file=out
            )
    if view.error:
        print(f"  error: {view.error}", file=out)
    for line in _where(view):
        print(f"  {line}", file=out)


def watch_jobs(producer: Any, job_ids: list[str], *, interval: float = 0.5, quiet: bool = False) -> int:
    """Show live progress until every job ends; exit 5 if any failed or was canceled. ``quiet``
    sends everything to stderr (``submit --wait --json`` keeps stdout for the JSON)."""
    from rich.console import Console

    console = Console(stderr=quiet)
    views = [producer.status(j) for j in job_ids]
    with JobProgress(console) as progress:
        while True:
            for view in views:
                progress.update(view.job_id, view.stages, view.status)
            if all(v.done for v in views):
                break
            time.sleep(interval)
            views = [producer.status(j) for j in job_ids]
    out = sys.stderr if quiet else sys.stdout
    for view in views:
        print_outcome(view, out)
    return EXIT_OK if all(v.status == "finished" for v in views) else EXIT_JOB
