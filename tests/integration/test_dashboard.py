"""``stablenew dashboard`` against a real Redis while a real worker runs one of our JSON jobs (issue 5).

One scenario serves the whole module (it costs two worker starts and a few seconds of simulated
GPU): job *failed* failed permanently at stage 0 of the full pipeline (the WebUI rejected its
txt2img), job *running* is on stage 0 of the full pipeline (the simulator takes 3 s per generation,
four stages), job *queued* waits on queue ``low``, which the worker does not listen on, and job
*canceled* was canceled there before it started. A second worker, on queue ``high``, has a WebUI
that does not answer: it handed its job back and is paused, probing it. rq-dashboard's HTML pages
are shells filled by their JavaScript from the JSON API, so each page is checked together with the
API calls its script makes. What the dashboard shows of a job is what ``status --json`` says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from ports import free_port
from stablenew.cli.dashboard import MUTATING_ENDPOINTS, SAFE_METHODS, create_app
from stablenew.config_files import load_config_file
from stablenew.jobs.connection import connect
from stablenew.jobs.producer import JobView, Producer
from stablenew.settings import Settings
from stablenew.simulator import Fault, SimulatedWebUI

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
STAGES = ["txt2img", "img2img", "upscale", "adetailer"]
WAIT_S = 30.0
# Every element rq-dashboard 0.9.0 renders to change jobs (ids or data-roles, templates and scripts).
MUTATING_CONTROLS = {"empty-btn", "compact-btn", "requeue-all-btn", "requeue-job-btn", "delete-job-btn"}


# ------------------------------------------------------------------------------------------ scenario
@dataclass
class Scenario:
    redis_url: str
    connection: redis.Redis
    producer: Producer
    failed_id: str
    running_id: str
    queued_id: str
    canceled_id: str
    worker_name: str
    worker_log: Path
    paused_worker: str

    def snapshot(self) -> dict[str, Any]:
        """What a requeue, delete, empty or compact would change (the running job changes by itself)."""
        c = self.connection
        return {
            "failed job": c.hgetall(f"rq:job:{self.failed_id}"),
            "queued job": c.hgetall(f"rq:job:{self.queued_id}"),
            "queue default": c.lrange("rq:queue:default", 0, -1),
            "queue low": c.lrange("rq:queue:low", 0, -1),
            "failed registry": c.zrange("rq:failed:default", 0, -1),
            "started registry": c.zrange("rq:wip:default", 0, -1),
        }


def _children(pid: int) -> list[int]:
    """Live children of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group ``proc`` leads, then SIGKILL it; RQ's work horse leads its own group."""
    horses = _children(proc.pid)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for pid in horses:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _wait_for(scenario_log: Path, what: str, check: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {WAIT_S} s; worker log:\n{scenario_log.read_text()}")
        time.sleep(0.05)


def _registered(connection: redis.Redis, name: str) -> bool:
    return bool(connection.exists(f"{Worker.redis_worker_namespace_prefix}{name}"))


def _stage0_running(view: JobView) -> bool:
    if view.done:
        raise AssertionError(f"the job ended before the dashboard was checked: {view.to_dict()}")
    return view.status == "started" and bool(view.stages) and view.stages[0]["status"] == "running"


@pytest.fixture(scope="module")
def scenario(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("dashboard")
    connection = connect(redis_url)
    connection.flushdb()  # the suite's own DB (see conftest), never another
    sim = SimulatedWebUI(latency=3.0).start()
    failing_sim = SimulatedWebUI().start()  # the paused worker's WebUI: fails every call once it started
    sim.inject(Fault("status", route="/sdapi/v1/txt2img", status=422))  # the first job's txt2img only
    producer = Producer(connection, Settings(retry_max=0, output_dir=tmp / "outputs"))
    failed = producer.submit(load_config_file(EXAMPLES / "full_pipeline.json"))
    running = producer.submit(load_config_file(EXAMPLES / "full_pipeline.json"))
    queued = producer.submit(load_config_file(EXAMPLES / "txt2img_only.json"), queue="low")
    canceled = producer.submit(load_config_file(EXAMPLES / "txt2img_only.json"), queue="low")
    producer.cancel(canceled.job_id)

    name = f"dash-{uuid.uuid4().hex[:8]}"
    log_path = tmp / "worker.log"
    paused_name = f"dash-paused-{uuid.uuid4().hex[:8]}"
    paused_log = tmp / "paused-worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env.update(
        STABLENEW_REDIS_URL=redis_url,
        STABLENEW_WEBUI_URL=sim.url,
        STABLENEW_OUTPUT_DIR=str(tmp / "outputs"),
        STABLENEW_PROGRESS_INTERVAL="0.1",
        PYTHONUNBUFFERED="1",
    )
    paused_env = {
        **env,
        "STABLENEW_WEBUI_URL": failing_sim.url,
        "STABLENEW_WEBUI_FAILURE_THRESHOLD": "1",
        "STABLENEW_STAGE_RETRIES": "0",
    }
    workers = []
    for worker_name, queue, path, worker_env in (
        (name, "default", log_path, env),
        (paused_name, "high", paused_log, paused_env),
    ):
        with path.open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stablenew", "worker", queue, "--name", worker_name],
                    env=worker_env,
                    cwd=tmp,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        _wait_for(log_path, "job 1 failed", lambda: producer.status(failed.job_id).status == "failed")
        _wait_for(log_path, "job 2 on stage 0", lambda: _stage0_running(producer.status(running.job_id)))
        _wait_for(paused_log, "the second worker up", lambda: _registered(connection, paused_name))
        failing_sim.set_outage(Fault("status", status=500))
        handed_back = producer.submit(load_config_file(EXAMPLES / "txt2img_only.json"), queue="high")
        _wait_for(
            paused_log,
            "the second worker handed its job back",
            lambda: (producer.status(handed_back.job_id).error or "").startswith("handed back"),
        )
        yield Scenario(
            redis_url,
            connection,
            producer,
            failed.job_id,
            running.job_id,
            queued.job_id,
            canceled.job_id,
            name,
            log_path,
            paused_name,
        )
    finally:
        sim.stop()  # cuts the generation short: the running job fails and its horse exits
        failing_sim.stop()
        for worker in workers:
            _stop_process_group(worker)
        connection.flushdb()
        connection.close()


@pytest.fixture(scope="module")
def client(scenario: Scenario) -> FlaskClient:
    return create_app(scenario.redis_url).test_client()


def get_json(client: FlaskClient, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True))
    return response.get_json()


