"""The producer side: submit, submit_many, status, list_jobs, cancel and retry, on fakeredis.

Jobs are run by a real RQ SimpleWorker (burst) against the simulated WebUI where a test needs a
job to have run.
"""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry
from rq.serializers import JSONSerializer

from job_checks import wait_until
from stablenew.errors import ConfigError, InvalidStagePlanError, JobError, JobNotFound
from stablenew.jobs.keys import cancel_key, jobs_index_key
from stablenew.jobs.producer import Producer, build_checked_plan, estimate_timeout
from stablenew.queues import QUEUES
from stablenew.settings import Settings
from stablenew.simulator import Fault

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"

ADETAILER_ONLY = {
    "adetailer_enabled": True,
    "adetailer_config": {"adetailer_model": "face_yolov8n.pt"},
}


def queued_ids(conn) -> dict[str, list[str]]:
    return {name: Queue(name, connection=conn, serializer=JSONSerializer).get_job_ids() for name in QUEUES}


def no_jobs_anywhere(conn) -> bool:
    return all(not ids for ids in queued_ids(conn).values()) and not conn.keys("rq:job:*")


# --------------------------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------------------------


def test_submit_enqueues_one_json_job_and_returns_its_id_queue_and_stages(producer, conn, configs):
    submission = producer.submit(configs.two_stage(), queue="high")

    assert queued_ids(conn)["high"] == [submission.job_id]
    assert submission.to_dict() == {
        "job_id": submission.job_id,
        "queue": "high",
        "stages": ["txt2img", "img2img"],
        "checkpoint": None,
    }
    assert submission.existing is False


def test_submitting_the_same_job_id_twice_makes_one_job_that_runs_once(
    producer, conn, run_worker, sim, configs
):
    # Given a job submitted with an explicit id
    first = producer.submit(configs.txt2img(), job_id="render-42")

    # When the same id is submitted again with the same config
    second = producer.submit(configs.txt2img(), job_id="render-42")

    # Then the second call returns the existing job, and only one job is queued
    assert first.existing is False
    assert second.existing is True
    assert second.job_id == "render-42"
    assert second.plan == first.plan
    assert queued_ids(conn)["default"] == ["render-42"]

    # and the plan runs once
    assert run_worker() == ["render-42"]
    assert [b["prompt"] for b in sim.posts(TXT2IMG)] == ["a red bicycle"]

    # and a submit after it finished still returns it, without running it again
    third = producer.submit(configs.txt2img(), job_id="render-42")
    assert third.existing is True
    assert run_worker() == []
    assert len(sim.posts(TXT2IMG)) == 1


def test_submitting_a_known_job_id_with_another_config_is_an_error_and_keeps_the_old_job(
    producer, conn, configs
):
    # Given a job submitted with an explicit id
    first = producer.submit(configs.txt2img(), job_id="render-42")

    # When the same id is submitted with a config that plans differently
    with pytest.raises(JobError) as caught:
        producer.submit(configs.txt2img("something else"), job_id="render-42")

    # Then the error names the id and says the plan differs, and the old job is the only one queued
    assert caught.value.job_id == "render-42"
    assert "render-42 already exists with a different plan" in str(caught.value)
    assert queued_ids(conn)["default"] == ["render-42"]
    assert producer.status("render-42").job_id == first.job_id


def test_a_lenient_submit_enqueues_without_the_unknown_key_and_returns_it_as_a_warning(producer, configs):
    config = configs.txt2img()
    config["txt2img_config"]["stpes"] = 40

    with pytest.raises(ConfigError, match=r'txt2img_config\.stpes: is not a known key; did you mean "steps"'):
        producer.submit(config)
    sub = producer.submit(config, lenient=True)
    (batch,) = producer.submit_many([config], lenient=True)

    assert sub.warnings == ('ignored txt2img_config.stpes: is not a known key; did you mean "steps"?',)
    assert batch.warnings == sub.warnings
    assert sub.plan.stages[0].config["steps"] == 4


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"txt2img_enabled": True, "txt2img_config": {"steps": 0}}, ConfigError),
        ({"txt2img_enabled": True, "txt2img_config": {"width": 100000}}, ConfigError),
        (ADETAILER_ONLY, InvalidStagePlanError),
        ({"txt2img_enabled": False}, InvalidStagePlanError),
    ],
    ids=["zero-steps", "too-wide", "adetailer-alone", "nothing-enabled"],
)
def test_submit_of_an_invalid_config_enqueues_nothing(config, error, producer, conn):
    with pytest.raises(error):
        producer.submit(config)

    assert no_jobs_anywhere(conn)


