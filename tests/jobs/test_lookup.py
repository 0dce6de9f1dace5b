"""Short job ids: every producer call that takes a job id accepts a unique prefix of >= 8 characters."""

from __future__ import annotations

import pytest
from rq.job import JobStatus

from stablenew.errors import JobError, JobNotFound
from stablenew.jobs.lookup import MIN_PREFIX, resolve_job_id


def test_status_cancel_and_retry_accept_a_unique_prefix_of_8_characters(producer, fetch, configs):
    submission = producer.submit(configs.txt2img())
    short = submission.job_id[:MIN_PREFIX]

    assert producer.status(short).job_id == submission.job_id
    assert producer.cancel(short) == "canceled (it had not started)"
    assert fetch(submission.job_id).get_status() == JobStatus.CANCELED
    assert producer.retry(short).job_id == submission.job_id
    assert producer.status(short).status == "queued"


def test_an_ambiguous_prefix_is_refused_listing_the_candidates(producer, configs):
    producer.submit(configs.txt2img(), job_id="batch-2026-a")
    producer.submit(configs.txt2img(), job_id="batch-2026-b")

    with pytest.raises(JobError) as caught:
        producer.status("batch-2026")

    assert not isinstance(caught.value, JobNotFound)
    assert "ambiguous" in str(caught.value)
    assert "batch-2026-a" in str(caught.value) and "batch-2026-b" in str(caught.value)


def test_a_prefix_shorter_than_8_characters_is_refused_naming_the_rule(producer, configs):
    submission = producer.submit(configs.txt2img())

    with pytest.raises(JobNotFound) as caught:
        producer.status(submission.job_id[:7])

    assert "at least 8 characters" in str(caught.value)


def test_a_whole_id_shorter_than_8_characters_still_names_its_job(producer, configs):
    producer.submit(configs.txt2img(), job_id="mine")
    producer.submit(configs.txt2img(), job_id="mine-too")

    assert producer.status("mine").job_id == "mine"


def test_an_unknown_prefix_is_not_found_and_other_keys_of_a_job_do_not_match(conn, producer, configs):
    submission = producer.submit(configs.txt2img(), job_id="abcdefgh-1")
    conn.set(f"rq:job:{submission.job_id}:dependents", "x")  # must not count as a second job

    assert resolve_job_id(conn, "abcdefgh") == "abcdefgh-1"
    with pytest.raises(JobNotFound):
        resolve_job_id(conn, "zzzzzzzz")
