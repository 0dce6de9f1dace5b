"""``stablenew serve`` as a command: refuses without a token or Redis, and serves with them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api_server import TOKEN
from ports import free_port

pytestmark = pytest.mark.integration


def test_serve_refuses_to_start_without_a_token(run_cli) -> None:
    result = run_cli("serve", "--port", str(free_port()))
    assert result.returncode == 2
    assert "STABLENEW_API_TOKEN: must be set" in result.stderr


def test_serve_exits_4_when_redis_is_unreachable(run_cli, closed_port: int) -> None:
    env = {"STABLENEW_API_TOKEN": TOKEN, "STABLENEW_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    result = run_cli("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 4
    assert "cannot reach Redis" in result.stderr


def test_serve_answers_on_loopback_with_the_token_and_stops_on_sigterm(
    stablenew_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stablenew", "serve", "--port", str(port), "--public-read"],
        env={**stablenew_env, "STABLENEW_API_TOKEN": TOKEN},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/queues", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
                time.sleep(0.1)
        assert answer.status_code == 200
        assert [q["name"] for q in answer.json()] == ["high", "default", "low"]
        refused = httpx.post(f"http://127.0.0.1:{port}/v1/queues/low/pause", timeout=5)
        assert refused.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (systemd counts that as a clean stop)
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"at http://127.0.0.1:{port}/ (reads: anyone; changes: the token)" in output
