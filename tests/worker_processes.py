"""Worker subprocesses for the tests: start, find the work horse, stop the whole family.

Shared by tests/conftest.py (the ``worker_process`` fixture) and by tests that need the classes
themselves (``from worker_processes import WorkerProcess``): a module, because ``conftest`` is not
importable by name from every folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Worker
from rq.serializers import JSONSerializer

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def _parent_map() -> dict[int, list[int]]:
    """Live processes by parent pid, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    tree = _parent_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@dataclass
class WorkerProcess:
    """One ``stablenew worker`` subprocess."""

    name: str
    queues: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log_path: Path
    seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def horse_pid(self, timeout: float = 10.0) -> int:
        """The work horse: the child RQ forked for the current job (it leads its own process group;
        the scheduler child stays in the worker's group). RQ keeps this pid in memory only."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in _parent_map().get(self.pid, []):
                try:
                    if os.getpgid(child) == child and _alive(child):
                        self.seen.add(child)
                        return child
                except ProcessLookupError:
                    continue
            time.sleep(0.05)
        raise AssertionError(f"worker {self.name} has no work horse after {timeout} s\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (RQ's warm shutdown), then SIGKILL of its group and of every descendant."""
        family = set(descendants(self.pid)) | self.seen
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                family |= set(descendants(self.pid))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        for pid in family:  # a horse outlives its parent: RQ gives it its own process group
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


StartWorker = Callable[..., WorkerProcess]


def wait_for_worker(connection: redis.Redis, worker: WorkerProcess, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Matched by pid too: a worker restarted under a dead one's name is not ready while only the
        # dead one's registration is there.
        registered = {(w.name, w.pid) for w in Worker.all(connection=connection, serializer=JSONSerializer)}
        if (worker.name, worker.pid) in registered:
            return
        if not worker.alive():
            raise AssertionError(
                f"worker {worker.name} exited with {worker.proc.returncode} before it was ready:\n{worker.log()}"
            )
        time.sleep(0.1)
    raise AssertionError(f"worker {worker.name} not registered in Redis after {timeout} s:\n{worker.log()}")


def subprocess_env(redis_url: str, output_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``stablenew`` subprocess: this Redis, these outputs, fast progress, no
    retry wait. STABLENEW_* variables of the calling shell are dropped so that they cannot change
    the tests; ``extra`` adds STABLENEW_* settings (``webui_url="..."`` sets STABLENEW_WEBUI_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env.update(
        {
            "STABLENEW_REDIS_URL": redis_url,
            "STABLENEW_OUTPUT_DIR": str(output_dir),
            "STABLENEW_PROGRESS_INTERVAL": "0.1",
            "STABLENEW_RETRY_INTERVALS": "0",
            "PYTHONUNBUFFERED": "1",
            **{f"STABLENEW_{key.upper()}": value for key, value in extra.items()},
        }
    )
    return env
