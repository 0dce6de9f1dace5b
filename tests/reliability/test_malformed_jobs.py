"""Malformed jobs written straight into Redis, past the producer, taken by a real ``stablenew worker``.

Each case of the catalogue writes an RQ job hash (``rq:job:<id>``, the shape RQ 2.12's
``Job.to_dict`` saves with the JSON serializer) and pushes its id onto ``rq:queue:default`` with raw
Redis commands, then submits a good job through the producer right behind it. ONE worker process
takes the whole catalogue in that order (a process per case would cost about a second each), so
each good job is proof that the same process survived the malformed job queued before it.

A malformed job ends one of two ways:

- *failed*: RQ can read the hash, so the job ends failed at once (no retry), in the
  FailedJobRegistry, with the reason as the last line of its error, e.g. ``... names function
  'os.system', which is not allowed ...``;
- *skipped*: RQ cannot even build a Job from the hash (an id that is a path, a garbage
  ``created_at``/``timeout``/``status``), so there is no job to record a failure on: the worker
  logs ``unreadable job skipped`` with the id and the reason, the hash stays as it was written,
  and ``status`` answers with an error saying the job cannot be read.

Either way nothing it names runs: every case that could run code aims it at a marker file of its
own, and no marker ever appears. Two controls make that absence mean something: the pickle
payloads do create their marker when unpickled, and a hash written the same way runs to the end
when nothing in it is malformed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import pathlib
import pickle
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from plan_configs import Configs
from stablenew.errors import ConfigError, StableNewError
from stablenew.jobs.connection import connect
from stablenew.jobs.keys import JOB_FUNCTION
from stablenew.jobs.producer import Producer, build_checked_plan
from stablenew.jobs.rq_classes import MAX_JOB_DATA_BYTES, StableNewJob
from stablenew.pipeline import MAX_INIT_IMAGE_B64, MAX_PLAN_JSON_CHARS, StageExecutionPlan
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

QUEUE = "default"
QUEUE_KEY = f"rq:queue:{QUEUE}"
TXT2IMG = "/sdapi/v1/txt2img"
READY_TIMEOUT_S = 20.0
RUN_DEADLINE_S = 90.0
STOP_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------------------ payloads
class TouchOnUnpickle:
    """Unpickling this calls ``Path(marker).touch()``: the marker exists only if it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def pickle_payload(marker: Path) -> bytes:
    """What a pickle-serializing RQ producer would store as ``data``: the job tuple, pickled."""
    return pickle.dumps((TouchOnUnpickle(marker), None, [], {}), protocol=pickle.HIGHEST_PROTOCOL)


def job_data(func: str, *args: Any, instance: Any = None) -> bytes:
    """RQ's JSON job tuple ``[func_name, instance, args, kwargs]``, as ``Job.data`` holds it."""
    return json.dumps([func, instance, list(args), {}]).encode()


def job_hash(data: bytes, *, compress: bool = True, **fields: str | bytes) -> dict[str, str | bytes]:
    """A job hash as RQ 2.12's ``Job.to_dict`` saves it (JSON serializer, ``data`` zlib-compressed,
    three retries as the producer asks), with ``fields`` replaced."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    mapping: dict[str, str | bytes] = {
        "created_at": stamp,
        "enqueued_at": stamp,
        "data": zlib.compress(data) if compress else data,
        "status": "queued",
        "origin": QUEUE,
        "description": "written straight into Redis",
        "timeout": "300",
        "result_ttl": "3600",
        "failure_ttl": "3600",
        "retries_left": "3",
        "retry_intervals": "[0]",
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
    }
    mapping.update(fields)
    return mapping


def plan_with(**changes: Any) -> str:
    """A minimal plan document with ``changes`` applied, as JSON."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "stages": [{"stage_type": "txt2img", "config_key": "txt2img", "config": {"prompt": "x", "steps": 4}}],
    }
    doc.update(changes)
    return json.dumps(doc)


# ------------------------------------------------------------------------------------------ catalogue
@dataclass(frozen=True)
class Ctx:
    """What a case may use: its own marker file (which must never appear) and a valid plan."""

    marker: Path
    plan_json: str


Written = tuple[str | None, dict[str, str | bytes]]  # (an id of its own, or None for bad-<case>; hash)


@dataclass(frozen=True)
class Case:
    """One malformed job: how it is written, and how it must end: ``failed`` with every string of
    ``reason`` in its error, or ``skipped``."""

    id: str
    write: Callable[[Ctx], Written]
    outcome: str
    reason: tuple[str, ...] = ()


