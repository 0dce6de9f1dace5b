"""The README's "Run it by hand" section, run as written: its own Redis, simulator and worker as
separate processes, then its submit and watch, in a scratch folder. Only the ports change (the
documented ones may be taken on a test machine), and the job id its watch shows is the real one."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Run it by hand", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line.split("#")[0].strip() for line in lines if line.startswith("stablenew ")]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture
def services() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # the worker was started last: stopped first, while Redis still runs
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_run_by_hand_section_works_as_written(
    tmp_path: Path, services: list[subprocess.Popen[str]]
) -> None:
    commands = section_commands()
    verbs = [shlex.split(c)[1] for c in commands]
    assert verbs[:5] == ["redis", "simulator", "worker", "submit", "watch"], commands

    redis_port, webui_port = free_port(), free_port()
    (tmp_path / "producer").symlink_to(ROOT / "producer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env |= {"STABLENEW_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PYTHONUNBUFFERED": "1"}

    def argv(command: str) -> list[str]:
        command = command.replace("6379", str(redis_port)).replace("7860", str(webui_port))
        command = command.replace("--latency 2", "--latency 0.3")
        return [sys.executable, "-m", "stablenew", *shlex.split(command)[1:]]

    def start(command: str) -> None:
        log = (tmp_path / f"{shlex.split(command)[1]}.log").open("w")
        services.insert(
            0, subprocess.Popen(argv(command), cwd=tmp_path, env=env, stdout=log, stderr=log, text=True)
        )

    start(commands[0])
    wait_for_port(redis_port)
    start(commands[1])
    wait_for_port(webui_port)
    start(commands[2])

    submitted = subprocess.run(
        argv(commands[3]), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    watch = commands[4].replace("62ec21bb", job_id[:8])
    watched = subprocess.run(argv(watch), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert watched.returncode == 0, (watched.stdout, watched.stderr, logs)
    assert f"job {job_id}: finished" in watched.stdout
    images = sorted((tmp_path / "outputs" / job_id).glob("*.png"))
    assert [p.name[:2] for p in images] == ["00", "01", "02", "03"]
    assert (tmp_path / "outputs" / job_id / "manifest.json").is_file()
    for image in images:
        assert f"{job_id}/{image.name}" in watched.stdout
