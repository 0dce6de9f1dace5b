"""The Redis boundary: whatever Redis does, the Python API raises RedisUnavailable and nothing from redis."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from plan_configs import Configs
from stablenew.errors import RedisUnavailable
from stablenew.jobs.connection import connect, map_redis_errors
from stablenew.jobs.producer import Producer
from stablenew.jobs.worker_views import list_workers
from stablenew.settings import Settings

# Every public method of Producer, called as a user would; False for one that never talks to Redis.
CALLS: dict[str, tuple[Callable[[Producer], Any], bool]] = {
    "queue": (lambda p: p.queue("default"), False),
    "submit": (lambda p: p.submit(Configs.txt2img()), True),
    "submit_many": (lambda p: p.submit_many([Configs.txt2img(), Configs.two_stage()]), True),
    "status": (lambda p: p.status("job-1"), True),
    "list_jobs": (lambda p: p.list_jobs(), True),
    "list_page": (lambda p: p.list_page(), True),
    "resolve_job_id": (lambda p: p.resolve_job_id("job-1-abcdef"), True),
    "cancel": (lambda p: p.cancel("job-1"), True),
    "retry": (lambda p: p.retry("job-1"), True),
    "rerun": (lambda p: p.rerun("job-1", {"txt2img_config.steps": 5}), True),
}
REDIS_CALLS = [name for name, (_, talks) in CALLS.items() if talks]


def _redis_error_classes() -> list[type[redis.exceptions.RedisError]]:
    return [
        cls
        for cls in vars(redis.exceptions).values()
        if inspect.isclass(cls) and issubclass(cls, redis.exceptions.RedisError)
    ]


def _instance(cls: type[redis.exceptions.RedisError]) -> redis.exceptions.RedisError:
    if issubclass(cls, redis.exceptions.AskError | redis.exceptions.MovedError):
        return cls("3999 127.0.0.1:6381")
    return cls("boom")


def _raising(exc: BaseException) -> redis.Redis:
    """A client whose every connection attempt raises ``exc`` (a Redis that answers only that)."""

    class RaisingConnection(redis.Connection):
        def connect(self, *args: Any, **kwargs: Any) -> None:
            raise exc

    pool = redis.ConnectionPool(connection_class=RaisingConnection)
    return redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def down(closed_port: int) -> redis.Redis:
    return redis.Redis(port=closed_port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def test_the_table_covers_every_public_producer_method() -> None:
    # Producer's own methods and those of the classes it is built on (reading, control)
    public = {
        n for cls in Producer.__mro__ for n, v in vars(cls).items() if not n.startswith("_") and callable(v)
    }
    assert public == set(CALLS)


@pytest.mark.parametrize("method", REDIS_CALLS)
def test_each_producer_method_raises_redis_unavailable_when_redis_is_down(
    down: redis.Redis, method: str
) -> None:
    call, _ = CALLS[method]
    with pytest.raises(RedisUnavailable) as caught:
        call(Producer(down, Settings()))
    assert not isinstance(caught.value, redis.exceptions.RedisError)


@pytest.mark.parametrize("error", _redis_error_classes(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("method", REDIS_CALLS)
def test_each_producer_method_turns_every_redis_error_into_redis_unavailable(
    method: str, error: type[redis.exceptions.RedisError]
) -> None:
    call, _ = CALLS[method]
    with pytest.raises(RedisUnavailable):
        call(Producer(_raising(_instance(error)), Settings()))


@pytest.mark.parametrize("error", _redis_error_classes(), ids=lambda cls: cls.__name__)
def test_the_workers_view_turns_every_redis_error_into_redis_unavailable(
    error: type[redis.exceptions.RedisError],
) -> None:
    with pytest.raises(RedisUnavailable):
        list_workers(_raising(_instance(error)))


def test_the_workers_view_raises_redis_unavailable_when_redis_is_down(down: redis.Redis) -> None:
    with pytest.raises(RedisUnavailable):
        list_workers(down)


def test_a_redis_at_maxmemory_is_reported_as_full() -> None:
    # redis-py makes an OutOfMemoryError of an "OOM ..." answer, dropping the code from its text
    oom = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    with pytest.raises(RedisUnavailable, match=r"full \(maxmemory"):
        Producer(_raising(oom), Settings()).submit(Configs.txt2img())
    with pytest.raises(RedisUnavailable, match=r"full \(maxmemory"), map_redis_errors():
        raise redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")


def test_other_errors_pass_through_the_boundary_untouched() -> None:
    with pytest.raises(KeyError), map_redis_errors():
        raise KeyError("not Redis")


def test_a_named_url_shows_without_its_password() -> None:
    with pytest.raises(RedisUnavailable) as caught, map_redis_errors("redis://:s3cret@db.example:6379/0"):
        raise redis.exceptions.ConnectionError("Connection refused")
    assert "db.example" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_database_the_server_lacks_is_redis_unavailable_naming_the_setting(redis_url: str) -> None:
    url = redis_url.rpartition("/")[0] + "/99"

    with pytest.raises(RedisUnavailable) as raised:
        connect(url)

    assert "no such database" in str(raised.value)
    assert "STABLENEW_REDIS_URL" in str(raised.value)
