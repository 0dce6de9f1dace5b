"""``list_jobs`` / ``list_page``: newest first across queues, filters, cursor paging, on fakeredis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from stablenew.errors import ConfigError
from stablenew.jobs.keys import JOB_FUNCTION, jobs_index_key
from stablenew.jobs.listing import parse_since
from stablenew.jobs.producer import build_checked_plan


def ids(views) -> list[str]:
    return [v.job_id for v in views]


def test_the_job_submitted_last_comes_first_whatever_its_queue(producer, configs):
    # Given many older jobs on high, then one job on low
    older = [producer.submit(configs.txt2img(f"old {i}"), queue="high").job_id for i in range(6)]
    newest = producer.submit(configs.txt2img("new"), queue="low").job_id

    # Then a short list shows the newest first, then the others newest first
    assert ids(producer.list_jobs(limit=5)) == [newest, *reversed(older[-4:])]


def test_a_batch_is_listed_newest_first_after_the_jobs_before_it(producer, configs):
    first = producer.submit(configs.txt2img("single")).job_id
    batch = [s.job_id for s in producer.submit_many([configs.txt2img(f"b{i}") for i in range(3)])]

    assert ids(producer.list_jobs()) == [*reversed(batch), first]


def test_pages_follow_each_other_by_cursor_without_gaps_or_repeats(producer, configs):
    submitted = [
        producer.submit(configs.txt2img(f"job {i}"), queue=("high", "low")[i % 2]).job_id for i in range(7)
    ]

    pages, cursor = [], None
    while True:
        page = producer.list_page(limit=3, cursor=cursor)
        pages.append(ids(page.views))
        cursor = page.next_cursor
        if cursor is None:
            break
        producer.submit(configs.txt2img("arrived meanwhile"))  # must not shift the next page

    assert [len(p) for p in pages[:2]] == [3, 3]
    assert [job_id for page in pages for job_id in page] == list(reversed(submitted))


def test_grep_finds_jobs_by_prompt_or_config_source_in_any_case(producer, configs):
    cat = producer.submit(configs.txt2img("a Cat on a roof")).job_id
    named = producer.submit(configs.txt2img("a dog"), source="configs/nightly-cats.json").job_id
    producer.submit(configs.txt2img("a bicycle"))

    assert ids(producer.list_jobs(grep="cat")) == [named, cat]
    assert ids(producer.list_jobs(grep="NIGHTLY")) == [named]
    assert producer.list_jobs(grep="giraffe") == []


def test_since_drops_older_jobs(producer, conn, configs):
    old = producer.submit(configs.txt2img("old")).job_id
    new = producer.submit(configs.txt2img("new")).job_id
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp() * 1_000_000
    for key in (jobs_index_key(None), jobs_index_key("default")):
        conn.zadd(key, {old: two_hours_ago})

    assert ids(producer.list_jobs(since=parse_since("1h"))) == [new]
    assert ids(producer.list_jobs(since=parse_since("3h"))) == [new, old]


def test_status_and_queue_filters_keep_newest_first_and_fill_the_page(producer, run_worker, configs):
    failed = [
        producer.submit(configs.txt2img(f"broken {i}", model="missing.safetensors"), queue="high").job_id
        for i in range(3)
    ]
    producer.submit(configs.txt2img("fine"), queue="high")
    run_worker(["high"])
    waiting = producer.submit(configs.txt2img("waiting"), queue="low").job_id

    assert ids(producer.list_jobs(status="failed", limit=2)) == [failed[2], failed[1]]
    assert ids(producer.list_jobs(queue="low")) == [waiting]
    assert ids(producer.list_jobs(queue="high", status="queued")) == []


def test_expired_jobs_leave_the_index_as_they_are_met(producer, conn, configs):
    gone = producer.submit(configs.txt2img("expires")).job_id
    kept = producer.submit(configs.txt2img("kept")).job_id
    conn.delete(f"rq:job:{gone}")

    assert ids(producer.list_jobs()) == [kept]
    assert conn.zscore(jobs_index_key(None), gone) is None


def test_jobs_enqueued_before_the_index_existed_are_listed_by_their_enqueue_time(producer, conn, configs):
    # Given two jobs enqueued straight through RQ (as an older producer did), then one of ours
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    plan = build_checked_plan(configs.txt2img("legacy prompt")).to_json()
    legacy = [queue.enqueue(JOB_FUNCTION, args=(plan,)).id for _ in range(2)]
    ours = producer.submit(configs.txt2img("ours")).job_id

    assert ids(producer.list_jobs()) == [ours, *reversed(legacy)]
    assert ids(producer.list_jobs(grep="legacy")) == list(reversed(legacy))


@pytest.mark.parametrize(
    ("text", "ago"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1w", 604800)],
)
def test_since_accepts_durations(text, ago):
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    assert parse_since(text, now=now) == now - timedelta(seconds=ago)


def test_since_accepts_iso_times_and_refuses_anything_else():
    assert parse_since("2026-12-07T10:00:00+00:00") == datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert parse_since("2026-12-07T10:00").tzinfo is not None  # local time
    with pytest.raises(ConfigError, match="--since"):
        parse_since("yesterday")


def test_a_cursor_list_did_not_make_is_refused(producer, configs):
    producer.submit(configs.txt2img())

    with pytest.raises(ConfigError, match="cursor"):
        producer.list_page(cursor="page-2")
