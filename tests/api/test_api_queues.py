"""Queue control over HTTP: pause and resume (with a real worker), move, counts and the ETA."""

from __future__ import annotations

import time

import pytest

from api_server import ApiServer
from jobs_helpers import is_done, small_config, wait_http
from stablenew.jobs.queue_control import estimate_eta

pytestmark = pytest.mark.integration


def queue(server: ApiServer, name: str) -> dict:
    return next(q for q in server.client.get("/v1/queues").json() if q["name"] == name)


def test_a_paused_queue_keeps_its_jobs_until_resumed_and_a_running_job_is_not_touched(
    api, simulator, worker_process
) -> None:
    server: ApiServer = api()
    simulator.set_latency(0.6)
    worker_process(webui_url=simulator.url)  # idle: already waiting on every queue when we pause
    running = server.client.post("/v1/jobs", json={"config": small_config(), "queue": "high"}).json()
    wait_http(server.client, running["job_id"], lambda v: v["status"] == "started")

    assert server.client.post("/v1/queues/high/pause").json()["paused"] is True  # while its job runs
    paused = server.client.post("/v1/queues/default/pause").json()
    assert paused["name"] == "default" and paused["paused"] is True
    waiting = server.client.post("/v1/jobs", json={"config": small_config(), "queue": "default"}).json()

    assert wait_http(server.client, running["job_id"], is_done)["status"] == "finished"
    time.sleep(1.5)  # the worker is free: it would have taken the job by now
    view = server.client.get(f"/v1/jobs/{waiting['job_id']}").json()
    assert view["status"] == "queued" and view["position"] == 1  # next to run
    default = queue(server, "default")
    assert (default["queued"], default["paused"], default["eta_s"], default["eta_note"]) == (
        1,
        True,
        None,
        "paused",
    )
    assert queue(server, "high")["finished"] == 1
    assert queue(server, "high")["median_job_s"] > 0

    resumed = server.client.post("/v1/queues/default/resume").json()
    assert resumed["paused"] is False
    assert wait_http(server.client, waiting["job_id"], is_done, timeout=30)["status"] == "finished"
    assert server.client.post("/v1/queues/high/resume").json()["paused"] is False


def test_move_puts_a_queued_job_in_front_or_on_another_queue(api) -> None:
    server: ApiServer = api()  # no worker: everything stays queued
    ids = [server.client.post("/v1/jobs", json={"config": small_config()}).json()["job_id"] for _ in range(3)]
    assert server.client.get(f"/v1/jobs/{ids[2]}").json()["position"] == 3

    front = server.client.post(f"/v1/jobs/{ids[2]}/move", json={"to": "front"})
    assert front.status_code == 200, front.text
    assert front.json()["job"]["position"] == 1
    assert server.client.get(f"/v1/jobs/{ids[0]}").json()["position"] == 2

    moved = server.client.post(f"/v1/jobs/{ids[1]}/move", json={"queue": "high"}).json()
    assert moved["job"]["queue"] == "high" and moved["job"]["position"] == 1
    assert [q["queued"] for q in server.client.get("/v1/queues").json()] == [1, 2, 0]
    assert queue(server, "default")["eta_note"] == "no live worker listens on this queue"

    server.client.post(f"/v1/jobs/{ids[0]}/cancel")
    refused = server.client.post(f"/v1/jobs/{ids[0]}/move", json={"to": "front"})
    assert refused.status_code == 409 and "not waiting in a queue" in refused.json()["detail"]
    assert server.client.post(f"/v1/jobs/{ids[2]}/move", json={}).status_code == 422
    assert server.client.post(f"/v1/jobs/{ids[2]}/move", json={"queue": "urgent"}).status_code == 422
    assert server.client.post("/v1/queues/urgent/pause").status_code == 422


def test_the_eta_is_waiting_jobs_times_the_median_job_over_live_workers() -> None:
    assert estimate_eta(6, 10.0, 2) == (30.0, None)
    assert estimate_eta(0, None, 0) == (0.0, None)
    assert estimate_eta(3, 10.0, 0) == (None, "no live worker listens on this queue")
    assert estimate_eta(3, None, 1) == (None, "no recently finished job to time")
    assert estimate_eta(3, 10.0, 1, paused=True) == (None, "paused")