@pytest.mark.parametrize("job_id", ["../etc/passwd", "a b", "", "x" * 129, "rq:job:x", "job\n"])
def test_submit_refuses_an_unsafe_job_id_and_enqueues_nothing(job_id, producer, conn, configs):
    with pytest.raises(ConfigError, match="job_id"):
        producer.submit(configs.txt2img(), job_id=job_id)

    assert no_jobs_anywhere(conn)


def test_submit_refuses_an_unknown_queue(producer, conn, configs):
    with pytest.raises(ConfigError, match="queue"):
        producer.submit(configs.txt2img(), queue="urgent")

    assert no_jobs_anywhere(conn)


@pytest.mark.parametrize("how", ["submit", "submit_many"])
def test_submit_sets_the_estimated_timeout_ttls_and_the_retry_policy_on_the_job(
    how, producer, fetch, configs
):
    config = configs.four_stage()
    submission = producer.submit(config) if how == "submit" else producer.submit_many([config])[0]

    job = fetch(submission.job_id)

    settings = producer.settings
    # not RQ's 180 s default, which would kill a long render on a real GPU
    assert job.timeout == estimate_timeout(submission.plan, ceiling=settings.job_timeout_ceiling) > 180
    assert job.result_ttl == settings.result_ttl
    assert job.failure_ttl == settings.failure_ttl
    assert job.retries_left == settings.retry_max
    assert job.description == "stablenew plan: txt2img -> img2img -> upscale -> adetailer"


def test_estimate_timeout_grows_with_work_and_stays_within_its_bounds(configs):
    small = build_checked_plan(configs.txt2img())
    big = build_checked_plan(configs.four_stage())

    assert 300 <= estimate_timeout(small, ceiling=10_000) <= estimate_timeout(big, ceiling=10_000)
    assert estimate_timeout(big, ceiling=400) == 400


# --------------------------------------------------------------------------------------------
# submit_many
# --------------------------------------------------------------------------------------------


def test_submit_many_enqueues_every_config_in_order(producer, conn, run_worker, sim, configs):
    submissions = producer.submit_many([configs.txt2img("one"), configs.txt2img("two")], queue="low")

    assert queued_ids(conn)["low"] == [s.job_id for s in submissions]
    assert run_worker() == [s.job_id for s in submissions]
    assert [b["prompt"] for b in sim.posts(TXT2IMG)] == ["one", "two"]
    assert all(producer.status(s.job_id).status == "finished" for s in submissions)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"txt2img_enabled": True, "txt2img_config": {"steps": -1}}, ConfigError),
        (ADETAILER_ONLY, InvalidStagePlanError),
    ],
    ids=["config-error", "plan-error"],
)
def test_submit_many_is_all_or_nothing_and_names_the_bad_config(bad, error, producer, conn, configs):
    # Given good configs around one bad one
    batch = [configs.txt2img("one"), bad, configs.txt2img("three")]

    # When they are submitted together
    with pytest.raises(error) as caught:
        producer.submit_many(batch)

    # Then the error names the second config, and nothing at all was enqueued
    assert "#2" in str(caught.value)
    assert no_jobs_anywhere(conn)


def test_submit_many_names_a_bad_config_by_its_source(producer, conn, configs):
    with pytest.raises(ConfigError, match=r"b\.json"):
        producer.submit_many(
            [configs.txt2img(), {"txt2img_enabled": True, "txt2img_config": {"steps": 0}}],
            sources=["a.json", "b.json"],
        )

    assert no_jobs_anywhere(conn)


# --------------------------------------------------------------------------------------------
# priority
# --------------------------------------------------------------------------------------------


def test_a_worker_on_high_default_low_runs_high_priority_jobs_first(producer, run_worker, sim, configs):
    # Given jobs enqueued low first, then default, then high
    for name in ("low", "default", "high"):
        producer.submit(configs.txt2img(f"{name} priority"), queue=name)

    # When one burst worker listens on high, default, low
    run_worker(["high", "default", "low"])

    # Then the WebUI saw them in priority order
    assert [b["prompt"] for b in sim.posts(TXT2IMG)] == ["high priority", "default priority", "low priority"]


# --------------------------------------------------------------------------------------------
# status and list_jobs
# --------------------------------------------------------------------------------------------


def test_status_of_an_unknown_job_raises_job_not_found(producer):
    with pytest.raises(JobNotFound) as caught:
        producer.status("no-such-job")

    assert caught.value.job_id == "no-such-job"


