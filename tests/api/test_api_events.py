"""The event stream of a job: progress as it changes, increasing ids, the end, and reconnecting."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from api_server import ApiServer
from jobs_helpers import is_done, two_stage_config, wait_http

pytestmark = pytest.mark.integration


def read_events(client: httpx.Client, job_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    """Every event of the stream until the server closes it: {"id", "event", "data"}."""
    events: list[dict] = []
    current: dict = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers or {}, timeout=60) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            if field == "id":
                current["id"] = int(value)
            elif field == "event":
                current["event"] = value
            elif field == "data":
                current["data"] = json.loads(value)
    return events


def test_a_running_job_streams_its_stages_progress_then_ends_with_its_whole_view(
    api, simulator, worker_process
) -> None:
    server: ApiServer = api()
    simulator.set_latency(1.5)  # progress is saved every 0.5 s: a few values per stage
    worker_process(webui_url=simulator.url)
    job_id = server.client.post("/v1/jobs", json={"config": two_stage_config(steps=10)}).json()["job_id"]

    events = read_events(server.client, job_id)

    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 1
    assert events[0]["event"] == "state" and events[0]["data"]["job_id"] == job_id
    assert events[-1]["event"] == "end"
    final = server.client.get(f"/v1/jobs/{job_id}").json()
    assert events[-1]["data"] == final and final["status"] == "finished"
    stage_events = [e["data"] for e in events if e["event"] == "stage"]
    progress = [s["progress"] for s in stage_events if s["index"] == 0 and s["status"] == "running"]
    assert len(progress) >= 2 and progress == sorted(progress) and 0 < progress[-1] < 1, stage_events
    finished = [s for s in stage_events if s["status"] == "finished"]
    assert {s["index"] for s in finished} == {0, 1} and all(s["outputs"] for s in finished)
    assert any(e["event"] == "job" and e["data"]["status"] == "started" for e in events)
    for before, after in itertools.pairwise(stage_events):
        assert before != after  # only changes are sent

    again = read_events(server.client, job_id, headers={"Last-Event-ID": str(ids[-1])})
    assert [e["event"] for e in again] == ["state", "end"]
    assert again[0]["id"] == ids[-1] + 1 and again[1]["data"] == final


def test_a_reconnecting_client_gets_the_current_state_at_once(api) -> None:
    server: ApiServer = api()  # no worker: the job stays queued, so the stream stays open
    job_id = server.client.post("/v1/jobs", json={"config": two_stage_config()}).json()["job_id"]
    with server.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "41"}, timeout=10
    ) as answer:
        lines = answer.iter_lines()
        head = [next(lines) for _ in range(5)]
    assert head[0] == "retry: 2000"
    assert head[2:4] == ["id: 42", "event: state"]
    state = json.loads(head[4].removeprefix("data: "))
    assert state["status"] == "queued" and [s["status"] for s in state["stages"]] == ["pending", "pending"]
    server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert wait_http(server.client, job_id, is_done)["status"] == "canceled"