def fresh(data: bytes, **fields: str | bytes) -> Written:
    return None, job_hash(data, **fields)


def oversized_plan(ctx: Ctx) -> Written:
    """A valid plan padded to one character over the plan size limit (zlib keeps it small in Redis;
    the worker gets all of it)."""
    doc = json.loads(ctx.plan_json)
    doc["stages"][0]["config"]["prompt"] = ""
    doc["stages"][0]["config"]["prompt"] = "A" * (MAX_PLAN_JSON_CHARS + 1 - len(json.dumps(doc)))
    text = json.dumps(doc)
    assert len(text) == MAX_PLAN_JSON_CHARS + 1
    return fresh(job_data(JOB_FUNCTION, text))


NOT_ALLOWED = "which is not allowed"
NOT_JSON = ("DeserializationError", "its data is not JSON")
# A pickle is what RQ's default serializer writes: status says so (a job whose meta alone is a pickle is
# no malformed job: it runs, see tests/integration/test_rq_without_json.py).
REWRITTEN = ("was rewritten by a tool without -S json", "resubmit its config")
ONE_ARGUMENT = "takes one argument, the plan as a JSON string"

CATALOGUE = [
    Case(
        "data-not-json",
        lambda c: fresh(f'["os.system", null, ["touch {c.marker}'.encode()),
        "failed",
        NOT_JSON,
    ),
    Case("data-pickle", lambda c: fresh(pickle_payload(c.marker)), "failed", REWRITTEN),
    Case(
        "data-pickle-uncompressed",
        lambda c: (None, job_hash(pickle_payload(c.marker), compress=False)),
        "failed",
        REWRITTEN,
    ),
    Case(
        "data-zlib-bomb",
        lambda c: fresh(b" " * (MAX_JOB_DATA_BYTES + 1)),
        "failed",
        ("DeserializationError", "once inflated"),
    ),
    Case(
        "func-os-system",
        lambda c: fresh(job_data("os.system", f"touch {c.marker}")),
        "failed",
        ("JobNotAllowed", f"'os.system', {NOT_ALLOWED}"),
    ),
    Case(
        "func-subprocess-run",
        lambda c: fresh(job_data("subprocess.run", ["touch", str(c.marker)])),
        "failed",
        ("JobNotAllowed", f"'subprocess.run', {NOT_ALLOWED}"),
    ),
    Case(
        "func-builtins-eval",
        lambda c: fresh(job_data("builtins.eval", f"__import__('pathlib').Path({str(c.marker)!r}).touch()")),
        "failed",
        ("JobNotAllowed", f"'builtins.eval', {NOT_ALLOWED}"),
    ),
    Case(
        "func-allowed-name-on-an-instance",
        lambda c: fresh(job_data(JOB_FUNCTION, c.plan_json, instance={"module": "os"})),
        "failed",
        ("JobNotAllowed", NOT_ALLOWED),
    ),
    Case(
        "func-name-not-a-string",
        lambda c: fresh(json.dumps([["os", "system"], None, [f"touch {c.marker}"], {}]).encode()),
        "failed",
        ("JobNotAllowed", f"['os', 'system'], {NOT_ALLOWED}"),
    ),
    *(
        Case(
            f"callback-{kind}-os-system",
            lambda c, kind=kind: fresh(
                job_data(JOB_FUNCTION, c.plan_json), **{f"{kind}_callback_name": "os.system"}
            ),
            "failed",
            ("JobNotAllowed", f"{kind} callback 'os.system', {NOT_ALLOWED}"),
        )
        for kind in ("success", "failure", "stopped")
    ),
    Case(
        "plan-unknown-schema-version",
        lambda c: fresh(job_data(JOB_FUNCTION, plan_with(schema_version=99))),
        "failed",
        ("PlanVersionError", "schema_version 99 is not supported"),
    ),
    Case(
        "plan-missing-fields",
        lambda c: fresh(job_data(JOB_FUNCTION, plan_with(stages=[{"stage_type": "txt2img"}]))),
        "failed",
        ("ConfigError", "stages.0.config_key: Field required"),
    ),
    Case(
        "plan-adetailer-only",
        lambda c: fresh(
            job_data(
                JOB_FUNCTION,
                plan_with(
                    stages=[{"stage_type": "adetailer", "config_key": "adetailer", "adetailer_enabled": True}]
                ),
            )
        ),
        "failed",
        ("InvalidStagePlanError", "ADetailer requires at least one generation stage"),
    ),
    Case(
        "plan-oversized",
        oversized_plan,
        "failed",
        ("ConfigError", f"over the limit of {MAX_PLAN_JSON_CHARS:,}"),
    ),
    Case(
        "args-oversized",
        lambda c: fresh(job_data(JOB_FUNCTION, *[c.plan_json] * 5000)),
        "failed",
        ("JobNotAllowed", ONE_ARGUMENT, "got 5,000 positional arguments"),
    ),
    Case(
        "args-missing", lambda c: fresh(job_data(JOB_FUNCTION)), "failed", (ONE_ARGUMENT, "got 0 positional")
    ),
    Case(
        "args-not-a-string",
        lambda c: fresh(job_data(JOB_FUNCTION, json.loads(c.plan_json))),
        "failed",
        (ONE_ARGUMENT, "got a dict"),
    ),
    Case(
        "kwargs-not-a-mapping",
        lambda c: fresh(json.dumps([JOB_FUNCTION, None, [c.plan_json], ["x"]]).encode()),
        "failed",
        (ONE_ARGUMENT, "got keyword arguments"),
    ),
    Case(
        "id-is-a-path",
        lambda c: (f"../../escape-{uuid.uuid4().hex[:8]}", job_hash(job_data(JOB_FUNCTION, c.plan_json))),
        "skipped",
    ),
    Case(
        "garbage-created-at",
        lambda c: fresh(job_data(JOB_FUNCTION, c.plan_json), created_at="tuesday"),
        "skipped",
    ),
    Case(
        "garbage-timeout", lambda c: fresh(job_data(JOB_FUNCTION, c.plan_json), timeout="forever"), "skipped"
    ),
    Case("garbage-status", lambda c: fresh(job_data(JOB_FUNCTION, c.plan_json), status="pwned"), "skipped"),
]
CONTROL = Case("control-well-formed", lambda c: fresh(job_data(JOB_FUNCTION, c.plan_json)), "finished")