def test_status_of_a_queued_job_shows_every_stage_pending_and_its_queue_position(producer, configs):
    first = producer.submit(configs.txt2img())
    second = producer.submit(configs.four_stage())

    view = producer.status(second.job_id)

    assert view.status == "queued"
    assert view.queue == "default"
    assert view.position == 2
    assert producer.status(first.job_id).position == 1
    assert [(s["type"], s["status"]) for s in view.stages] == [
        ("txt2img", "pending"),
        ("img2img", "pending"),
        ("upscale", "pending"),
        ("adetailer", "pending"),
    ]
    assert view.enqueued_at is not None
    assert view.done is False
    assert set(view.to_dict()) == {
        "checkpoint", "waiting_for",
        "job_id", "status", "stages", "error", "manifest", "queue", "position", "enqueued_at",
    }  # fmt: skip


def test_queue_position_counts_every_job_in_higher_priority_queues_and_starts_at_1(producer, configs):
    # Given two jobs on low, then one on default and two on high (taken first by any worker)
    low_first = producer.submit(configs.txt2img("low 1"), queue="low")
    low_second = producer.submit(configs.txt2img("low 2"), queue="low")
    default = producer.submit(configs.txt2img("default"), queue="default")
    high = [producer.submit(configs.txt2img(f"high {i}"), queue="high") for i in range(2)]

    def position(submission) -> int | None:
        return producer.status(submission.job_id).position

    # Then position N means N-1 jobs are taken before it
    assert [position(s) for s in high] == [1, 2]
    assert position(default) == 3
    assert (position(low_first), position(low_second)) == (4, 5)
    assert producer.status(low_second.job_id).to_dict()["position"] == 5


def test_status_of_a_finished_job_shows_outputs_and_the_manifest(producer, run_worker, output_dir, configs):
    submission = producer.submit(configs.two_stage())
    run_worker()

    view = producer.status(submission.job_id)

    assert view.status == "finished"
    assert view.done is True
    assert view.position is None
    assert view.manifest == str(output_dir / submission.job_id / "manifest.json")
    for stage in view.stages:
        assert stage["status"] == "finished"
        assert stage["progress"] == 1.0
        assert stage["attempts"] == 1
        assert [(output_dir / o["path"]).is_file() for o in stage["outputs"]] == [True]


def test_list_jobs_filters_by_queue_and_by_status(producer, run_worker, configs):
    # Given a finished job on high, a queued job on low, and a failed job on high
    done = producer.submit(configs.txt2img("done"), queue="high")
    broken = producer.submit(configs.txt2img("broken", model="missing.safetensors"), queue="high")
    waiting = producer.submit(configs.txt2img("waiting"), queue="low")
    run_worker(["high"])

    def ids(**filters) -> set[str]:
        return {view.job_id for view in producer.list_jobs(**filters)}

    assert ids() == {done.job_id, broken.job_id, waiting.job_id}
    assert ids(queue="low") == {waiting.job_id}
    assert ids(queue="high") == {done.job_id, broken.job_id}
    assert ids(status="finished") == {done.job_id}
    assert ids(status="failed") == {broken.job_id}
    assert ids(status="queued") == {waiting.job_id}
    assert ids(queue="low", status="finished") == set()
    assert {v.status for v in producer.list_jobs(queue="high", status="failed")} == {"failed"}
    assert len(producer.list_jobs(limit=1)) == 1


# --------------------------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_cancels_it_and_it_never_runs(producer, run_worker, sim, fetch, configs):
    # Given a queued job
    submission = producer.submit(configs.two_stage())

    # When it is canceled, then a worker runs the queue
    answer = producer.cancel(submission.job_id)
    performed = run_worker()

    # Then it never ran, and reads as canceled with every stage canceled
    assert answer == "canceled (it had not started)"
    assert performed == []
    assert sim.generation_posts() == []
    assert fetch(submission.job_id).get_status() == JobStatus.CANCELED
    view = producer.status(submission.job_id)
    assert view.status == "canceled"
    assert [s["status"] for s in view.stages] == ["canceled", "canceled"]
    assert view.error == "canceled before it started"


