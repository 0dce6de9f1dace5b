"""The worker side of the queue: run_plan inside a real RQ worker, against the simulated WebUI.

Everything runs for real (producer -> Redis -> allow-listed Job -> PipelineRunner -> HTTP ->
files on disk); Redis is fakeredis and the worker is RQ's SimpleWorker in burst mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import rq
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from stablenew.config_files import load_config_file
from stablenew.jobs.keys import ALLOWED_FUNCTIONS, JOB_FUNCTION, cancel_key, state_key
from stablenew.jobs.rq_classes import StableNewJob, make_worker
from stablenew.pipeline import StageExecutionPlan, StageSequencer
from stablenew.simulator import Fault

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
EXAMPLE_CONFIGS = sorted(p.name for p in EXAMPLES.glob("*.json"))
TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
EXTRAS = "/sdapi/v1/extra-single-image"
PNG_B64_PREFIX = "iVBORw0KGgo"  # base64 of the PNG signature: must never appear in a manifest


def decoded(image: str) -> bytes:
    return base64.b64decode(image.partition(",")[2] if image.startswith("data:") else image)


def stage_inputs(sim: Any) -> list[str]:
    """The input image each non-txt2img stage was sent, in the order the WebUI saw them."""
    found = []
    for request in sim.requests:
        body = request.body if isinstance(request.body, dict) else {}
        if request.method != "POST" or request.path not in (IMG2IMG, EXTRAS):
            continue
        found.append(body["image"] if request.path == EXTRAS else body["init_images"][0])
    return found


def longest_string(doc: Any) -> int:
    if isinstance(doc, str):
        return len(doc)
    if isinstance(doc, dict):
        return max((longest_string(v) for v in doc.values()), default=0)
    if isinstance(doc, list):
        return max((longest_string(v) for v in doc), default=0)
    return 0


def raw_plan(**changes: Any) -> str:
    doc = {
        "schema_version": 1,
        "stages": [
            {"stage_type": "txt2img", "config_key": "txt2img", "config": {"prompt": "x", "steps": 4}},
        ],
    }
    doc.update(changes)
    return json.dumps(doc)


def enqueue_raw(conn: Any, func: str, *args: Any, **kwargs: Any) -> rq.job.Job:
    """Enqueue straight into Redis, bypassing the producer's checks (as any Redis writer could)."""
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    return queue.enqueue(func, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Happy path: every example config
# --------------------------------------------------------------------------------------------


def test_the_example_configs_are_found():
    assert len(EXAMPLE_CONFIGS) >= 4, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLE_CONFIGS)