def get_html(client: FlaskClient, path: str) -> str:
    response = client.get(path, follow_redirects=True)  # /0/view/queues is redirected to /
    assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def stablenew_meta(job_api: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(job_api["metadata"])["stablenew"]
    return meta


def assert_still_running(scenario: Scenario) -> None:
    """The checks below mean something only while the job runs (four stages of 3 s: ample)."""
    status = scenario.producer.status(scenario.running_id).status
    assert status == "started", f"the job is no longer running ({status}): the test took too long"


# full_pipeline.json names this checkpoint: its plan waits and runs on the band's queue for it.
CHECKPOINT_QUEUE = "default.ckpt.sd_xl_base_1.0.safetensors"


# ------------------------------------------------------------------------------------------ pages
def test_queues_page_and_api_count_the_running_failed_and_queued_jobs(
    client: FlaskClient, scenario: Scenario
) -> None:
    assert "Queues" in get_html(client, "/")
    get_html(client, "/0/view/queues")

    queues = {q["name"]: q for q in get_json(client, "/0/data/queues.json")["queues"]}

    # the running plan names a checkpoint: it runs from that checkpoint's queue of its band
    assert queues[CHECKPOINT_QUEUE]["started_job_registry_count"] == 1
    assert queues[CHECKPOINT_QUEUE]["failed_job_registry_count"] == 1
    assert queues["low"]["count"] == 1
    assert queues[CHECKPOINT_QUEUE]["started_url"] == f"/0/view/jobs/{CHECKPOINT_QUEUE}/started/8/asc/1"


def test_jobs_list_page_and_api_show_each_job_in_its_registry(
    client: FlaskClient, scenario: Scenario
) -> None:
    page = get_html(client, f"/0/view/jobs/{CHECKPOINT_QUEUE}/started/8/asc/1")
    assert f'value="{CHECKPOINT_QUEUE}"' in page

    started = get_json(client, f"/0/data/jobs/{CHECKPOINT_QUEUE}/started/8/asc/1.json")
    failed = get_json(client, f"/0/data/jobs/{CHECKPOINT_QUEUE}/failed/8/asc/1.json")
    queued = get_json(client, "/0/data/jobs/low/queued/8/asc/1.json")

    assert [j["id"] for j in started["jobs"]] == [scenario.running_id]
    assert started["jobs"][0]["description"] == "stablenew plan: txt2img -> img2img -> upscale -> adetailer"
    assert [j["id"] for j in failed["jobs"]] == [scenario.failed_id]
    assert "WebUIRejected" in failed["jobs"][0]["exc_info"]
    assert [j["id"] for j in queued["jobs"]] == [scenario.queued_id]
    assert_still_running(scenario)


def test_job_detail_page_and_api_show_our_per_stage_state_of_the_running_job(
    client: FlaskClient, scenario: Scenario
) -> None:
    assert scenario.running_id in get_html(client, f"/0/view/job/{scenario.running_id}")

    job = get_json(client, f"/0/data/job/{scenario.running_id}.json")

    assert job["status"] == "started"
    assert job["origin"] == CHECKPOINT_QUEUE
    meta = stablenew_meta(job)
    assert meta["status"] == "started"
    assert [s["type"] for s in meta["stages"]] == STAGES
    assert meta["stages"][0]["status"] in ("running", "finished")
    assert {s["status"] for s in meta["stages"]} <= {"pending", "running", "finished"}
    assert_still_running(scenario)


def test_job_detail_api_shows_the_failed_job_with_its_error(client: FlaskClient, scenario: Scenario) -> None:
    job = get_json(client, f"/0/data/job/{scenario.failed_id}.json")

    assert job["status"] == "failed"
    assert "WebUIRejected" in job["exc_info"]
    meta = stablenew_meta(job)
    assert meta["status"] == "failed"
    assert [(s["type"], s["status"]) for s in meta["stages"]] == [
        ("txt2img", "failed"),
        ("img2img", "skipped"),
        ("upscale", "skipped"),
        ("adetailer", "skipped"),
    ]


# ------------------------------------------------------------------------------------------ one truth
def status_json(scenario: Scenario, job_id: str) -> dict[str, Any]:
    """What ``stablenew status --json`` prints (the same call the CLI makes)."""
    return scenario.producer.status(job_id).to_dict()


def without_position(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "position"}


@pytest.mark.parametrize("which", ["failed_id", "queued_id", "canceled_id"])
def test_the_job_api_shows_what_status_json_says_of_a_failed_a_queued_and_a_canceled_job(
    client: FlaskClient, scenario: Scenario, which: str
) -> None:
    job_id = getattr(scenario, which)

    shown = stablenew_meta(get_json(client, f"/0/data/job/{job_id}.json"))

    assert shown == without_position(status_json(scenario, job_id))
    assert len(shown["stages"]) >= 1  # not an empty Metadata: every stage of the plan


def test_a_queued_job_and_one_canceled_before_it_started_show_every_stage(
    client: FlaskClient, scenario: Scenario
) -> None:
    queued = stablenew_meta(get_json(client, f"/0/data/job/{scenario.queued_id}.json"))
    canceled = stablenew_meta(get_json(client, f"/0/data/job/{scenario.canceled_id}.json"))

    assert (queued["status"], [s["status"] for s in queued["stages"]]) == ("queued", ["pending"])
    assert (canceled["status"], [s["status"] for s in canceled["stages"]]) == ("canceled", ["canceled"])
    assert canceled["error"] == "canceled before it started"


def test_the_running_stage_shows_the_progress_status_json_shows_within_one_save_interval(
    client: FlaskClient, scenario: Scenario
) -> None:
    """Progress is saved at most every PROGRESS_SAVE_INTERVAL_S, state key and meta together: read
    between two ``status --json`` calls, the dashboard shows a value between theirs."""
    deadline = time.monotonic() + WAIT_S
    while True:
        before = status_json(scenario, scenario.running_id)
        running = [s for s in before["stages"] if s["status"] == "running"]
        if running and 0 < running[0]["progress"] < 1:
            index = running[0]["index"]
            shown = stablenew_meta(get_json(client, f"/0/data/job/{scenario.running_id}.json"))
            after = status_json(scenario, scenario.running_id)
            if after["stages"][index]["status"] == "running":
                break
        assert time.monotonic() < deadline, f"no stage seen mid-way: {before}"
        time.sleep(0.05)

    low, high = before["stages"][index]["progress"], after["stages"][index]["progress"]
    assert shown["stages"][index]["status"] == "running"
    assert low <= shown["stages"][index]["progress"] <= high, (low, shown["stages"][index], high)
    assert shown["stages"][index]["progress"] > 0
    assert_still_running(scenario)


def test_a_worker_paused_because_its_webui_is_down_is_not_shown_idle(
    client: FlaskClient, scenario: Scenario
) -> None:
    page = get_html(client, "/0/view/workers")

    workers = {w["name"]: w for w in get_json(client, "/0/data/workers.json")["workers"]}

    paused = workers[scenario.paused_worker]
    assert paused["state"] == "suspended"
    assert paused["current_job"] != "idle"
    assert paused["current_job"].startswith("paused: its WebUI is failing")
    # The page prints a worker's current job as text unless it is a job: no row says "idle" for it.
    assert "typeof d.current_job === 'object'" in page
    assert workers[scenario.worker_name]["state"] == "busy"


def test_workers_page_and_api_answer_while_the_worker_is_busy_with_a_json_job(
    client: FlaskClient, scenario: Scenario
) -> None:
    get_html(client, "/0/view/workers")

    workers = {w["name"]: w for w in get_json(client, "/0/data/workers.json")["workers"]}

    ours = workers[scenario.worker_name]
    assert ours["state"] == "busy"
    assert ours["queues"] == ["default"]
    assert ours["current_job"]["job_id"] == scenario.running_id
    assert ours["current_job"]["call_string"].startswith("stablenew.jobs.job_run.run_plan(")
    assert_still_running(scenario)


def test_an_unknown_job_answers_404_instead_of_a_server_error(client: FlaskClient) -> None:
    assert client.get("/0/view/job/no-such-job").status_code == 404
    assert client.get("/0/data/job/no-such-job.json").status_code == 404


# ------------------------------------------------------------------------------------------ read-only
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/job/{failed}/requeue"),
        ("POST", "/job/{failed}/delete"),
        ("POST", "/job/{running}/delete"),
        ("POST", "/job/{queued}/delete"),
        ("POST", "/requeue/default"),
        ("GET", "/requeue/default"),
        ("POST", "/queue/default/failed/empty"),
        ("POST", "/queue/default/started/empty"),
        ("POST", "/queue/low/queued/empty"),
        ("POST", "/queue/low/compact"),
        ("POST", "/0/data/queues.json"),
        ("DELETE", "/0/view/job/{failed}"),
    ],
)
def test_a_request_that_would_change_jobs_is_refused_with_403_and_changes_nothing(
    client: FlaskClient, scenario: Scenario, method: str, path: str
) -> None:
    before = scenario.snapshot()
    url = path.format(failed=scenario.failed_id, running=scenario.running_id, queued=scenario.queued_id)

    response = client.open(url, method=method)

    assert response.status_code == 403
    assert "read-only" in response.get_data(as_text=True)
    assert scenario.snapshot() == before
    raw_meta = scenario.connection.hget(f"rq:job:{scenario.failed_id}", "meta")
    assert raw_meta is not None and json.loads(raw_meta)["stablenew"]["status"] == "failed"  # still JSON
    assert FailedJobRegistry(CHECKPOINT_QUEUE, connection=scenario.connection).get_job_ids(cleanup=False) == [
        scenario.failed_id
    ]
    job = Job.fetch(scenario.running_id, connection=scenario.connection, serializer=JSONSerializer)
    assert job.get_status() != "queued"


