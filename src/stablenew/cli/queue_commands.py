"""``stablenew queues``, ``pause``, ``resume`` and ``move``: queue control from the shell, through
the same :mod:`stablenew.jobs.queue_control` functions the HTTP API calls."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from stablenew.cli import EXIT_OK

if TYPE_CHECKING:
    import redis


def _connection(args: argparse.Namespace) -> redis.Redis:
    from stablenew.jobs.connection import connect

    return connect(args.settings.redis_url.get_secret_value())


def cmd_queues(args: argparse.Namespace) -> int:
    from stablenew.jobs.queue_control import queue_views

    views = queue_views(_connection(args))
    if args.json:
        print(json.dumps([v.to_dict() for v in views], indent=2))
        return EXIT_OK
    for v in views:
        eta = (
            "empty" if v.queued == 0 else (f"ETA {v.eta_s:.0f} s" if v.eta_s is not None else str(v.eta_note))
        )
        paused = "  PAUSED" if v.paused else ""
        print(
            f"{v.name:<8} queued {v.queued:<4} running {v.started:<3} finished {v.finished:<5} "
            f"failed {v.failed:<4} canceled {v.canceled:<4} workers {v.workers}  {eta}{paused}"
        )
    return EXIT_OK


def cmd_pause(args: argparse.Namespace) -> int:
    from stablenew.jobs.queue_control import pause_queue

    pause_queue(_connection(args), args.queue)
    print(f"{args.queue}: paused (workers take no job from it; running jobs carry on)")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from stablenew.jobs.queue_control import resume_queue

    resume_queue(_connection(args), args.queue)
    print(f"{args.queue}: resumed")
    return EXIT_OK


def cmd_move(args: argparse.Namespace) -> int:
    from stablenew.errors import ConfigError, FieldProblem
    from stablenew.jobs.queue_control import move_job

    if not args.front and args.queue is None:
        raise ConfigError([FieldProblem("move", "say where: --front, --queue Q, or both", has_value=False)])
    print(f"{args.job_id}: {move_job(_connection(args), args.job_id, queue=args.queue, front=args.front)}")
    return EXIT_OK
