"""The Redis boundary: connecting, and the one place Redis errors become :class:`RedisUnavailable`.

Every public method of :class:`~stablenew.jobs.producer.Producer` and the workers' view runs under
:func:`map_redis_errors`, so no ``redis.exceptions`` error leaves the Python API: callers (the CLI,
a GUI) catch :class:`~stablenew.errors.RedisUnavailable` only. Messages say what to do and never
show a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from stablenew.errors import RedisUnavailable
from stablenew.settings import redact_url


def connect(url: str, *, check: bool = True, retry_seconds: float = 0.0, **kwargs: Any) -> redis.Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    ``retry_seconds`` > 0 makes every command ride out a lost connection (a Redis restart) or an
    ``OOM`` answer (Redis at its maxmemory) for about that long, reconnecting with backoff: what a
    worker wants. Without it, redis-py's few quick
    retries apply, so that a CLI command fails fast.

    Raises:
        RedisUnavailable: the URL is malformed or (with ``check``) the server does not answer.
    """
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30, **kwargs)
    except ValueError as exc:
        raise RedisUnavailable(f"invalid Redis URL {redact_url(url)}: {_url_problem(url, exc)}") from None
    if check:
        ping(client, url)  # fails fast: the patient retries below are for a server that was up
    if retry_seconds > 0:
        # Backoff doubles from 0.25 s up to 2 s: about retry_seconds in all, each wait at most 2 s.
        retries = 3 + int(retry_seconds / 2)
        client.close()
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.25), retries),
            # Redis at maxmemory (noeviction) refuses writes until room is made: ride that out too.
            retry_on_error=[
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                redis.exceptions.OutOfMemoryError,
            ],
            **kwargs,
        )
    return client


def ping(client: redis.Redis, url: str) -> None:
    """Raises :class:`RedisUnavailable` unless the server answers PING."""
    with map_redis_errors(url):
        try:
            client.ping()
        except OSError as exc:  # a socket error redis-py did not wrap
            raise redis.exceptions.ConnectionError(str(exc)) from None


@contextmanager
def map_redis_errors(url: str | None = None) -> Iterator[None]:
    """Turn any ``redis.exceptions`` error raised inside into :class:`RedisUnavailable`.

    Use it as ``with map_redis_errors():`` or as a decorator (``@map_redis_errors()``). ``url``,
    when known, is named in the message (its password hidden). An ``OOM`` answer (Redis at its
    ``maxmemory``, refusing writes) says so: the fix is room in Redis, not a restart.

    Raises:
        RedisUnavailable: what was raised inside was a Redis error; the original is its cause.
    """
    where = f" at {redact_url(url)}" if url else ""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis{where} refused the credentials (check the password in STABLENEW_REDIS_URL)"
        ) from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        if url:
            message = f"cannot reach Redis{where}: {exc} (is it running? set STABLENEW_REDIS_URL)"
        else:
            message = f"Redis connection lost: {exc}"
        raise RedisUnavailable(message) from exc
    except redis.exceptions.ResponseError as exc:
        if "DB index" in str(exc):
            raise RedisUnavailable(
                f"Redis{where} has no such database: {exc} (the number after the host in "
                "STABLENEW_REDIS_URL: 0..15 unless your server sets databases)"
            ) from exc
        # redis-py strips the "OOM" code from the text of the OutOfMemoryError it makes of it.
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
            raise RedisUnavailable(
                f"Redis{where} is full (maxmemory reached) and refuses writes: {exc} "
                "(free memory, raise maxmemory, or lower result_ttl/failure_ttl)"
            ) from exc
        raise RedisUnavailable(f"Redis{where} answered with an error: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailable(f"Redis{where} failed: {type(exc).__name__}: {exc}") from exc


def _url_problem(url: str, exc: ValueError) -> str:
    """What is wrong with ``url``, without any part of its password.

    A password holding ``/``, ``?`` or ``#`` ends the host part early for every URL parser, so the
    parser's own message quotes a piece of it ("Port could not be cast to integer value as 'S3cr'").
    """
    password = _raw_password(url)
    if password and any(ch in password for ch in "/?#"):
        return "a password holding '/', '?' or '#' must be percent-encoded (e.g. '/' as %2F)"
    detail = str(exc)
    return detail.replace(password, "***") if password else detail


def _raw_password(url: str) -> str | None:
    """The password part of ``url``'s user info as written (what :func:`redact_url` hides)."""
    scheme_end = url.find("://")
    if scheme_end < 0 or "@" not in url[scheme_end:]:
        return None
    userinfo = url[scheme_end + 3 :].rpartition("@")[0]
    _, has_password, password = userinfo.partition(":")
    return password if has_password and password else None
