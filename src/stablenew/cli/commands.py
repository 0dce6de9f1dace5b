"""The CLI's commands. Each returns an exit code; errors propagate to ``main`` which prints them."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stablenew.cli import EXIT_INPUT, EXIT_JOB, EXIT_OK
from stablenew.settings import Settings, redact_url


def _producer(args: argparse.Namespace, *, preflight: bool = False) -> Any:
    from stablenew.jobs.checks import webui_preflight
    from stablenew.jobs.connection import connect
    from stablenew.jobs.producer import Producer

    settings: Settings = args.settings
    check = webui_preflight(settings) if preflight else None
    return Producer(connect(settings.redis_url.get_secret_value()), settings, preflight=check)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _load_config(args: argparse.Namespace, path: str | Path) -> dict[str, Any]:
    """A config file as read, with ``--prompt`` / ``--negative-prompt`` filled in."""
    from stablenew.config_files import load_config_file
    from stablenew.pipeline import fill_prompt

    return fill_prompt(load_config_file(path), prompt=args.prompt, negative_prompt=args.negative_prompt)


def _warn(lines: Any, source: str | Path) -> None:
    """``--lenient``'s warnings, one line each on stderr (the library also logs them, silenced here)."""
    for line in lines:
        print(f"warning: {source}: {line}", file=sys.stderr)


def _quiet_config_log() -> None:
    import logging

    logging.getLogger("stablenew.config").addHandler(logging.NullHandler())


# ---------------------------------------------------------------------------------- plan / run
def _checked_plan(args: argparse.Namespace) -> Any:
    from stablenew.jobs.checks import build_checked_plan

    _quiet_config_log()
    plan = build_checked_plan(_load_config(args, args.config), source=args.config, lenient=args.lenient)
    _warn((f"ignored {p}" for p in plan.ignored_keys), args.config)
    return plan


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _checked_plan(args)
    if args.json:
        print(plan.model_dump_json(indent=2))
        return EXIT_OK
    print(f"plan for {args.config}: {len(plan)} stage(s), schema_version {plan.schema_version}")
    for index, stage in enumerate(plan):
        cfg = stage.config
        details = []
        if stage.stage_type.is_generation:
            size = f"{cfg.get('width')}x{cfg.get('height')}" if cfg.get("width") else "input size"
            details.append(f"{cfg.get('steps')} steps, {cfg.get('sampler_name')}, {size}")
            if cfg.get("model"):
                details.append(f"model {cfg['model']}")
        if stage.hires_enabled:
            details.append(
                f"hires x{stage.hires_scale_factor} {stage.hires_upscaler_name} denoise {stage.hires_denoise_strength}"
            )
        if stage.refiner_enabled:
            details.append(f"refiner {stage.refiner_model_name} at {stage.refiner_switch_at:.2f}")
        if stage.stage_type.value == "upscale":
            details.append(f"{cfg.get('upscaler')} x{cfg.get('upscaling_resize')}")
        if stage.stage_type.value == "adetailer":
            passes = [cfg["face"]["model"]] + ([cfg["hands"]["model"]] if cfg.get("hands") else [])
            details.append("passes: " + ", ".join(passes))
        print(f"  {index}. {stage.stage_type.value:<9} " + "; ".join(details))
    return EXIT_OK


def _local_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stablenew.cli.progress import JobProgress
    from stablenew.errors import Canceled, StableNewError
    from stablenew.run import PlanRun

    settings: Settings = args.settings
    plan = _checked_plan(args)
    run_id = _local_run_id()
    shown = JobProgress(Console(stderr=True, quiet=args.json))

    def on_progress(stage: Any, fraction: float) -> None:
        shown.update(run_id, recorder.summary()["stages"], "running")

    with shown, PlanRun(settings, plan, run_id, worker=socket.gethostname(), on_progress=on_progress) as run:
        recorder = run.recorder
        run.executor.preflight(plan)
        try:
            run.run()
        except Canceled as exc:
            recorder.canceled(exc)
            raise
        except StableNewError as exc:
            recorder.failed(exc)
            raise
        recorder.finished()
        shown.update(run_id, recorder.summary()["stages"], "finished")
    if args.json:
        _print_json(recorder.summary())
        return EXIT_OK
    _print_outputs(recorder.summary(), settings.output_dir)
    return EXIT_OK


