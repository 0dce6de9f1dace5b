"""Fixtures for the queue-layer tests: one fakeredis server, a simulated WebUI, a burst worker.

Producer and worker share one ``fakeredis.FakeServer`` (each gets its own client, as two processes
would). The worker is RQ's ``SimpleWorker`` run in the main thread with ``burst=True``: it runs
every queued job in-process and returns (the forking ``Worker`` never completes jobs on fakeredis).
Retries use interval 0 so RQ requeues them at once and the same burst picks them up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import rq
from rq.job import Job
from rq.serializers import JSONSerializer

from plan_configs import Configs
from stablenew.jobs.affinity import checkpoint_queues
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewSimpleWorker, make_worker
from stablenew.jobs.state import StateStore
from stablenew.queues import QUEUES
from stablenew.run import JobState
from stablenew.settings import Settings
from stablenew.simulator import GENERATION_ROUTES, RecordedRequest, SimulatedWebUI

IMG2IMG = "/sdapi/v1/img2img"


class RecordingWebUI(SimulatedWebUI):
    """The simulator, also keeping the body of every successful generation response.

    ``sim.requests`` shows what the worker sent; ``responses`` shows the exact base64 the WebUI
    sent back, so a test can compare the bytes on disk with the bytes received. It is the
    simulator's ``recorder``: the one place that sees both the request and the answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, recorder=self._record, **kwargs)
        self.responses: list[tuple[str, dict[str, Any]]] = []

    def _record(self, request: RecordedRequest) -> None:
        generation = request.method == "POST" and request.path in GENERATION_ROUTES
        if generation and request.status == 200:
            self.responses.append((request.path, request.answer))

    def posts(self, route: str) -> list[dict[str, Any]]:
        """Bodies of the POSTs received on ``route``, oldest first."""
        return [r.body for r in self.requests if r.method == "POST" and r.path == route]

    def generation_posts(self) -> list[str]:
        return [r.path for r in self.requests if r.method == "POST" and r.path in GENERATION_ROUTES]

    def plain_img2img_posts(self) -> list[dict[str, Any]]:
        """img2img POSTs of img2img stages (an ADetailer stage also posts to /img2img)."""
        return [b for b in self.posts(IMG2IMG) if "ADetailer" not in (b.get("alwayson_scripts") or {})]

    def adetailer_posts(self) -> list[dict[str, Any]]:
        return [b for b in self.posts(IMG2IMG) if "ADetailer" in (b.get("alwayson_scripts") or {})]

    def sent_images(self) -> list[list[str]]:
        """Per successful generation response, the base64 images it carried, oldest first."""
        return [body["images"] if "images" in body else [body["image"]] for _, body in self.responses]


class CountingWorker(rq.SimpleWorker):
    """SimpleWorker that remembers the id of every job it performed, in order (retries included)."""

    performed: list[str]

    def perform_job(self, job: Job, queue: rq.Queue) -> bool:
        self.performed.append(job.id)
        result: bool = super().perform_job(job, queue)
        return result


class CountingStableNewWorker(StableNewSimpleWorker):
    """Our in-process worker (our dequeue, breaker and hand-back), remembering what it performed."""

    performed: list[str]

    def perform_job(self, job: Job, queue: rq.Queue) -> bool:
        self.performed.append(job.id)
        return super().perform_job(job, queue)


RunWorker = Callable[..., list[str]]


@pytest.fixture
def configs() -> type[Configs]:
    return Configs


@pytest.fixture
def sim() -> Iterator[RecordingWebUI]:
    with RecordingWebUI() as server:
        yield server


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def conn(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sim: RecordingWebUI, output_dir: Path) -> None:
    for name in ("STABLENEW_RETRY_MAX", "STABLENEW_WEBUI_AUTH", "STABLENEW_QUEUES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STABLENEW_WEBUI_URL", sim.url)
    monkeypatch.setenv("STABLENEW_OUTPUT_DIR", str(output_dir))
    monkeypatch.setenv("STABLENEW_PROGRESS_INTERVAL", "0.05")
    monkeypatch.setenv("STABLENEW_RETRY_INTERVALS", "0")
    monkeypatch.setenv("STABLENEW_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")  # the receivers here
    # Job-level retries (RQ's Retry) are what these tests follow; in-run stage retries and the
    # breaker have their own tests, which set these themselves.
    monkeypatch.setenv("STABLENEW_STAGE_RETRIES", "0")
    monkeypatch.setenv("STABLENEW_STAGE_RETRY_BACKOFF", "0")
    monkeypatch.setenv("STABLENEW_WEBUI_FAILURE_THRESHOLD", "1000")


@pytest.fixture
def producer(conn: fakeredis.FakeRedis, env: None) -> Producer:
    return Producer(conn, Settings())


@pytest.fixture
def run_worker(server: fakeredis.FakeServer, env: None) -> RunWorker:
    """Run a burst worker on ``queues``; return the ids of the jobs it performed, in order."""

    def run(queues: Sequence[str] = QUEUES) -> list[str]:
        # RQ's own worker knows only the queues it is given: the checkpoint queues of its bands too
        # (ours finds them itself, see stablenew.jobs.affinity).
        connection = fakeredis.FakeRedis(server=server)
        bands = [name for name in queues if name in QUEUES]
        queues = [*queues, *checkpoint_queues(connection, bands)]
        worker = make_worker(connection, queues, worker_class=CountingWorker)
        worker.performed = []
        worker.work(burst=True)
        return list(worker.performed)

    return run


@pytest.fixture
def run_our_worker(server: fakeredis.FakeServer, env: None) -> RunWorker:
    """Like ``run_worker``, with :class:`StableNewSimpleWorker`: hand-backs, breaker and all."""

    def run(queues: Sequence[str] = QUEUES) -> list[str]:
        worker = make_worker(fakeredis.FakeRedis(server=server), queues, worker_class=CountingStableNewWorker)
        worker.performed = []
        worker.work(burst=True)
        return list(worker.performed)

    return run


@pytest.fixture
def fetch(conn: fakeredis.FakeRedis) -> Callable[[str], Job]:
    def fetch_job(job_id: str) -> Job:
        return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)

    return fetch_job


@pytest.fixture
def stored_state(conn: fakeredis.FakeRedis) -> Callable[[str], JobState]:
    def load(job_id: str) -> JobState:
        state = StateStore(conn).load(job_id)
        assert state is not None, f"no state stored for {job_id}"
        return state

    return load
