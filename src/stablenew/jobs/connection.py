"""Connecting to Redis, with errors that say what to do (and never show a password)."""

from __future__ import annotations

from typing import Any

import redis

from stablenew.errors import RedisUnavailable
from stablenew.settings import redact_url


def connect(url: str, *, check: bool = True, **kwargs: Any) -> redis.Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    Raises:
        RedisUnavailable: the URL is malformed or (with ``check``) the server does not answer.
    """
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30, **kwargs)
    except ValueError as exc:
        raise RedisUnavailable(f"invalid Redis URL {redact_url(url)}: {exc}") from None
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    """Raises :class:`RedisUnavailable` unless the server answers PING."""
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} refused the credentials (check the password in STABLENEW_REDIS_URL)"
        ) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc} (is it running? set STABLENEW_REDIS_URL)"
        ) from None
