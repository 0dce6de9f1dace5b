"""Connecting to Redis, with errors that say what to do (and never show a password)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from stablenew.errors import RedisUnavailable
from stablenew.settings import redact_url


def connect(url: str, *, check: bool = True, retry_seconds: float = 0.0, **kwargs: Any) -> redis.Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    ``retry_seconds`` > 0 makes every command ride out a lost connection (a Redis restart) for about
    that long, reconnecting with backoff: what a worker wants. Without it, redis-py's few quick
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
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            **kwargs,
        )
    return client


def ping(client: redis.Redis, url: str) -> None:
    """Raises :class:`RedisUnavailable` unless the server answers PING."""
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} refused the credentials (check the password in STABLENEW_REDIS_URL)"
        ) from None
    except redis.exceptions.ResponseError as exc:
        if "DB index" not in str(exc):
            raise
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} has no such database: {exc} "
            "(the number after the host in STABLENEW_REDIS_URL: 0..15 unless your server sets databases)"
        ) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc} (is it running? set STABLENEW_REDIS_URL)"
        ) from None


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