def test_a_job_canceled_before_it_ran_expires_with_its_keys_within_the_failure_ttl(conn, env, configs):
    # Given a job canceled while it waited, under a failure TTL of a minute
    producer = Producer(conn, Settings(failure_ttl=60))
    job_id = producer.submit(configs.two_stage()).job_id
    producer.cancel(job_id)

    # Then its hash and its state expire within that minute (RQ's cancel alone sets no TTL), every
    # other key of its own expires too, and RQ's canceled registry files it until then
    ttls = {k.decode(): conn.ttl(k) for k in conn.keys(f"*{job_id}*")}
    assert 0 < ttls.pop(f"rq:job:{job_id}") <= 60
    assert 0 < ttls.pop(f"stablenew:state:{job_id}") <= 60
    assert set(ttls) == {f"stablenew:cancel:{job_id}", f"stablenew:config:{job_id}"}
    assert all(ttl > 0 for ttl in ttls.values())
    expires = conn.zscore(CanceledJobRegistry("default", conn).key, job_id)
    assert 50 < expires - time.time() <= 60


def test_a_job_canceled_before_it_ran_leaves_the_list_once_it_expired(conn, env, configs):
    # Given a job canceled while it waited, under a failure TTL of one second, that has expired
    producer = Producer(conn, Settings(failure_ttl=1))
    canceled = producer.submit(configs.txt2img("canceled")).job_id
    producer.cancel(canceled)
    wait_until("the canceled job expired", lambda: not conn.exists(f"rq:job:{canceled}"), timeout=5)

    # When another job is submitted (nobody lists)
    fresh = producer.submit(configs.txt2img("fresh")).job_id

    # Then the canceled job's entry left the list's index
    assert conn.zrange(jobs_index_key(None), 0, -1) == [fresh.encode()]


def test_cancel_of_a_finished_job_changes_nothing(producer, run_worker, conn, configs):
    submission = producer.submit(configs.txt2img())
    run_worker()

    answer = producer.cancel(submission.job_id)

    assert answer == "nothing to cancel: the job is finished"
    assert producer.status(submission.job_id).status == "finished"
    assert not conn.exists(cancel_key(submission.job_id))


def test_cancel_of_an_unknown_job_raises_job_not_found(producer):
    with pytest.raises(JobNotFound):
        producer.cancel("nope")


# --------------------------------------------------------------------------------------------
# retry
# --------------------------------------------------------------------------------------------


def test_retry_of_a_failed_job_requeues_it_and_it_resumes_after_its_finished_stages(
    producer, run_worker, sim, monkeypatch, conn, stored_state, configs
):
    # Given a job that failed in img2img (no automatic retries left) after txt2img finished
    monkeypatch.setenv("STABLENEW_RETRY_MAX", "0")
    no_retries = Producer(conn, Settings())
    sim.inject(Fault("status", route=IMG2IMG, status=503, count=1))
    submission = no_retries.submit(configs.three_stage())
    run_worker()
    failed = producer.status(submission.job_id)
    assert failed.status == "failed"
    assert [s["status"] for s in failed.stages] == ["finished", "failed", "skipped"]
    assert "img2img" in failed.error
    assert conn.ttl(f"rq:job:{submission.job_id}") > 0  # RQ keeps a failed job failure_ttl

    # When it is retried and a worker runs the queue
    again = producer.retry(submission.job_id)
    assert again.job_id == submission.job_id
    assert producer.status(submission.job_id).status == "queued"
    assert conn.ttl(f"rq:job:{submission.job_id}") == -1  # queued again: it waits as long as it takes
    run_worker()

    # Then it finished without running txt2img again
    view = producer.status(submission.job_id)
    assert view.status == "finished", view.error
    assert len(sim.posts(TXT2IMG)) == 1
    assert len(sim.posts(IMG2IMG)) == 2
    assert [s["attempts"] for s in view.stages] == [1, 2, 1]
    assert view.stages[0]["outputs"] == failed.stages[0]["outputs"]
    assert stored_state(submission.job_id).runs == 2


def test_a_retried_job_gets_a_fresh_budget_of_automatic_retries(producer, run_worker, sim, fetch, configs):
    # Given a job that failed permanently (the WebUI rejected it), so RQ zeroed its retries
    sim.inject(Fault("status", route=TXT2IMG, status=422, count=1))
    submission = producer.submit(configs.txt2img())
    assert run_worker() == [submission.job_id]
    assert producer.status(submission.job_id).status == "failed"

    # When it is retried by hand and the WebUI then has one transient hiccup
    sim.inject(Fault("status", route=TXT2IMG, status=503, count=1))
    producer.retry(submission.job_id)
    performed = run_worker()

    # Then RQ retried the transient error automatically and the job finished
    assert performed == [submission.job_id, submission.job_id]
    assert producer.status(submission.job_id).status == "finished"
    assert len(sim.posts(TXT2IMG)) == 3