def test_every_route_that_accepts_a_change_is_among_the_refused_ones(client: FlaskClient) -> None:
    app = client.application

    changing = {rule.endpoint for rule in app.url_map.iter_rules() if set(rule.methods or ()) - SAFE_METHODS}

    assert changing == MUTATING_ENDPOINTS


class Controls(HTMLParser):
    """Ids and data-roles of a page's elements, also inside its ``<script type="text/template">``
    blocks (rq-dashboard renders job rows from those)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()
        self._in_template = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._in_template = dict(attrs).get("type") == "text/template"
        self.found.update(v for k, v in attrs if k in ("id", "data-role") and v)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_template = False

    def handle_data(self, data: str) -> None:
        if self._in_template:
            nested = Controls()
            nested.feed(data)
            self.found |= nested.found


@pytest.mark.parametrize(
    "path",
    [
        "/0/view/jobs/default/failed/8/asc/1",
        "/0/view/jobs/default/started/8/asc/1",
        "/0/view/jobs/low/queued/8/asc/1",
        "/0/view/job/{failed}",
        "/0/view/job/{running}",
    ],
)
def test_pages_render_no_requeue_delete_empty_or_compact_button(
    client: FlaskClient, scenario: Scenario, path: str
) -> None:
    html = get_html(client, path.format(failed=scenario.failed_id, running=scenario.running_id))

    controls = Controls()
    controls.feed(html)

    assert "job" in controls.found or "job-data" in controls.found  # the parser sees the page's elements
    assert controls.found & MUTATING_CONTROLS == set()


# ------------------------------------------------------------------------------------------ the command
def _http(method: str, url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def dashboard_url(scenario: Scenario, tmp_path: Path) -> Iterator[str]:
    """``python -m stablenew dashboard --port P`` on the scenario's Redis; its base URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env["STABLENEW_REDIS_URL"] = scenario.redis_url
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stablenew", "dashboard", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            with suppress(OSError):
                if _http("GET", f"{base}/0/data/queues.json")[0] == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not come up:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        _stop_process_group(proc)


