"""The Redis boundary: connecting, and the one place Redis errors become :class:`RedisUnavailable`.

Every public method of :class:`~stablenew.jobs.producer.Producer` and the workers' view runs under
:func:`map_redis_errors`, so no ``redis.exceptions`` error leaves the Python API: callers (the CLI,
a GUI) catch :class:`~stablenew.errors.RedisUnavailable` only. Messages say what to do and never
show a password.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from stablenew.errors import RedisUnavailable
from stablenew.settings import redact_url

T = TypeVar("T")

# What a patient client rides out; anything else (a wrong type, a script error) is raised at once.
RIDDEN_OUT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
)


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
        client.close()
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=PatientRetry(retry_seconds),
            retry_on_error=list(RIDDEN_OUT),
            **kwargs,
        )
    return client


class _Spell:
    """One spell of Redis trouble, shared by every connection of one client (and its copies) in
    one process: when it began, and when Redis last refused."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None
        self.last_refusal = 0.0
        self.refusing = False  # the last error was an OOM answer, not a lost connection


class PatientRetry(Retry):
    """redis-py's retry policy with one budget of ``seconds`` per spell of trouble, not per command.

    A lost connection or an ``OOM`` answer (Redis at its maxmemory) is tried again with backoff
    (0.25 s doubling up to 2 s) while the spell is younger than ``seconds``; past that, each command
    tries once. So a worker rides out a Redis restart or a full Redis for ``seconds``, and when it
    gives up, the writes of its shutdown (registries, its death, the job's hand-back) fail at once
    instead of each waiting ``seconds`` again.

    The spell ends when a command that failed in it succeeds on a later try, or when any command
    succeeds after a lost connection. A full Redis still answers reads, so after ``OOM`` answers a
    read that succeeds ends the spell only when Redis has refused nothing for ``seconds``.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(ExponentialBackoff(cap=2.0, base=0.25), -1, RIDDEN_OUT)
        self.seconds = seconds
        self._spell = _Spell()

    def __deepcopy__(self, memo: dict[int, Any]) -> PatientRetry:
        # redis-py gives each connection a deep copy of the client's policy: they share the spell.
        twin = copy.copy(self)
        twin._backoff = copy.deepcopy(self._backoff, memo)
        return twin

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PatientRetry) and other._spell is self._spell

    __hash__ = Retry.__hash__

    @staticmethod
    def _fail(fail: Callable[..., Any], error: Exception, failures: int, with_count: bool) -> None:
        if with_count:
            fail(error, failures)
        else:
            fail(error)

    def failing_for(self) -> float | None:
        """Seconds since the current spell of trouble began; None when Redis answers."""
        since = self._spell.since
        return None if since is None else time.monotonic() - since

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        spell = self._spell
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                failures += 1
                now = time.monotonic()
                with spell.lock:
                    if spell.since is None:
                        spell.since = now
                    spell.refusing = isinstance(error, redis.exceptions.OutOfMemoryError)
                    if spell.refusing:
                        spell.last_refusal = now
                    left = spell.since + self.seconds - now
                if left > 0 and (is_retryable is None or is_retryable(error)):
                    time.sleep(min(self._backoff.compute(failures), left))
                    # A pipeline that WATCHes keys raises WatchError here so that its caller runs
                    # the whole transaction again: after the pause, so that RQ's loops (which try
                    # again at once on WatchError) are paced and end with the budget.
                    self._fail(fail, error, failures, with_failure_count)
                    continue
                # Budget spent: the caller must see the real cause, not "run the transaction again"
                # (RQ would loop on that for as long as Redis refuses).
                with contextlib.suppress(redis.exceptions.WatchError):
                    self._fail(fail, error, failures, with_failure_count)
                raise error
            if spell.since is not None:
                with spell.lock:
                    quiet = time.monotonic() - spell.last_refusal >= self.seconds
                    if failures or not spell.refusing or quiet:
                        spell.since = None
            return result


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
