"""A minimal GUI integration: submit a config, follow its progress, cancel it (public API only).

A GUI does the same three things, driven by its own timer (a Qt ``QTimer``, a Tk ``after``):

1. Run pressed: ``StageSequencer().build_plan(config)`` shows config errors at once, without Redis;
   then ``Producer.submit(plan)``; keep the job id.
2. Every half second: ``Producer.status(job_id)``; draw ``view.stages`` (type, status, progress).
3. Cancel pressed: ``Producer.cancel(job_id)``; keep polling until the job ends (``view.done``).

Run it against a running stack (Redis plus at least one worker), for example the Docker one with the
simulator (``docker compose --profile simulator up -d --build simulator worker-sim``)::

    export STABLENEW_REDIS_URL=redis://:$REDIS_PASSWORD@127.0.0.1:6379/0
    python producer/gui_example.py producer/examples/full_pipeline.json
    python producer/gui_example.py --cancel-after 3

Exit codes follow the CLI: 0 finished, 2 bad config, 4 Redis unreachable, 5 failed or canceled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stablenew import (
    ConfigError,
    InvalidStagePlanError,
    Producer,
    RedisUnavailable,
    StageSequencer,
    load_config_file,
)
from stablenew.jobs.connection import connect

if TYPE_CHECKING:
    from stablenew.jobs.producer import JobView

DEFAULT_CONFIG = Path(__file__).resolve().parent / "examples" / "full_pipeline.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EXIT_OK, EXIT_INPUT, EXIT_REDIS, EXIT_JOB, EXIT_INTERRUPTED = 0, 2, 4, 5, 130


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="a pipeline config (JSON)")
    parser.add_argument("--queue", default="default", choices=("high", "default", "low"))
    parser.add_argument(
        "--cancel-after", type=float, metavar="SECONDS", help="press Cancel this long after submitting"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between status polls")
    return parser.parse_args(argv)


def status_line(view: JobView) -> str:
    """One line, as a GUI's status bar would show it."""
    if view.status == "queued" and view.position is not None:
        return f"queued, position {view.position} on {view.queue}"
    total = len(view.stages)
    running = next((s for s in view.stages if s["status"] == "running"), None)
    if running is not None:
        return (
            f"{view.status}: stage {running['index'] + 1}/{total} {running['type']} {running['progress']:.0%}"
        )
    done = sum(1 for s in view.stages if s["status"] in ("finished", "skipped"))
    return f"{view.status}: {done}/{total} stages done"


def follow(producer: Producer, job_id: str, *, interval: float, cancel_after: float | None) -> JobView:
    """Poll until the job ends, printing each change; press Cancel once ``cancel_after`` has passed."""
    start = time.monotonic()
    last = ""
    cancel_pressed = False
    while True:
        view = producer.status(job_id)
        line = status_line(view)
        if line != last:
            print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)
            last = line
        if view.done:
            return view
        if cancel_after is not None and not cancel_pressed and time.monotonic() - start >= cancel_after:
            print(f"cancel: {producer.cancel(job_id)}", flush=True)
            cancel_pressed = True
        time.sleep(interval)


def show_result(view: JobView) -> None:
    """What a GUI shows when the job ends: each stage, its images, the manifest, any error."""
    for stage in view.stages:
        images = ", ".join(f"{o['path']} ({o['width']}x{o['height']})" for o in stage["outputs"]) or "-"
        print(f"  {stage['index']}. {stage['type']:<9} {stage['status']:<9} {images}")
        if stage["error"]:
            print(f"     error: {stage['error']}")
    if view.manifest:
        print(f"  manifest: {view.manifest}")
    if view.error:
        print(f"  error: {view.error}")
    print(f"final status: {view.status}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    redis_url = os.environ.get("STABLENEW_REDIS_URL", DEFAULT_REDIS_URL)
    job_id = None
    try:
        plan = StageSequencer().build_plan(load_config_file(args.config))
        producer = Producer(connect(redis_url))
        submission = producer.submit(plan, queue=args.queue, source=args.config)
        job_id = submission.job_id
        stages = " -> ".join(submission.to_dict()["stages"])
        print(f"submitted {Path(args.config).name} as job {job_id} on {submission.queue}: {stages}")
        view = follow(producer, job_id, interval=args.interval, cancel_after=args.cancel_after)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error in {exc.source or args.config}: {problem}", file=sys.stderr)
        return EXIT_INPUT
    except InvalidStagePlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except KeyboardInterrupt:
        if job_id is not None:
            print(f"\ninterrupted; job {job_id} keeps running (stablenew cancel {job_id})", file=sys.stderr)
        return EXIT_INTERRUPTED
    show_result(view)
    return EXIT_OK if view.status == "finished" else EXIT_JOB


if __name__ == "__main__":
    raise SystemExit(main())
