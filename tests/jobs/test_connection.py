"""Connecting to Redis: a database the server does not have is a clear RedisUnavailable."""

from __future__ import annotations

import pytest

from stablenew.errors import RedisUnavailable
from stablenew.jobs.connection import connect


def test_a_database_the_server_lacks_is_redis_unavailable_naming_the_setting(redis_url: str) -> None:
    url = redis_url.rpartition("/")[0] + "/99"

    with pytest.raises(RedisUnavailable) as raised:
        connect(url)

    assert "no such database" in str(raised.value)
    assert "STABLENEW_REDIS_URL" in str(raised.value)
