"""PatientRetry: one budget per spell of Redis trouble, shared by a client's connections, so that a
worker that gave up on Redis does not wait the whole budget again on each write of its shutdown."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from stablenew.jobs.connection import PatientRetry, connect

OOM = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
LOST = redis.exceptions.ConnectionError("Connection refused")


class Script:
    """A command for ``call_with_retry``: raises each error of ``errors`` in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.tries = 0

    def __call__(self) -> str:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        return "OK"


def _no_fail(*_: Any) -> None:
    return None


def _refusing(tries: list[float]) -> Callable[[], str]:
    def do() -> str:
        tries.append(time.monotonic())
        raise OOM

    return do


def test_a_command_rides_out_trouble_shorter_than_the_budget() -> None:
    retry = PatientRetry(5.0)
    command = Script(OOM, LOST, OOM)
    assert retry.call_with_retry(command, _no_fail) == "OK"
    assert command.tries == 4
    assert retry.failing_for() is None  # the command that failed went through: the spell is over


def test_the_budget_is_spent_once_per_spell_not_once_per_command() -> None:
    retry = PatientRetry(0.6)
    tries: list[float] = []
    started = time.monotonic()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        retry.call_with_retry(_refusing(tries), _no_fail)
    first = time.monotonic() - started
    assert 0.5 <= first < 2.0
    # Every later write of the same spell tries once and fails at once.
    for _ in range(5):
        before = len(tries)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            retry.call_with_retry(_refusing(tries), _no_fail)
        assert len(tries) == before + 1
    assert time.monotonic() - started < first + 0.5


def test_connections_of_one_client_share_the_spell() -> None:
    """redis-py gives each connection a deep copy of the client's retry policy."""
    retry = PatientRetry(0.3)
    twin = copy.deepcopy(retry)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        retry.call_with_retry(_refusing([]), _no_fail)
    tries: list[float] = []
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        twin.call_with_retry(_refusing(tries), _no_fail)
    assert len(tries) == 1
    assert twin == retry
    assert PatientRetry(0.3) != retry


def test_a_read_answered_by_a_full_redis_does_not_end_its_spell() -> None:
    """Redis at maxmemory refuses writes but answers reads: a read is no sign that there is room."""
    retry = PatientRetry(0.3)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        retry.call_with_retry(_refusing([]), _no_fail)
    assert retry.call_with_retry(Script(), _no_fail) == "OK"  # a read
    assert retry.failing_for() is not None
    tries: list[float] = []
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        retry.call_with_retry(_refusing(tries), _no_fail)
    assert len(tries) == 1


def test_any_answer_ends_a_spell_of_lost_connections() -> None:
    retry = PatientRetry(0.3)
    with pytest.raises(redis.exceptions.ConnectionError):
        retry.call_with_retry(Script(*[LOST] * 50), _no_fail)
    assert retry.call_with_retry(Script(), _no_fail) == "OK"
    assert retry.failing_for() is None
    command = Script(LOST)
    assert retry.call_with_retry(command, _no_fail) == "OK"  # a new spell, a fresh budget
    assert command.tries == 2


def test_a_spell_of_refusals_ends_when_redis_has_refused_nothing_for_the_budget() -> None:
    retry = PatientRetry(0.2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        retry.call_with_retry(_refusing([]), _no_fail)
    time.sleep(0.25)
    assert retry.call_with_retry(Script(), _no_fail) == "OK"
    assert retry.failing_for() is None


def test_a_watching_pipeline_gets_watch_error_paced_and_then_the_real_cause() -> None:
    """redis-py's pipeline turns an error while WATCHing into WatchError ("run the transaction
    again"), and RQ loops on that at once. Within the budget the pause comes first; past it the
    caller sees the OOM answer itself, so RQ's loop ends."""
    retry = PatientRetry(0.6)
    attempts: list[float] = []

    def fail_while_watching(error: Exception, failures: int) -> None:
        raise redis.exceptions.WatchError("A ConnectionError occurred on while watching one or more keys")

    started = time.monotonic()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:  # RQ's handle_job_success, in short
            try:
                retry.call_with_retry(_refusing(attempts), fail_while_watching, with_failure_count=True)
            except redis.exceptions.WatchError:
                continue
    assert time.monotonic() - started < 2.5
    assert 2 <= len(attempts) <= 5  # paced, not a busy loop


def test_non_retryable_errors_are_raised_at_once() -> None:
    retry = PatientRetry(5.0)
    command = Script(redis.exceptions.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.exceptions.ResponseError):
        retry.call_with_retry(command, _no_fail)
    assert command.tries == 1
    assert retry.failing_for() is None


def test_connect_with_a_budget_gives_every_connection_the_patient_policy(redis_url: str) -> None:
    client = connect(redis_url, retry_seconds=3)
    try:
        policy = client.get_retry()
        assert isinstance(policy, PatientRetry)
        assert policy.seconds == 3
        assert client.ping()
        assert isinstance(client.connection_pool.get_connection().retry, PatientRetry)
    finally:
        client.close()
    assert not isinstance(connect(redis_url).get_retry(), PatientRetry)
