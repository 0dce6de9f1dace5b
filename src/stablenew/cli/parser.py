"""The argument parser. Every command's help ends with an example."""

from __future__ import annotations

import argparse
from typing import Any

from stablenew import __version__
from stablenew.queues import DEFAULT_QUEUE, QUEUES


def _lazy(module: str, name: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        import importlib

        func = getattr(importlib.import_module(module), name)
        result: int = func(args)
        return result

    return handler


def _command(
    sub: Any,
    name: str,
    help_text: str,
    example: str,
    handler: tuple[str, str],
    *,
    uses_settings: bool = True,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # uses_settings: main builds args.settings (environment + flags) before the command runs.
    parser.set_defaults(handler=_lazy(*handler), uses_settings=uses_settings)
    return parser


def _names(text: str) -> list[str]:
    """A comma-separated list of names, e.g. ``--models a.safetensors,b.safetensors``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


def _swap_time(text: str) -> tuple[str, float]:
    """``NAME=SECONDS``, e.g. ``--swap-seconds-for sdxl.safetensors=5``."""
    name, sep, seconds = text.rpartition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or not name.strip() or value < 0:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS with SECONDS >= 0, got {text!r}")
    return name.strip(), value


def _config_flags(p: argparse.ArgumentParser) -> None:
    """The flags every command that reads a config takes (plan, run, submit)."""
    p.add_argument(
        "--prompt", help="the txt2img prompt (StableNew's presets carry none); replaces the file's"
    )
    p.add_argument("--negative-prompt", help="the txt2img negative prompt; replaces the file's")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="unknown config keys are warnings, not errors (presets from a newer StableNew); never sent",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stablenew",
        description="A Redis/RQ pipeline queue for StableNew's Stable Diffusion jobs on AUTOMATIC1111 WebUIs.",
        epilog="example:\n  stablenew submit producer/examples/full_pipeline.json --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stablenew {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--redis-url", help="Redis URL (env STABLENEW_REDIS_URL)")
    parser.set_defaults(handler=None, debug=False, uses_settings=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    cmds = "stablenew.cli.commands"

    p = _command(
        sub,
        "plan",
        "validate a config and print its plan (no Redis, no WebUI)",
        "stablenew plan producer/examples/full_pipeline.json --json",
        (cmds, "cmd_plan"),
        uses_settings=False,
    )
    p.add_argument(
        "config", help="a pipeline config file (JSON, or YAML named .yaml/.yml; any accepted shape)"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON (the wire format)")
    _config_flags(p)

    p = _command(
        sub,
        "run",
        "run a config locally against a WebUI, without Redis",
        "stablenew run producer/examples/txt2img_only.json --webui-url http://127.0.0.1:7860",
        (cmds, "cmd_run"),
    )
    p.add_argument("config")
    p.add_argument("--webui-url", help="WebUI base URL (env STABLENEW_WEBUI_URL)")
    p.add_argument("--output-dir", help="output root (env STABLENEW_OUTPUT_DIR)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    _config_flags(p)

    p = _command(
        sub,
        "submit",
        "validate and enqueue configs (several files or a directory = one batch)",
        "stablenew submit producer/examples/ --queue high --json",
        (cmds, "cmd_submit"),
    )
    p.add_argument("configs", nargs="+", help="config files or directories of *.json / *.yaml / *.yml")
    p.add_argument("--queue", default=DEFAULT_QUEUE, choices=QUEUES)
    p.add_argument(
        "--id", dest="job_id", help="your own job id ([A-Za-z0-9_-]+); submitting it again is a no-op"
    )
    p.add_argument("--wait", action="store_true", help="watch the job(s) until they end; exit 5 if one fails")
    p.add_argument(
        "--preflight",
        action="store_true",
        help="first ask the WebUI (--webui-url) whether it has every model, sampler and upscaler named",
    )
    p.add_argument("--webui-url", help="WebUI base URL for --preflight (env STABLENEW_WEBUI_URL)")
    p.add_argument(
        "--json", action="store_true", help='print {"job_id", "queue", "stages"} (a list for a batch)'
    )
    _config_flags(p)
    p.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_false",
        help="run every stage on the WebUI, even one another job already ran with the same request",
    )

    p = _command(
        sub,
        "rerun",
        "a new job from a job's config with some keys changed; the stages the change does not touch are reused",
        "stablenew rerun 3f1c... --set adetailer_config.adetailer_denoise=0.5",
        (cmds, "cmd_rerun"),
    )
    p.add_argument("job_id", help="the job id, or a unique prefix of at least 8 characters")
    p.add_argument(
        "--set",
        dest="changes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dotted key of the config as written and its new value (read as JSON, else as text); repeatable",
    )
    p.add_argument("--queue", choices=QUEUES, help="default: the job's own queue")
    p.add_argument("--json", action="store_true", help='print {"job_id", "queue", "stages"} of the new job')
    p.add_argument(
        "--no-reuse", dest="reuse", action="store_false", help="run every stage again on the WebUI"
    )
    p.add_argument("--wait", action="store_true", help="watch the new job until it ends; exit 5 if it fails")

    p = _command(
        sub,
        "status",
        "show a job's status and per-stage state",
        "stablenew status 3f1c... --json",
        (cmds, "cmd_status"),
    )
    p.add_argument("job_id", help="the job id, or a unique prefix of at least 8 characters")
    p.add_argument("--json", action="store_true")

    p = _command(
        sub,
        "watch",
        "live per-stage progress of a job until it ends",
        "stablenew watch 3f1c...",
        (cmds, "cmd_watch"),
    )
    p.add_argument("job_id", help="the job id, or a unique prefix of at least 8 characters")
    p.add_argument("--interval", type=float, default=0.5, help="refresh interval in seconds")

    p = _command(
        sub,
        "list",
        "recent jobs, newest first, with their status and current stage",
        "stablenew list --status failed --since 2h --grep astronaut",
        (cmds, "cmd_list"),
    )
    p.add_argument("--queue", choices=QUEUES)
    p.add_argument(
        "--status",
        choices=("queued", "started", "finished", "failed", "canceled", "stopped", "scheduled", "deferred"),
    )
    p.add_argument("--since", help="enqueued at most this long ago (30m, 2h, 1d) or since an ISO time")
    p.add_argument("--grep", metavar="TEXT", help="only jobs whose config file name or a prompt holds TEXT")
    p.add_argument("--limit", type=int, default=50, help="jobs per page (default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.add_argument("--json", action="store_true", help="print the jobs as status --json does, in a list")

    p = _command(
        sub,
        "workers",
        "the workers: busy, idle, or paused while their WebUI is down, with their current job",
        "stablenew workers --json",
        (cmds, "cmd_workers"),
    )
    p.add_argument("--json", action="store_true")

    p = _command(
        sub,
        "cancel",
        "cancel a queued job, or stop a running one (interrupts the WebUI)",
        "stablenew cancel 3f1c...",
        (cmds, "cmd_cancel"),
    )
    p.add_argument("job_id", help="the job id, or a unique prefix of at least 8 characters")

    p = _command(
        sub,
        "retry",
        "requeue a failed or canceled job; it resumes after its last finished stage",
        "stablenew retry 3f1c...",
        (cmds, "cmd_retry"),
    )
    p.add_argument("job_id", help="the job id, or a unique prefix of at least 8 characters")

    p = _command(
        sub,
        "worker",
        "run a worker for one WebUI (listens on high, default, low by default)",
        "stablenew worker --webui-url http://127.0.0.1:7860 --name gpu0",
        (cmds, "cmd_worker"),
    )
    p.add_argument("queues", nargs="*", help="queue names in priority order (default: high default low)")
    p.add_argument("--webui-url", help="this worker's WebUI (env STABLENEW_WEBUI_URL)")
    p.add_argument(
        "--output-dir", help="output root, shared storage when several hosts (env STABLENEW_OUTPUT_DIR)"
    )
    p.add_argument("--name", help="unique worker name (default: host + pid)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument(
        "--wait", action="store_true", help="wait for Redis and the WebUI instead of refusing to start"
    )

    p = _command(
        sub,
        "simulator",
        "serve an A1111-compatible test double (no GPU; for demos and tests)",
        "stablenew simulator --port 7860 --latency 2",
        (cmds, "cmd_simulator"),
        uses_settings=False,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    p.add_argument(
        "--models",
        type=_names,
        default=None,
        help="checkpoints it offers, comma-separated (e.g. sdxl.safetensors,v1-5.ckpt); the first is loaded",
    )
    p.add_argument(
        "--swap-seconds",
        type=float,
        default=0.0,
        help="seconds a generation waits to load another checkpoint",
    )
    p.add_argument(
        "--swap-seconds-for",
        type=_swap_time,
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="the swap time of one checkpoint (title, file or model name, or hash); repeatable",
    )

    p = _command(
        sub,
        "redis",
        "run the embedded Redis-compatible server in the foreground (for trying stablenew; not persisted)",
        "stablenew redis --port 6379",
        ("stablenew.cli.embedded_server", "cmd_redis"),
    )
    p.add_argument("--port", type=int, default=6379)

    p = _command(
        sub,
        "dashboard",
        "start rq-dashboard for stablenew's JSON jobs, read-only",
        "stablenew dashboard --port 9181",
        ("stablenew.cli.dashboard", "cmd_dashboard"),
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9181)

    queue_cmds = "stablenew.cli.queue_commands"
    p = _command(
        sub,
        "queues",
        "each queue's counts, whether it is paused, its live workers and an ETA",
        "stablenew queues --json",
        (queue_cmds, "cmd_queues"),
    )
    p.add_argument("--json", action="store_true")
    for name, what in (
        ("pause", "workers take no job from a queue (running jobs carry on)"),
        ("resume", "undo pause"),
    ):
        p = _command(sub, name, what, f"stablenew {name} low", (queue_cmds, f"cmd_{name}"))
        p.add_argument("queue", choices=QUEUES)
    p = _command(
        sub,
        "move",
        "move a queued job to the front of its queue, or to another queue",
        "stablenew move 3f1c... --front",
        (queue_cmds, "cmd_move"),
    )
    p.add_argument("job_id")
    p.add_argument("--front", action="store_true", help="to the front (of --queue, or of its own queue)")
    p.add_argument("--queue", choices=QUEUES, help="to this queue (at its back unless --front)")

    p = _command(
        sub,
        "serve",
        "the HTTP API and web console (STABLENEW_API_TOKEN guards changes, and reads unless --public-read)",
        "STABLENEW_API_TOKEN=... stablenew serve --port 8188",
        ("stablenew.cli.serve", "cmd_serve"),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--public-read", action="store_true", help="reads need no token (changes still do)")
    p.add_argument("--output-dir", help="output root the images are served from (env STABLENEW_OUTPUT_DIR)")

    p = _command(
        sub,
        "demo",
        "the whole system on one machine: embedded Redis, simulator, a worker, a job",
        "stablenew demo",
        ("stablenew.cli.demo", "cmd_demo"),
    )
    p.add_argument("--config", default=None, help="config to submit (default: the full four-stage example)")
    p.add_argument("--output-dir", default=None)
    return parser