def test_each_example_config_runs_to_finished_with_exact_bytes_and_a_manifest(
    example, producer, run_worker, sim, output_dir, stored_state
):
    # Given an example config submitted to the queue
    config = load_config_file(EXAMPLES / example)
    submission = producer.submit(config)

    # When a worker runs it
    assert run_worker() == [submission.job_id]

    # Then the job and every stage finished, each with outputs
    view = producer.status(submission.job_id)
    assert view.status == "finished", view.error
    assert [s["type"] for s in view.stages] == [t.value for t in submission.plan.get_stage_types()]
    assert all(s["status"] == "finished" and s["outputs"] for s in view.stages)

    # and each output file exists, matches its recorded sha256, and holds exactly the bytes the
    # WebUI sent for that stage (one response per stage here: batch size 1)
    sent = sim.sent_images()
    assert len(sent) == len(view.stages)
    on_disk: list[bytes] = []
    for stage, images in zip(view.stages, sent, strict=True):
        assert len(stage["outputs"]) == len(images)
        for output, image in zip(stage["outputs"], images, strict=True):
            data = (output_dir / output["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == output["sha256"]
            assert data == decoded(image)
            on_disk.append(data)

    # and each later stage was handed the previous stage's file, byte for byte
    # (an img2img-first plan starts from the config's init image instead)
    inputs = stage_inputs(sim)
    chained = inputs if view.stages[0]["type"] == "txt2img" else inputs[1:]
    assert [decoded(i) for i in chained] == on_disk[:-1]

    # and the manifest records the plan, the requests, seeds and outputs, without image data
    manifest_path = output_dir / submission.job_id / "manifest.json"
    assert view.manifest == str(manifest_path)
    text = manifest_path.read_text()
    assert PNG_B64_PREFIX not in text
    manifest = json.loads(text)
    assert longest_string(manifest) < 4000
    assert manifest["job_id"] == submission.job_id
    assert manifest["status"] == "finished"
    plan_doc = submission.plan.model_dump(mode="json")
    assert [s["stage_type"] for s in manifest["plan"]["stages"]] == [
        s["stage_type"] for s in plan_doc["stages"]
    ]
    for got, want in zip(manifest["plan"]["stages"], plan_doc["stages"], strict=True):
        if want["config"].get("init_images"):
            assert got["config"]["init_images"] == ["<image 0>"]
        strip = {k: v for k, v in want["config"].items() if k != "init_images"}
        assert {k: v for k, v in got["config"].items() if k != "init_images"} == strip
    for stage, recorded in zip(manifest["stages"], view.stages, strict=True):
        assert stage["status"] == "finished"
        assert stage["requests"], stage
        for request in stage["requests"]:
            assert all(marker.startswith("<image") for marker in request.get("init_images", []))
            assert request.get("image", "<image>") == "<image>"
        assert isinstance(stage["seed"], int)
        assert [o["sha256"] for o in stage["outputs"]] == [o["sha256"] for o in recorded["outputs"]]
    # and a generation stage's seed is the one the WebUI reported using (seed -1 resolved)
    for stage, (_, body) in zip(manifest["stages"], sim.responses, strict=True):
        if stage["type"] in ("txt2img", "img2img"):
            assert stage["seed"] == json.loads(body["info"])["seed"]
    assert stored_state(submission.job_id).runs == 1


def test_a_finished_job_returns_a_json_summary_of_every_stage(producer, run_worker, fetch, configs):
    submission = producer.submit(configs.two_stage())
    run_worker()

    summary = fetch(submission.job_id).return_value(refresh=True)

    assert summary["job_id"] == submission.job_id
    assert summary["status"] == "finished"
    assert [s["status"] for s in summary["stages"]] == ["finished", "finished"]


# --------------------------------------------------------------------------------------------
# Errors: permanent, transient, resume
# --------------------------------------------------------------------------------------------


def test_an_unknown_model_fails_at_once_without_generating_or_retrying(
    producer, run_worker, sim, fetch, stored_state, configs
):
    # Given a job naming a checkpoint the WebUI does not have, with retries configured
    config = configs.txt2img(model="no_such_model.safetensors")
    submission = producer.submit(config)

    # When a worker runs it
    performed = run_worker()

    # Then it ran once (no retry), generated nothing, and failed naming the model
    assert performed == [submission.job_id]
    assert sim.generation_posts() == []
    view = producer.status(submission.job_id)
    assert view.status == "failed"
    assert "no_such_model" in view.error
    assert fetch(submission.job_id).get_status() == JobStatus.FAILED
    assert stored_state(submission.job_id).runs == 1


def test_a_webui_rejection_during_a_stage_fails_at_once_naming_the_stage(producer, run_worker, sim, configs):
    # Given the WebUI answers img2img with a 422 (a permanent rejection)
    sim.inject(Fault("status", route=IMG2IMG, status=422, count=5))
    submission = producer.submit(configs.two_stage())

    performed = run_worker()

    assert performed == [submission.job_id]
    assert len(sim.posts(IMG2IMG)) == 1
    view = producer.status(submission.job_id)
    assert view.status == "failed"
    assert "img2img" in view.error
    assert [s["status"] for s in view.stages] == ["finished", "failed"]


def test_a_transient_503_is_retried_and_the_job_finishes(producer, run_worker, sim, configs):
    # Given the WebUI answers the first txt2img with a 503
    sim.inject(Fault("status", route=TXT2IMG, status=503, count=1))
    submission = producer.submit(configs.txt2img())
    assert producer.settings.retry_max >= 1

    # When a worker runs the queue
    performed = run_worker()

    # Then the job ran twice and finished; stage 0 took two attempts
    assert performed == [submission.job_id, submission.job_id]
    view = producer.status(submission.job_id)
    assert view.status == "finished"
    assert view.stages[0]["attempts"] == 2
    assert len(sim.posts(TXT2IMG)) == 2


def test_a_job_resumes_after_its_last_finished_stage_when_retried(
    producer, run_worker, sim, output_dir, configs, stored_state
):
    # Given a four-stage plan whose upscale fails once with a 503
    sim.inject(Fault("status", route=EXTRAS, status=503, count=1))
    submission = producer.submit(configs.four_stage())

    # When a worker runs the queue (RQ retries the job)
    performed = run_worker()

    # Then the job finished, and txt2img and img2img each ran once across both runs
    assert performed == [submission.job_id, submission.job_id]
    view = producer.status(submission.job_id)
    assert view.status == "finished", view.error
    assert len(sim.posts(TXT2IMG)) == 1
    assert len(sim.plain_img2img_posts()) == 1
    assert len(sim.posts(EXTRAS)) == 2
    assert len(sim.adetailer_posts()) == 1
    assert [s["attempts"] for s in view.stages] == [1, 1, 2, 1]
    assert all(s["status"] == "finished" for s in view.stages)
    assert stored_state(submission.job_id).runs == 2
    # and the resumed upscale got img2img's file from disk, byte for byte
    img2img_file = output_dir / view.stages[1]["outputs"][0]["path"]
    assert decoded(sim.posts(EXTRAS)[-1]["image"]) == img2img_file.read_bytes()


def test_a_damaged_checkpoint_file_makes_its_stage_run_again(producer, run_worker, sim, output_dir, configs):
    # Given a job that failed in img2img after txt2img finished, and txt2img's file then damaged
    sim.inject(Fault("status", route=IMG2IMG, status=422, count=1))
    submission = producer.submit(configs.two_stage())
    run_worker()
    first = producer.status(submission.job_id)
    (output_dir / first.stages[0]["outputs"][0]["path"]).write_bytes(b"truncated")

    # When the job is retried
    producer.retry(submission.job_id)
    run_worker()

    # Then txt2img ran again (its checkpoint no longer matched its sha256) and the job finished
    view = producer.status(submission.job_id)
    assert view.status == "finished", view.error
    assert len(sim.posts(TXT2IMG)) == 2
    assert view.stages[0]["attempts"] == 2
    data = (output_dir / view.stages[0]["outputs"][0]["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == view.stages[0]["outputs"][0]["sha256"]


# --------------------------------------------------------------------------------------------
# Cancel of a running job
# --------------------------------------------------------------------------------------------


def test_cancel_of_a_running_job_interrupts_the_webui_and_ends_it_canceled(
    producer, run_worker, sim, output_dir, fetch, conn, configs
):
    # Given a three-stage job whose img2img is slow on the WebUI
    sim.set_latency(5.0, route=IMG2IMG)
    submission = producer.submit(configs.three_stage())
    answers: list[str] = []

    def cancel_once_img2img_runs() -> None:
        deadline = time.monotonic() + 10
        while not sim.posts(IMG2IMG) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        answers.append(producer.cancel(submission.job_id))

    # When the job is canceled from another thread while img2img runs
    canceller = threading.Thread(target=cancel_once_img2img_runs)
    canceller.start()
    try:
        run_worker()
    finally:
        canceller.join()

    # Then the cancel was a request to the running job, the WebUI was interrupted, and RQ
    # records the job as canceled (not failed, not finished)
    assert answers and answers[0].startswith("cancel requested")
    assert sim.interrupted_count >= 1
    assert fetch(submission.job_id).get_status() == JobStatus.CANCELED
    view = producer.status(submission.job_id)
    assert view.status == "canceled"
    assert [s["status"] for s in view.stages] == ["finished", "canceled", "canceled"]
    # and no later stage ran, while the finished stage's outputs remain
    assert sim.posts(EXTRAS) == []
    txt2img_file = output_dir / view.stages[0]["outputs"][0]["path"]
    assert hashlib.sha256(txt2img_file.read_bytes()).hexdigest() == view.stages[0]["outputs"][0]["sha256"]
    assert not list((output_dir / submission.job_id).glob("01-*"))
    # and the cancel request is cleared, so a later retry is not canceled again
    assert not conn.exists(cancel_key(submission.job_id))
    assert submission.job_id in {v.job_id for v in producer.list_jobs(status="canceled")}


def test_a_cancel_requested_before_the_job_starts_running_ends_it_canceled_without_generating(
    producer, run_worker, sim, conn, fetch, configs
):
    # Given a queued job whose cancel key is already set (a cancel that raced the dequeue)
    submission = producer.submit(configs.txt2img())
    conn.set(cancel_key(submission.job_id), "1")

    run_worker()

    assert sim.generation_posts() == []
    assert fetch(submission.job_id).get_status() == JobStatus.CANCELED
    assert producer.status(submission.job_id).status == "canceled"


def test_a_cancel_that_races_the_dequeue_still_ends_the_job_canceled_without_generating(
    producer, server, sim, fetch, configs
):
    # Given a worker that has popped the job off the queue but not yet marked it started, and a
    # cancel arriving right then (the job still reads as queued, so the producer cancels it as such)
    submission = producer.submit(configs.txt2img())
    answers: list[str] = []

    class CancelAfterDequeue(rq.SimpleWorker):
        def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
            answers.append(producer.cancel(job.id))
            super().prepare_job_execution(job, remove_from_intermediate_queue)

    # When that worker goes on to perform it
    make_worker(fakeredis.FakeRedis(server=server), worker_class=CancelAfterDequeue).work(burst=True)

    # Then the job never reached the WebUI and ends canceled
    assert answers == ["canceled (it had not started)"]
    assert sim.generation_posts() == []
    assert fetch(submission.job_id).get_status() == JobStatus.CANCELED
    assert producer.status(submission.job_id).status == "canceled"


# --------------------------------------------------------------------------------------------
# Hostile or broken jobs: the worker refuses them and goes on
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("func", ["os.getcwd", "builtins.print", "subprocess.getoutput"])
def test_a_job_naming_a_function_outside_the_allow_list_fails_and_the_worker_goes_on(
    func, producer, run_worker, conn, fetch, sim, configs
):
    # Given a job naming a non-allow-listed function (with retries), then a valid job
    evil = enqueue_raw(conn, func, "echo pwned", retry=rq.Retry(max=3))
    good = producer.submit(configs.txt2img())

    # When a worker runs the queue
    performed = run_worker()

    # Then the bad job failed once, with JobNotAllowed, and the valid job still ran
    assert performed == [evil.id, good.job_id]
    job = fetch(evil.id)
    assert job.get_status() == JobStatus.FAILED
    assert "JobNotAllowed" in job.latest_result().exc_string
    assert func in producer.status(evil.id).error
    assert producer.status(good.job_id).status == "finished"


@pytest.mark.parametrize("kind", ["on_success", "on_failure", "on_stopped"])
def test_a_job_naming_a_callback_outside_the_allow_list_fails_before_it_runs(
    kind, producer, run_worker, conn, fetch, sim, configs
):
    # Given a valid plan whose job names a callback outside the allow-list (with retries)
    plan = producer.submit(configs.txt2img("evil")).plan
    conn.flushall()
    evil = enqueue_raw(
        conn, JOB_FUNCTION, plan.to_json(), retry=rq.Retry(max=3), **{kind: rq.Callback("os.getcwd")}
    )
    good = producer.submit(configs.txt2img("good"))

    # When a worker runs the queue
    performed = run_worker()

    # Then the job failed once with JobNotAllowed, before any GPU work, and the worker went on
    assert performed == [evil.id, good.job_id]
    assert fetch(evil.id).get_status() == JobStatus.FAILED
    assert "JobNotAllowed" in fetch(evil.id).latest_result().exc_string
    assert [b["prompt"] for b in sim.posts(TXT2IMG)] == ["good"]
    assert producer.status(good.job_id).status == "finished"


@pytest.mark.parametrize(
    ("plan_json", "error"),
    [
        ("not json at all", "ConfigError"),
        (json.dumps(["a", "list"]), "ConfigError"),
        (raw_plan(schema_version=99), "PlanVersionError"),
        (json.dumps({"stages": []}), "PlanVersionError"),
        (
            raw_plan(
                stages=[
                    {"stage_type": "upscale", "config_key": "upscale", "config": {}},
                    {"stage_type": "txt2img", "config_key": "txt2img", "config": {"prompt": "x"}},
                ]
            ),
            "InvalidStagePlanError",
        ),
        (
            raw_plan(
                stages=[{"stage_type": "adetailer", "config_key": "adetailer", "adetailer_enabled": True}]
            ),
            "InvalidStagePlanError",
        ),
        (
            raw_plan(
                stages=[{"stage_type": "txt2img", "config_key": "txt2img", "config": {"steps": 100000}}]
            ),
            "ConfigError",
        ),
    ],
    ids=[
        "malformed",
        "not-an-object",
        "version-99",
        "no-version",
        "wrong-order",
        "adetailer-alone",
        "limits",
    ],
)
def test_a_bad_plan_fails_at_once_with_a_clear_error_and_the_worker_goes_on(
    plan_json, error, producer, run_worker, conn, fetch, sim, stored_state, configs
):
    # Given a job whose plan is bad (injected straight into Redis, with retries), then a valid job
    bad = enqueue_raw(conn, JOB_FUNCTION, plan_json, retry=rq.Retry(max=3))
    good = producer.submit(configs.txt2img())

    # When a worker runs the queue
    performed = run_worker()

    # Then the bad job failed once (retries not used) naming the error, and the valid job ran
    assert performed == [bad.id, good.job_id]
    assert fetch(bad.id).get_status() == JobStatus.FAILED
    assert error in fetch(bad.id).latest_result().exc_string
    view = producer.status(bad.id)
    assert view.status == "failed"
    assert error in view.error
    assert stored_state(bad.id).status == "failed"
    assert producer.status(good.job_id).status == "finished"
    assert len(sim.posts(TXT2IMG)) == 1


def test_a_queued_id_that_is_a_path_is_skipped_without_killing_the_worker_or_writing_files(
    producer, run_worker, conn, sim, tmp_path, output_dir, configs
):
    # Given a valid plan in a job hash whose id (written straight into Redis) is a path
    plan_json = producer.submit(configs.txt2img("evil")).plan.to_json()
    conn.flushall()
    staged = enqueue_raw(conn, JOB_FUNCTION, plan_json, job_id="staged")
    conn.rename(f"rq:job:{staged.id}", "rq:job:../escape")
    conn.lrem("rq:queue:default", 0, staged.id)
    conn.rpush("rq:queue:default", "../escape")
    good = producer.submit(configs.txt2img("good"))

    # When a worker runs the queue
    performed = run_worker()

    # Then the bad entry was skipped: no GPU work, no file outside the output root, and the
    # worker went on to the valid job
    assert performed == [good.job_id]
    assert [b["prompt"] for b in sim.posts(TXT2IMG)] == ["good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    assert sorted(p.name for p in output_dir.iterdir()) == [good.job_id]
    assert producer.status(good.job_id).status == "finished"


@pytest.mark.parametrize("queues", [["high", "default", "low"], ["default"]], ids=["blpop", "blmove"])
def test_a_job_hash_with_garbage_data_does_not_kill_the_worker(queues, producer, run_worker, conn, configs):
    # Given a job hash written straight into Redis with undecodable data, queued before a valid job
    conn.hset(
        "rq:job:evil",
        mapping={"data": b"not json", "status": "queued", "origin": "default", "created_at": "garbage"},
    )
    conn.rpush("rq:queue:default", "evil")
    conn.rpush("rq:queue:default", "ghost")  # an id with no hash at all
    good = producer.submit(configs.txt2img())

    # When a worker runs the queue (several queues dequeue with BLPOP, one with BLMOVE)
    performed = run_worker(queues)

    # Then it skipped the garbage and went on to run the valid job
    assert performed == [good.job_id]
    assert producer.status(good.job_id).status == "finished"


# --------------------------------------------------------------------------------------------
# State storage survives RQ
# --------------------------------------------------------------------------------------------


def test_a_job_queued_under_the_job_functions_earlier_name_still_runs(
    run_worker, conn, fetch, stored_state, configs
):
    # Given a job queued before the job function moved, naming it by its earlier dotted name
    plan = StageSequencer().build_plan(configs.txt2img())
    earlier = "stablenew.jobs.worker.run_plan"
    assert earlier != JOB_FUNCTION
    job = enqueue_raw(conn, earlier, plan.to_json())

    # When a worker runs the queue
    assert run_worker() == [job.id]

    # Then it ran the one job function to the end
    assert fetch(job.id).get_status() == JobStatus.FINISHED
    assert stored_state(job.id).status == "finished"
    assert ALLOWED_FUNCTIONS[earlier] == JOB_FUNCTION


def test_job_meta_and_data_in_redis_are_json_never_pickle(producer, run_worker, conn, configs):
    submission = producer.submit(configs.two_stage())
    run_worker()

    fields = conn.hgetall(f"rq:job:{submission.job_id}")

    assert fields, "job hash missing"
    for name, value in fields.items():
        assert not value.startswith(b"\x80"), f"field {name!r} looks like a pickle"
    meta = json.loads(fields[b"meta"])
    assert [s["status"] for s in meta["stablenew"]["stages"]] == ["finished", "finished"]
    func, _instance, args, _kwargs = json.loads(zlib.decompress(fields[b"data"]))
    assert func == JOB_FUNCTION
    assert StageExecutionPlan.from_json(args[0]) == submission.plan
    assert json.loads(conn.get(state_key(submission.job_id)))["status"] == "finished"


def test_per_stage_state_survives_rq_rewriting_job_meta(producer, run_worker, fetch, configs):
    # Given a finished job
    submission = producer.submit(configs.two_stage())
    run_worker()

    # When RQ (or anyone) rewrites the job's meta with a stale or empty copy
    job = fetch(submission.job_id)
    job.meta = {}
    job.save_meta()

    # Then status still shows the per-stage state, read from the stablenew:state key
    view = producer.status(submission.job_id)
    assert view.status == "finished"
    assert [s["status"] for s in view.stages] == ["finished", "finished"]
    assert all(s["outputs"] for s in view.stages)


def test_progress_is_recorded_while_a_stage_runs(producer, run_worker, sim, conn, configs):
    # Given a slow txt2img, and a thread sampling the stored state while it runs
    sim.set_latency(1.2, route=TXT2IMG)
    submission = producer.submit(configs.txt2img())
    seen: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            raw = conn.get(state_key(submission.job_id))
            if raw:
                stage = json.loads(raw)["stages"][0]
                if stage["status"] == "running":
                    seen.append(stage["progress"])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_worker()
    finally:
        stop.set()
        sampler.join()

    assert producer.status(submission.job_id).stages[0]["progress"] == 1.0
    assert any(0 < p < 1 for p in seen), seen


def test_a_redis_failure_while_fetching_a_job_is_not_mistaken_for_a_missing_job(server, conn):
    # Skipping the job as "absent" here would silently lose it: RQ must see the Redis error.
    server.connected = False

    with pytest.raises(redis.ConnectionError):
        StableNewJob.fetch("some-job", connection=conn, serializer=JSONSerializer)
