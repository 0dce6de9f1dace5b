"""The one progress renderer: rich.progress rows on a terminal, a plain line per change otherwise."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from stablenew.cli.progress import JobProgress

JOB = "62ec21bb-b44a-4f0d-81dc-c4c1b94401dc"


def stages(*rows: tuple[str, float]) -> list[dict[str, Any]]:
    types = ("txt2img", "img2img", "upscale", "adetailer")
    return [
        {"index": i, "type": types[i], "status": status, "progress": progress}
        for i, (status, progress) in enumerate(rows)
    ]


def test_without_a_terminal_it_prints_one_plain_line_per_change_and_nothing_else():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)

    with JobProgress(console) as shown:
        shown.update(JOB, stages(("running", 0.4), ("pending", 0.0)), "started")
        shown.update(JOB, stages(("running", 0.4), ("pending", 0.0)), "started")  # no change
        shown.update(JOB, stages(("finished", 1.0), ("running", 0.5)), "started")

    lines = out.getvalue().splitlines()
    assert lines[0] == "62ec21bb-b44 0. txt2img   running 40%"
    assert lines[1] == "62ec21bb-b44 1. img2img   pending 0%"
    assert lines[2] == "62ec21bb-b44 0. txt2img   finished 100%"
    assert lines[3].startswith("62ec21bb-b44 1. img2img   running 50%")
    assert len(lines) == 4
    assert "\x1b[" not in out.getvalue()


def test_on_a_terminal_it_draws_a_row_per_stage_with_bar_percent_and_time_remaining():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)

    with JobProgress(console) as shown:
        shown.update(JOB, stages(("finished", 1.0), ("running", 0.25)), "started")
        shown.progress.refresh()

    screen = out.getvalue()
    assert "62ec21bb-b44 started" in screen
    assert "0. txt2img" in screen and "1. img2img" in screen
    assert "100%" in screen and "25%" in screen
    assert "━" in screen  # rich's bar
    assert "-:--:--" in screen or "0:00:" in screen  # TimeRemainingColumn
