"""A fakeredis client that lets other clients' commands run between two of its replies, as they may
on a real Redis: for the tests of what stays true whatever lands in between."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis


def on_replies(server: fakeredis.FakeServer, callback: Callable[[int], None]) -> Any:
    """A client on ``server`` that calls ``callback(n)`` once it has read its n-th reply, as
    another client's commands may run on Redis between two of ours."""
    replies = 0
    armed = False

    class Connection(fakeredis.FakeRedisConnection):
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal replies
            reply = super().read_response(*args, **kwargs)
            if armed:
                replies += 1
                callback(replies)
            return reply

    client = fakeredis.FakeRedis(server=server, connection_class=Connection)
    client.ping()  # the connection's own handshake is not one of the replies counted
    armed = True
    return client