def test_retry_of_a_canceled_job_runs_it(producer, run_worker, sim, conn, configs):
    submission = producer.submit(configs.txt2img())
    producer.cancel(submission.job_id)

    producer.retry(submission.job_id)
    run_worker()

    assert producer.status(submission.job_id).status == "finished"
    assert len(sim.posts(TXT2IMG)) == 1
    assert not conn.exists(cancel_key(submission.job_id))


def test_a_retried_canceled_job_waits_without_the_ttl_its_cancel_gave_it(producer, conn, configs):
    submission = producer.submit(configs.txt2img())
    producer.cancel(submission.job_id)
    assert conn.ttl(f"rq:job:{submission.job_id}") > 0

    producer.retry(submission.job_id)

    assert conn.ttl(f"rq:job:{submission.job_id}") == -1  # no expiry: it waits as long as it takes
    assert producer.status(submission.job_id).status == "queued"


def test_retry_of_a_stopped_job_takes_it_out_of_the_failed_registry_and_runs_it(
    producer, run_worker, sim, fetch, conn, configs
):
    # Given a job RQ recorded as stopped (a stop command: status stopped, filed in the failed registry)
    sim.inject(Fault("status", route=TXT2IMG, status=422, count=1))
    submission = producer.submit(configs.txt2img())
    run_worker()
    fetch(submission.job_id).set_status(JobStatus.STOPPED)

    # When it is retried and a worker runs the queue
    producer.retry(submission.job_id)
    run_worker()

    # Then it finished, and is no longer listed as failed
    assert producer.status(submission.job_id).status == "finished"
    assert submission.job_id not in FailedJobRegistry("default", connection=conn, serializer=JSONSerializer)
    assert {v.job_id for v in producer.list_jobs(status="failed")} == set()


@pytest.mark.parametrize("run_first", [False, True], ids=["queued", "finished"])
def test_retry_of_a_job_that_has_not_failed_is_refused(run_first, producer, run_worker, configs):
    submission = producer.submit(configs.txt2img())
    if run_first:
        run_worker()

    with pytest.raises(JobError, match="only failed, canceled or stopped"):
        producer.retry(submission.job_id)


# --------------------------------------------------------------------------------------------
# jobs the producer did not write
# --------------------------------------------------------------------------------------------


def test_status_and_list_jobs_report_a_job_with_undecodable_data_instead_of_crashing(
    producer, run_worker, conn, configs
):
    # Given a job hash with garbage data, failed by a worker that went on to a valid job
    conn.hset(
        "rq:job:evil",
        mapping={"data": b"not json", "status": "queued", "origin": "default", "created_at": ""},
    )
    conn.rpush("rq:queue:default", "evil")
    good = producer.submit(configs.txt2img())
    run_worker()
    assert producer.status(good.job_id).status == "finished"

    # When the producer is asked about it
    view = producer.status("evil")
    listed = {v.job_id: v.status for v in producer.list_jobs()}

    # Then it reads as a failed job, not an exception
    assert view.status == "failed"
    assert listed["evil"] == "failed"
    assert listed[good.job_id] == "finished"


def test_submit_with_the_id_of_a_job_that_is_not_a_stablenew_plan_is_refused(producer, conn, configs):
    Queue("default", connection=conn, serializer=JSONSerializer).enqueue("os.getcwd", job_id="taken")

    with pytest.raises(JobError, match="not a stablenew plan"):
        producer.submit(configs.txt2img(), job_id="taken")


def test_submit_with_the_id_of_an_undecodable_job_is_refused_with_a_job_error(producer, conn, configs):
    conn.hset("rq:job:taken", mapping={"data": b"not json", "status": "queued", "origin": "default"})

    with pytest.raises(JobError, match="not a stablenew plan"):
        producer.submit(configs.txt2img(), job_id="taken")


def test_status_and_submit_of_a_job_hash_rq_cannot_parse_raise_a_job_error(producer, conn, configs):
    # Given a job hash written by something else, with a field RQ cannot parse
    conn.hset("rq:job:alien", mapping={"data": b"[]", "status": "queued", "created_at": "yesterday"})

    # Then the producer says so in its own terms, instead of leaking a ValueError
    with pytest.raises(JobError, match="cannot be read"):
        producer.status("alien")
    with pytest.raises(JobError, match="cannot be read"):
        producer.submit(configs.txt2img(), job_id="alien")