# ------------------------------------------------------------------------------------------ size limits
def png_b64_of_length(chars: int) -> str:
    """A whole 8x8 PNG (init images must decode to their end) padded by a private ancillary chunk, as
    base64 of exactly ``chars`` characters (a multiple of 4)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    small = buffer.getvalue()
    pad = chars // 4 * 3 - len(small) - 12
    chunk = struct.pack(">I", pad) + b"prVt" + bytes(pad)
    chunk += struct.pack(">I", zlib.crc32(b"prVt" + bytes(pad)))
    image = base64.b64encode(small[:-12] + chunk + small[-12:]).decode("ascii")
    assert len(image) == chars
    return image


# In-process, and before the catalogue: their ``connection`` fixture flushes the test DB.
def test_the_producer_refuses_a_plan_longer_than_a_worker_reads_and_enqueues_nothing(
    producer: Producer, connection: redis.Redis
) -> None:
    """Producer and worker share one plan size limit: what one writes, the other reads."""
    image = png_b64_of_length(MAX_PLAN_JSON_CHARS // 2 + 12)
    config = {"img2img_enabled": True, "img2img_config": {"init_images": [image, image]}}

    with pytest.raises(ConfigError) as info:
        producer.submit(config)

    assert [p.path for p in info.value.problems] == ["plan"]
    assert f"over the limit of {MAX_PLAN_JSON_CHARS:,}" in str(info.value)
    assert connection.keys("rq:job:*") == []
    assert connection.llen(QUEUE_KEY) == 0


def test_a_plan_with_an_init_image_at_its_own_maximum_size_still_travels_to_a_worker(
    producer: Producer, connection: redis.Redis
) -> None:
    """The limits leave room for what a config may hold: one init image at its own maximum is
    enqueued, and read back intact the way a worker fetches a job."""
    image = png_b64_of_length(MAX_INIT_IMAGE_B64)
    config = {"img2img_enabled": True, "img2img_config": {"init_images": [image]}}

    submission = producer.submit(config)

    job = StableNewJob.fetch(submission.job_id, connection=connection, serializer=JSONSerializer)
    assert StageExecutionPlan.from_json(job.args[0]) == submission.plan


def test_a_plan_is_measured_as_it_would_be_written_not_only_as_it_was_read() -> None:
    """A plan that passes as read but that ``to_json`` would write over the limit is refused too."""
    plan = build_checked_plan(Configs.txt2img("x"))
    doc = plan.model_dump(mode="json")
    doc["stages"][0]["config"]["padding"] = "A" * MAX_PLAN_JSON_CHARS  # an extra key: sections keep them

    with pytest.raises(ConfigError, match="over the limit of"):
        StageExecutionPlan.from_json(doc)


# ------------------------------------------------------------------------------------------ the run
@dataclass
class Injected:
    """One case as written: the malformed job's id and hash, and the good job submitted behind it."""

    case: Case
    job_id: str
    marker: Path
    prompt: str
    written: dict[str, str | bytes]
    good_id: str = ""


