"""Load under transient faults: 1,000 small plans, two real worker processes, a WebUI failing 5 % of calls.

Every plan carries its own prompt ("load plan 0042"), so each generation request the simulator receives
can be traced to the plan it was made for:

- a txt2img request names the prompt in its body;
- an upscale request (``/sdapi/v1/extra-single-image``) has no prompt, but its ``image`` is the plan's
  txt2img output, byte for byte (outputs are written and re-read exactly as received), and that PNG
  carries A1111's ``parameters`` text chunk, whose first line is the prompt. Reading it back out of the
  request attributes upscales as soundly as prompts attribute txt2img calls, failed attempts included.

The closing note (throughput, faults) is printed and kept in the test's ``user_properties``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from stablenew.jobs.keys import requeues_key
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.jobs.state import StateStore
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

PLANS = 1_000
BATCHES = 10
WORKERS = 2
QUEUE = "default"
FAULT_RATE = 0.05
FAULT_SEED = 20_261_201
DEADLINE_S = 240.0
MAX_HAND_BACKS = 3
ROUTES = {"/sdapi/v1/txt2img": "txt2img", "/sdapi/v1/extra-single-image": "upscale"}
SIZES = {"txt2img": 64, "upscale": 128}  # square outputs: 64x64, then upscaled x2


def prompt_of(index: int) -> str:
    return f"load plan {index:04d}"


def config_of(index: int) -> dict[str, Any]:
    """A small plan; every third one also upscales, so a second stage and its hand-over are exercised."""
    config: dict[str, Any] = {
        "txt2img_enabled": True,
        "txt2img_config": {
            "prompt": prompt_of(index),
            "steps": 2,
            "width": SIZES["txt2img"],
            "height": SIZES["txt2img"],
            "sampler_name": "Euler a",
            "seed": index,
        },
    }
    if index % 3 == 0:
        config["upscale_enabled"] = True
        config["upscale_config"] = {"upscaler": "Lanczos", "upscaling_resize": 2.0}
    return config


def png_prompt(data: bytes) -> str:
    """The prompt in a PNG's A1111 ``parameters`` text chunk (its first line)."""
    with Image.open(io.BytesIO(data)) as image:
        parameters = image.info.get("parameters")
    assert isinstance(parameters, str), "PNG without an A1111 parameters chunk"
    return parameters.split("\n", 1)[0]


def request_prompt(stage: str, body: Any) -> str:
    """The plan a generation request belongs to, by its prompt (txt2img) or its input image (upscale)."""
    assert isinstance(body, dict), f"a {stage} request without a JSON body"
    if stage == "txt2img":
        return str(body["prompt"])
    return png_prompt(base64.b64decode(body["image"]))


def wait_until_all_finished(connection: redis.Redis, deadline_s: float) -> None:
    """Poll the queue's registries until every plan finished; fail early if one lands in failed."""
    finished = FinishedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    failed = FailedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    deadline = time.monotonic() + deadline_s
    done = 0
    while time.monotonic() < deadline:
        done = finished.get_job_count(cleanup=False)
        if done >= PLANS:
            return
        bad = failed.get_job_ids(cleanup=False)
        assert not bad, f"{len(bad)} job(s) failed, e.g. {bad[:3]}"
        time.sleep(0.1)
    raise AssertionError(f"only {done} of {PLANS} plans finished within {deadline_s} s")


