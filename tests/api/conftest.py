"""A real ``stablenew serve`` app on uvicorn (a thread, a free loopback port) over the test Redis.

- ``api``: factory ``api(public_read=False, token=TOKEN, cors="")`` returning an :class:`ApiServer`
  with ``url`` and ``client`` (an httpx client sending the token); stopped after the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn

from api_server import TOKEN, ApiServer
from ports import free_port
from stablenew.api import ApiSettings, create_app
from stablenew.settings import Settings


@pytest.fixture
def api(connection: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    servers: list[tuple[uvicorn.Server, threading.Thread, list[httpx.Client]]] = []

    def start(
        *,
        public_read: bool = False,
        token: str | None = TOKEN,
        cors: str = "",
        conn: redis.Redis | None = None,
    ) -> ApiServer:
        settings = Settings(
            redis_url=redis_url, output_dir=tmp_path / "outputs", retry_max=3, retry_intervals="0"
        )
        api_settings = ApiSettings(token=token, public_read=public_read, cors_origins=cors)
        app = create_app(settings, api_settings, connection=conn or connection, event_interval=0.05)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=url, headers=headers, timeout=30)
        anonymous = httpx.Client(base_url=url, timeout=30)
        servers.append((server, thread, [client, anonymous]))
        return ApiServer(url=url, client=client, anonymous=anonymous, output_dir=tmp_path / "outputs")

    yield start
    for server, thread, clients in servers:
        for c in clients:
            c.close()
        server.should_exit = True
        thread.join(timeout=10)