def _print_outputs(view: dict[str, Any], root: Path) -> None:
    for stage in view["stages"]:
        for out in stage["outputs"]:
            print(
                f"  {stage['index']}. {stage['type']:<9} {root / out['path']}  ({out['width']}x{out['height']}, seed {out['seed']})"
            )
    if view.get("manifest"):
        print(f"manifest: {view['manifest']}")


# ---------------------------------------------------------------------------------- queue
def _config_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            patterns = ("*.json", "*.yaml", "*.yml")
            found = sorted({p for pattern in patterns for p in path.glob(pattern) if p.is_file()})
            if not found:
                from stablenew.errors import ConfigError, FieldProblem

                message = "directory holds no *.json, *.yaml or *.yml config"
                raise ConfigError([FieldProblem("configs", message, raw)])
            files.extend(found)
        else:
            files.append(path)
    return files


def cmd_submit(args: argparse.Namespace) -> int:
    from stablenew.errors import ConfigError, FieldProblem

    files = _config_files(args.configs)
    if args.job_id and len(files) > 1:
        raise ConfigError([FieldProblem("--id", "can only name a single config, not a batch", args.job_id)])
    configs = [_load_config(args, f) for f in files]  # all read and checked before anything is enqueued
    producer = _producer(args, preflight=args.preflight)
    _quiet_config_log()
    if len(files) == 1 and not Path(args.configs[0]).is_dir():
        subs = [
            producer.submit(
                configs[0],
                queue=args.queue,
                job_id=args.job_id,
                source=str(files[0]),
                lenient=args.lenient,
                reuse=args.reuse,
            )
        ]
    else:
        sources = [str(f) for f in files]
        subs = producer.submit_many(
            configs, queue=args.queue, sources=sources, lenient=args.lenient, reuse=args.reuse
        )
    for s, f in zip(subs, files, strict=True):
        _warn(s.warnings, f)
    batch = len(subs) > 1 or Path(args.configs[0]).is_dir()
    if args.json:
        if batch:  # which file became which job
            _print_json([s.to_dict() | {"source": str(f)} for s, f in zip(subs, files, strict=True)])
        else:
            _print_json(subs[0].to_dict())
    else:
        for s, f in zip(subs, files, strict=True):
            note = " (already submitted: not enqueued again)" if s.existing else ""
            print(f"{s.job_id}  queue={s.queue}  stages={' -> '.join(s.to_dict()['stages'])}  {f}{note}")
    if not args.wait:
        return EXIT_OK
    from stablenew.cli.watch import watch_jobs

    return watch_jobs(producer, [s.job_id for s in subs], interval=0.5, quiet=args.json)


