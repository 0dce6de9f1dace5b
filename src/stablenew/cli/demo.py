"""``stablenew demo`` (``make demo``): the whole system on one machine, nothing to install.

Starts an embedded Redis-compatible server (unless ``--redis-url`` or ``STABLENEW_REDIS_URL`` is given), the A1111
simulator (unless ``STABLENEW_WEBUI_URL`` is set), one real ``stablenew worker`` process, submits
the full four-stage example, shows per-stage progress until it ends, prints where the images and
manifest are, and shuts everything down.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from stablenew.cli import EXIT_OK
from stablenew.settings import redact_url

_EXAMPLE = "full_pipeline.json"
_SIM_LATENCY_S = 1.2
_SIM_SWAP_S = 0.2  # a checkpoint swap, short: the demo shows the flow, not the wait


def _default_config() -> Path:
    """The full example, from the checkout (``producer/examples``) when run there."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base / "producer" / "examples" / _EXAMPLE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find producer/examples/{_EXAMPLE}; pass --config")


@contextlib.contextmanager
def _redis(url: str | None, given_as: str) -> Iterator[str]:
    if url:
        print(f"redis:   {redact_url(url)} (from {given_as})")
        yield url
        return
    from stablenew.embedded import embedded_redis

    with embedded_redis() as url:
        print(f"redis:   embedded valkey-server at {url}")
        yield url


@contextlib.contextmanager
def _webui() -> Iterator[str]:
    url = os.environ.get("STABLENEW_WEBUI_URL")
    if url:
        print(f"webui:   {redact_url(url)} (from STABLENEW_WEBUI_URL)")
        yield url
        return
    from stablenew.simulator import SimulatedWebUI

    with SimulatedWebUI(latency=_SIM_LATENCY_S, image_cache=True, swap_seconds=_SIM_SWAP_S) as sim:
        print(f"webui:   A1111 simulator at {sim.url} (a test double: no GPU, no model)")
        yield sim.url


@contextlib.contextmanager
def _worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stablenew", "worker", "--name", f"demo-{os.getpid()}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        print(f"worker:  pid {proc.pid}, log {log_path}")
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # RQ's warm shutdown
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: every service is stopped


def cmd_demo(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from stablenew.cli.watch import watch_jobs
    from stablenew.config_files import load_config_file
    from stablenew.jobs.connection import connect
    from stablenew.jobs.producer import Producer

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    config_path = Path(args.config) if args.config else _default_config()
    settings = args.settings  # checked before anything starts
    output_dir = settings.output_dir.resolve()
    config = load_config_file(config_path)
    given_redis = args.redis_url or os.environ.get("STABLENEW_REDIS_URL")
    given_as = "--redis-url" if args.redis_url else "STABLENEW_REDIS_URL"
    with (
        _redis(given_redis and settings.redis_url.get_secret_value(), given_as) as redis_url,
        _webui() as webui_url,
    ):
        env = dict(os.environ)
        env |= {
            "STABLENEW_REDIS_URL": redis_url,
            "STABLENEW_WEBUI_URL": webui_url,
            "STABLENEW_OUTPUT_DIR": str(output_dir),
            "STABLENEW_PROGRESS_INTERVAL": "0.25",
        }
        settings = settings.model_copy(
            update={"redis_url": SecretStr(redis_url), "webui_url": webui_url, "output_dir": output_dir}
        )
        with _worker(env, output_dir / "demo-worker.log"):
            producer = Producer(connect(redis_url), settings)
            sub = producer.submit(config, source=str(config_path))
            stages = " -> ".join(sub.to_dict()["stages"])
            print(f"submit:  {config_path.name} as job {sub.job_id} ({stages})\n")
            code = watch_jobs(producer, [sub.job_id], interval=0.25)
    print(
        "\nall services stopped."
        if code == EXIT_OK
        else "\nthe job did not finish; see the worker log above."
    )
    return code