@dataclass
class CatalogueRun:
    """The whole catalogue after one worker process has taken it."""

    connection: redis.Redis
    producer: Producer
    simulator: SimulatedWebUI
    worker_name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    root: Path
    injected: dict[str, Injected] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.root / "outputs"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def prompts_sent(self) -> list[str]:
        return [r.body["prompt"] for r in self.simulator.requests if r.method == "POST" and r.path == TXT2IMG]

    def job(self, job_id: str) -> StableNewJob:
        job = StableNewJob.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        assert isinstance(job, StableNewJob)
        return job


def registered(connection: redis.Redis, name: str) -> Worker | None:
    return next((w for w in Worker.all(connection=connection) if w.name == name), None)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (RQ's warm shutdown), then SIGKILL of its process group and of every descendant."""
    family = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
    for pid in family:  # a work horse leads its own process group
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def drained(run: CatalogueRun) -> bool:
    """Nothing queued or running, and every good job at an end."""
    conn = run.connection
    if conn.llen(QUEUE_KEY) or StartedJobRegistry(QUEUE, connection=conn).get_job_ids(cleanup=False):
        return False
    return all(run.producer.status(i.good_id).done for i in run.injected.values())


def inject(run: CatalogueRun, case: Case) -> None:
    """Write ``case`` into Redis by hand, push its id, then submit a good job behind it."""
    marker = run.root / "markers" / case.id
    prompt = f"evil {case.id}"
    ctx = Ctx(marker=marker, plan_json=build_checked_plan(Configs.txt2img(prompt)).to_json())
    own_id, mapping = case.write(ctx)
    job_id = own_id or f"bad-{case.id}"
    run.connection.hset(f"rq:job:{job_id}", mapping=mapping)
    run.connection.rpush(QUEUE_KEY, job_id)
    injected = Injected(case, job_id, marker, prompt, mapping)
    injected.good_id = run.producer.submit(Configs.txt2img(f"good after {case.id}")).job_id
    run.injected[case.id] = injected


@pytest.fixture(scope="module")
def catalogue_run(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogueRun]:
    """Start one ``stablenew worker``, feed it the control and every case (each followed by a good
    job), and wait until it has drained the queue; the tests read what happened."""
    root = tmp_path_factory.mktemp("malformed")
    (root / "markers").mkdir()
    connection = connect(redis_url)
    connection.flushdb()
    producer = Producer(connection, Settings(retry_max=3, retry_intervals="0", output_dir=root / "outputs"))
    simulator = SimulatedWebUI(port=0).start()
    name = f"malformed-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env.update(
        {
            "STABLENEW_REDIS_URL": redis_url,
            "STABLENEW_OUTPUT_DIR": str(root / "outputs"),
            "STABLENEW_WEBUI_URL": simulator.url,
            "STABLENEW_PROGRESS_INTERVAL": "0.1",
            "STABLENEW_RETRY_INTERVALS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = root / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stablenew", "worker", QUEUE, "--name", name],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = CatalogueRun(connection, producer, simulator, name, proc, log_path, root)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while registered(connection, name) is None:
            assert proc.poll() is None, f"the worker exited before it was ready:\n{run.log()}"
            assert time.monotonic() < deadline, (
                f"the worker was not ready in {READY_TIMEOUT_S} s:\n{run.log()}"
            )
            time.sleep(0.05)
        for case in [CONTROL, *CATALOGUE]:
            inject(run, case)
        deadline = time.monotonic() + RUN_DEADLINE_S
        while proc.poll() is None and not drained(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield run
    finally:
        stop(proc)
        simulator.stop()
        connection.flushdb()
        connection.close()


# ------------------------------------------------------------------------------------------ checks
def assert_good_job_completed(run: CatalogueRun, job_id: str, prompt: str) -> None:
    """Finished by this worker, its prompt sent to the WebUI, its files on disk as recorded."""
    view = run.producer.status(job_id)
    assert view.status == "finished", (view.to_dict(), run.log()[-4000:])
    assert run.job(job_id).worker_name == run.worker_name
    assert prompt in run.prompts_sent()
    assert view.manifest is not None
    manifest = json.loads(Path(view.manifest).read_text())
    assert manifest["worker"] == run.worker_name
    outputs = [out for stage in view.stages for out in stage["outputs"]]
    assert outputs, view.to_dict()
    for out in outputs:
        path = run.output_dir / out["path"]
        assert path.parent == run.output_dir / job_id
        assert hashlib.sha256(path.read_bytes()).hexdigest() == out["sha256"]


def test_the_pickle_payloads_would_create_their_marker_if_they_were_ever_unpickled(tmp_path: Path) -> None:
    """Control: the absence of a marker below means the payload was never unpickled."""
    marker = tmp_path / "unpickled"

    pickle.loads(pickle_payload(marker))  # the payload built above, to prove it is live

    assert marker.exists()


def test_a_hash_written_by_hand_runs_to_the_end_when_nothing_in_it_is_malformed(
    catalogue_run: CatalogueRun,
) -> None:
    """Control: the hand-written hash is a real job, so the cases fail for what is malformed in them."""
    injected = catalogue_run.injected[CONTROL.id]

    assert_good_job_completed(catalogue_run, injected.job_id, injected.prompt)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_a_malformed_job_ends_clearly_runs_nothing_and_the_same_worker_completes_the_next_job(
    catalogue_run: CatalogueRun, case: Case
) -> None:
    """Each malformed job fails at once naming its reason (or, unreadable, is skipped and logged),
    runs and writes nothing, and the same worker process then completes the good job behind it."""
    run = catalogue_run
    injected = run.injected[case.id]
    job_id = injected.job_id
    log = run.log()

    if case.outcome == "failed":
        # It failed at once (no retry), in the failed registry, naming the reason
        view = run.producer.status(job_id)
        assert view.status == "failed", (view.to_dict(), log[-4000:])
        assert view.error is not None
        for fragment in case.reason:
            assert fragment in view.error, view.error
        assert job_id in FailedJobRegistry(QUEUE, connection=run.connection).get_job_ids(cleanup=False)
        assert len(run.job(job_id).results()) == 1  # one attempt: retries are not spent on it
        assert f"Job {job_id}: enqueued for retry" not in log
    else:
        # It was skipped unread: logged with its reason, its hash as written, never started
        assert case.outcome == "skipped"
        assert f"job {job_id!r}: unreadable job skipped" in log, log[-4000:]
        stored = run.connection.hgetall(f"rq:job:{job_id}")
        assert stored[b"status"].decode() == injected.written["status"]
        assert stored[b"started_at"] == b""
        assert stored[b"worker_name"] == b""
        for registry in (StartedJobRegistry, FailedJobRegistry, FinishedJobRegistry):
            assert job_id not in registry(QUEUE, connection=run.connection).get_job_ids(cleanup=False)
        with pytest.raises(StableNewError):  # a clear answer, not a crash of the caller
            run.producer.status(job_id)
    assert job_id.encode() not in run.connection.lrange(QUEUE_KEY, 0, -1)

    # Nothing it names ran: no marker, no generation of its plan, no files for it
    assert not injected.marker.exists()
    assert injected.prompt not in run.prompts_sent()
    assert not (run.output_dir / job_id).resolve().exists()

    # The same worker process then completed the good job queued behind it
    assert run.proc.poll() is None, log[-4000:]
    assert_good_job_completed(run, injected.good_id, f"good after {case.id}")
    if case.outcome == "failed":
        bad_ended = run.job(job_id).ended_at
        good_started = run.job(injected.good_id).started_at
        assert isinstance(bad_ended, datetime) and isinstance(good_started, datetime)
        assert bad_ended <= good_started


def test_the_worker_process_survives_the_whole_catalogue_with_nothing_run_or_written_outside(
    catalogue_run: CatalogueRun,
) -> None:
    """No malformed job stopped or replaced the worker, ran anything, or wrote outside its outputs."""
    run = catalogue_run

    # One process took every job: still running, still registered under the same pid
    assert run.proc.poll() is None, run.log()[-4000:]
    worker = registered(run.connection, run.worker_name)
    assert worker is not None
    assert worker.pid == run.proc.pid
    assert "unhandled exception" not in run.log()
    assert drained(run)
    # No marker anywhere, and the outputs hold the good jobs' folders only
    assert list((run.root / "markers").iterdir()) == []
    good = {i.good_id for i in run.injected.values()} | {run.injected[CONTROL.id].job_id}
    assert {p.name for p in run.output_dir.iterdir()} == good
    assert sorted(p.name for p in run.root.iterdir()) == ["markers", "outputs", "worker.log"]
    assert list(run.root.parent.glob("escape-*")) == []
    assert len(run.prompts_sent()) == len(good)