def test_dashboard_command_serves_the_busy_worker_and_the_running_job_over_http_read_only(
    dashboard_url: str, scenario: Scenario
) -> None:
    status, body = _http("GET", f"{dashboard_url}/0/data/workers.json")
    assert status == 200, body
    workers = {w["name"]: w for w in json.loads(body)["workers"]}
    assert workers[scenario.worker_name]["current_job"]["job_id"] == scenario.running_id

    status, body = _http("GET", f"{dashboard_url}/0/data/job/{scenario.running_id}.json")
    assert status == 200, body
    assert [s["type"] for s in stablenew_meta(json.loads(body))["stages"]] == STAGES

    status, body = _http("GET", f"{dashboard_url}/0/view/job/{scenario.running_id}")
    assert status == 200 and scenario.running_id.encode() in body

    before = scenario.snapshot()
    assert _http("POST", f"{dashboard_url}/job/{scenario.failed_id}/requeue")[0] == 403
    assert _http("GET", f"{dashboard_url}/requeue/default")[0] == 403
    assert scenario.snapshot() == before
    assert_still_running(scenario)


def test_dashboard_command_exits_4_with_one_line_when_redis_is_unreachable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env["STABLENEW_REDIS_URL"] = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    result = subprocess.run(
        [sys.executable, "-m", "stablenew", "dashboard", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 4
    assert result.stderr.startswith("error: cannot reach Redis")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr


# ------------------------------------------------------------------------------------------ six
_WITHOUT_SIX = "import sys; sys.modules['six'] = None\n"


def test_rq_dashboard_alone_cannot_be_imported_without_six() -> None:
    """The fault we work around (rq-dashboard 0.9.0 uses six but does not require it)."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SIX + "import rq_dashboard.web"], capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "six" in result.stderr


def test_our_dashboard_serves_pages_without_six_and_leaves_no_fake_six_behind(scenario: Scenario) -> None:
    code = _WITHOUT_SIX + (
        "from stablenew.cli.dashboard import create_app\n"
        f"client = create_app({scenario.redis_url!r}).test_client()\n"
        "print(client.get('/0/data/queues.json').status_code, sys.modules['six'])\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "None"]