def cmd_rerun(args: argparse.Namespace) -> int:
    from stablenew.jobs.rerun import parse_assignment

    changes = dict(parse_assignment(text) for text in args.changes)
    producer = _producer(args)
    sub = producer.rerun(args.job_id, changes, queue=args.queue, reuse=args.reuse)
    if args.json:
        _print_json(sub.to_dict())
    else:
        changed = (
            ", ".join(f"{key}={json.dumps(value)}" for key, value in changes.items()) or "nothing changed"
        )
        print(f"{sub.job_id}  queue={sub.queue}  stages={' -> '.join(sub.to_dict()['stages'])}  ({changed})")
    if not args.wait:
        return EXIT_OK
    from stablenew.cli.watch import watch_jobs

    return watch_jobs(producer, [sub.job_id], interval=0.5, quiet=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    view = _producer(args).status(args.job_id)
    if args.json:
        _print_json(view.to_dict())
        return EXIT_OK
    from stablenew.cli.watch import render_text

    print(render_text(view))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from stablenew.cli.watch import watch_jobs

    producer = _producer(args)
    return watch_jobs(producer, [producer.resolve_job_id(args.job_id)], interval=args.interval)


def cmd_list(args: argparse.Namespace) -> int:
    from stablenew.errors import ConfigError, FieldProblem
    from stablenew.jobs.listing import parse_since

    if args.limit < 1:
        raise ConfigError([FieldProblem("--limit", "must be at least 1", args.limit)])
    since = parse_since(args.since) if args.since else None
    page = _producer(args).list_page(
        queue=args.queue,
        status=args.status,
        since=since,
        grep=args.grep,
        limit=args.limit,
        cursor=args.cursor,
    )
    more = f"next page: --cursor {page.next_cursor}" if page.next_cursor else None
    if args.json:
        _print_json([v.to_dict() for v in page.views])
        if more:
            print(more, file=sys.stderr)
        return EXIT_OK
    if not page.views:
        print("no jobs")
    for v in page.views:
        current = next((s for s in v.stages if s["status"] == "running"), None)
        done = sum(1 for s in v.stages if s["status"] in ("finished", "reused"))
        reused = sum(1 for s in v.stages if s["status"] == "reused")
        where = (
            f"running {current['type']} {current['progress']:.0%}"
            if current
            else f"{done}/{len(v.stages)} stages" + (f" ({reused} reused)" if reused else "")
        )
        model = f"  {v.checkpoint}" if v.checkpoint else ""
        print(f"{v.job_id}  {_local_time(v.enqueued_at)}  {v.queue:<7} {v.status:<9} {where}{model}")
    if more:
        print(more)
    return EXIT_OK


def _local_time(iso: str | None) -> str:
    if not iso:
        return "-" * 19
    when = datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cmd_workers(args: argparse.Namespace) -> int:
    from stablenew.jobs.worker_views import list_workers

    views = list_workers(_producer(args).connection)
    if args.json:
        _print_json([v.to_dict() for v in views])
        return EXIT_OK
    if not views:
        print("no workers")
    for v in views:
        state = "paused: WebUI down" if v.state == "suspended" and v.webui_failures else v.state
        doing = f"job {v.current_job}" if v.current_job else ""
        failing = f"{v.webui_failures} WebUI failures in a row" if v.webui_failures else ""
        age = f"heartbeat {v.heartbeat_age_s:.0f} s ago" if v.heartbeat_age_s is not None else ""
        held = f"holds {v.checkpoint} ({v.swaps} swaps)" if v.checkpoint else f"{v.swaps} swaps"
        details = ", ".join(x for x in (doing, held, failing, age) if x)
        print(f"{v.name}  {v.hostname}:{v.pid}  {state:<18} {','.join(v.queues):<17} {details}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    producer = _producer(args)
    job_id = producer.resolve_job_id(args.job_id)
    print(f"{job_id}: {producer.cancel(job_id)}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    sub = _producer(args).retry(args.job_id)
    print(f"{sub.job_id}: requeued on {sub.queue}; it resumes after its last finished stage")
    return EXIT_OK


# ---------------------------------------------------------------------------------- services
def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from stablenew.errors import RedisUnavailable, WebUIError
    from stablenew.jobs import job_run  # noqa: F401  # imported before forking: horses start warm
    from stablenew.jobs.connection import connect, map_redis_errors
    from stablenew.jobs.rq_classes import make_worker
    from stablenew.webui import WebUIClient

    settings: Settings = args.settings
    queues = settings.queues  # the worker's queue arguments, when given, are in settings already
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    redis_url = settings.redis_url.get_secret_value()
    while True:
        try:
            connection = connect(redis_url, retry_seconds=settings.redis_retry_seconds)
            with WebUIClient.from_settings(settings) as client:
                client.ping()
            break
        except (RedisUnavailable, WebUIError) as exc:
            if not args.wait:
                raise
            print(f"waiting: {exc}", file=sys.stderr)
            time.sleep(5)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = make_worker(connection, queues, name=name, settings=settings)
    print(
        f"worker {name}: queues {' > '.join(queues)}, WebUI {redact_url(settings.webui_url)}, outputs {settings.output_dir.resolve()}",
        file=sys.stderr,
    )
    try:
        with map_redis_errors():  # Redis gone for longer than the worker rides out: exit 4
            worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
            ended_by = getattr(worker, "ended_by", None)
            if ended_by is not None:  # RQ's loop logged it and returned: exit with the cause
                raise ended_by
    except ValueError as exc:
        if "active worker named" not in str(exc):
            raise
        from stablenew.errors import ConfigError, FieldProblem

        raise ConfigError(
            [FieldProblem("--name", "a live worker already uses this name: give each worker its own", name)]
        ) from None
    return EXIT_OK


def cmd_simulator(args: argparse.Namespace) -> int:
    from stablenew.simulator import serve

    try:
        serve(
            args.host,
            args.port,
            latency=args.latency,
            models=args.models,
            swap_seconds=args.swap_seconds,
            swap_seconds_by_model=dict(args.swap_seconds_for),
        )
    except ValueError as exc:  # a negative time, or a swap time for a checkpoint not offered
        print(f"stablenew simulator: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


__all__ = [name for name in dir() if name.startswith("cmd_")] + ["EXIT_INPUT", "EXIT_JOB"]