@pytest.mark.timeout(300)  # its own deadline says what went wrong; this only stops a hang
def test_a_thousand_plans_under_transient_faults_all_finish_with_each_stage_succeeding_exactly_once(
    request: pytest.FixtureRequest,
    connection: redis.Redis,
    producer: Producer,
    worker_process,
    tmp_path: Path,
) -> None:
    """Two worker processes run 1,000 plans (submitted in batches) while the simulator fails 5 % of the
    generation calls at random (half HTTP 500, half dropped connections). Every job finishes; each
    plan's stages were answered exactly once (failed attempts aside, and those were really made); the
    per-stage ``attempts`` of the job state match the requests the WebUI saw; every manifest output is on
    disk with its sha256 and holds its own plan's image; no job is left started or failed."""
    sim = SimulatedWebUI(port=0, fault_rate=FAULT_RATE, fault_seed=FAULT_SEED, image_cache=True).start()
    try:
        for _ in range(WORKERS):
            worker_process(QUEUE, webui_url=sim.url)
        configs = [config_of(i) for i in range(PLANS)]
        size = PLANS // BATCHES
        first_submit = datetime.now(UTC)
        clock = time.monotonic()
        submissions = []
        for start in range(0, PLANS, size):
            submissions += producer.submit_many(configs[start : start + size], queue=QUEUE)
        submit_s = time.monotonic() - clock
        wait_until_all_finished(connection, DEADLINE_S)
        wait_s = time.monotonic() - clock
    finally:
        sim.stop()

    job_ids = [s.job_id for s in submissions]
    assert len(set(job_ids)) == PLANS

    # Every job finished, in RQ and in its own stage state.
    jobs = StableNewJob.fetch_many(job_ids, connection=connection, serializer=JSONSerializer)
    assert all(job is not None for job in jobs)
    statuses = Counter(job.get_status(refresh=False) for job in jobs if job is not None)
    assert statuses == {JobStatus.FINISHED: PLANS}, statuses
    states = StateStore(connection).load_many(job_ids)
    assert len(states) == PLANS
    assert Counter(state.status for state in states.values()) == {"finished": PLANS}

    # Nothing is left behind in the queue's registries.
    started = StartedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    failed = FailedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    assert started.get_job_count(cleanup=False) == 0
    assert failed.get_job_count(cleanup=False) == 0
    assert connection.llen(f"rq:queue:{QUEUE}") == 0

    # Every generation request the WebUI saw, attributed to its plan and stage.
    answered: Counter[tuple[str, str]] = Counter()
    attempted: Counter[tuple[str, str]] = Counter()
    answers: Counter[int | None] = Counter()
    for record in sim.requests:
        stage = ROUTES.get(record.path)
        if record.method != "POST" or stage is None:
            assert record.method == "GET", f"unexpected request {record.method} {record.path}"
            continue
        answers[record.status] += 1
        key = (request_prompt(stage, record.body), stage)
        attempted[key] += 1
        if record.status == 200:
            answered[key] += 1
    assert set(answers) <= {200, 500, 0}, answers
    calls, faults = sum(answers.values()), answers[500] + answers[0]
    assert 0.02 * calls <= faults <= 0.10 * calls, f"{faults} faults in {calls} calls"
    assert answers[500] > 0 and answers[0] > 0, answers

    expected = {
        (prompt_of(i), stage): 1
        for i, config in enumerate(configs)
        for stage in ("txt2img", "upscale")
        if config.get(f"{stage}_enabled")
    }
    assert dict(answered) == expected  # each stage of each plan succeeded exactly once, and nothing else
    assert set(attempted) == set(expected)  # no failed attempt belongs to anything but these plans

    outputs_root = tmp_path / "outputs"
    hand_backs = [int(connection.get(requeues_key(job_id)) or 0) for job_id in job_ids]
    for index, job_id in enumerate(job_ids):
        state = states[job_id]
        prompt = prompt_of(index)
        assert [st.type for st in state.stages] == [t for p, t in expected if p == prompt]
        for st in state.stages:
            assert st.status == "finished"
            assert st.attempts == attempted[(prompt, st.type)], (job_id, st)
        # The manifest's outputs exist with their sha256 and are this plan's own images.
        assert state.manifest is not None
        manifest = json.loads(Path(state.manifest).read_text())
        assert manifest["job_id"] == job_id and manifest["status"] == "finished"
        files = [(stage["type"], output) for stage in manifest["stages"] for output in stage["outputs"]]
        assert len(files) == len(state.stages)
        for stage_type, output in files:
            data = (outputs_root / output["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == output["sha256"], output["path"]
            assert png_prompt(data) == prompt, output["path"]
            assert output["width"] == output["height"] == SIZES[stage_type], output
    assert max(hand_backs) <= MAX_HAND_BACKS, Counter(hand_backs)

    last_end = max(job.ended_at for job in jobs if job is not None and job.ended_at is not None)
    wall_s = (last_end.replace(tzinfo=UTC) - first_submit).total_seconds()
    note = {
        "plans": PLANS,
        "stages": len(expected),
        "workers": WORKERS,
        "wall_s": round(wall_s, 2),
        "jobs_per_s": round(PLANS / wall_s, 1),
        "submit_s": round(submit_s, 2),
        "wait_s": round(wait_s, 2),
        "generation_calls": calls,
        "faults": faults,
        "faults_http_500": answers[500],
        "faults_dropped": answers[0],
        "stage_retries": sum(attempted.values()) - len(expected),
        "jobs_handed_back": sum(1 for n in hand_backs if n),
        "jobs_retried_by_rq": sum(1 for job in jobs if job is not None and (job.retries_left or 0) < 3),
    }
    for key, value in note.items():
        request.node.user_properties.append((key, value))
    print(
        f"\nload: {PLANS} plans ({len(expected)} stages) on {WORKERS} workers in {wall_s:.1f} s "
        f"= {PLANS / wall_s:.1f} jobs/s; {faults} faults injected in {calls} generation calls "
        f"({answers[500]} HTTP 500, {answers[0]} dropped); {json.dumps(note)}"
    )
