"""The job routes over real HTTP, with real Redis, a real worker process and the simulator."""

from __future__ import annotations

import io

import pytest
import redis
from PIL import Image

from api_server import ApiServer
from jobs_helpers import is_done, small_config, two_stage_config, wait_http
from stablenew.jobs.connection import connect

pytestmark = pytest.mark.integration


def test_a_job_submitted_over_http_runs_and_its_pictures_and_thumbnails_are_served(
    api, simulator, worker_process
) -> None:
    server: ApiServer = api()
    worker_process(webui_url=simulator.url)

    answer = server.client.post("/v1/jobs", json={"config": two_stage_config(), "queue": "high"})

    assert answer.status_code == 201, answer.text
    sub = answer.json()
    assert sub["queue"] == "high" and sub["stages"] == ["txt2img", "upscale"]
    view = wait_http(server.client, sub["job_id"], is_done)
    assert view["status"] == "finished", view
    listed = server.client.get("/v1/jobs", params={"queue": "high"}).json()
    assert [v["job_id"] for v in listed] == [sub["job_id"]]
    assert listed[0]["status"] == "finished"
    upscaled = view["stages"][1]["outputs"][0]
    name = upscaled["path"].rsplit("/", 1)[-1]
    full = server.client.get(f"/v1/jobs/{sub['job_id']}/outputs/{name}")
    assert full.status_code == 200
    assert full.content == (server.output_dir / upscaled["path"]).read_bytes()
    thumb = server.client.get(f"/v1/jobs/{sub['job_id']}/outputs/{name}", params={"thumb": 256})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert max(image.size) <= 256 and image.size != (upscaled["width"], upscaled["height"])
    again = server.client.get(f"/v1/jobs/{sub['job_id']}/outputs/{name}", params={"thumb": 256})
    assert again.content == thumb.content  # from the cache
    workers = server.client.get("/v1/workers").json()
    assert len(workers) == 1 and workers[0]["state"] in ("idle", "busy")


def test_a_bad_config_is_422_with_one_entry_per_problem_in_the_clis_words(api, run_cli, tmp_path) -> None:
    server: ApiServer = api()
    config = small_config()
    config["txt2img_config"].update(steps=0, width=99)
    (tmp_path / "bad.json").write_text(__import__("json").dumps(config))

    answer = server.client.post("/v1/jobs", json={"config": config})

    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    assert {p["field"] for p in problems} == {"txt2img_config.steps", "txt2img_config.width"}
    cli = run_cli("submit", "bad.json")
    assert cli.returncode == 2
    printed = [line.split(": ", 1)[1] for line in cli.stderr.splitlines() if line.startswith("error")]
    assert sorted(p["text"] for p in problems) == sorted(printed)
    assert server.client.get("/v1/jobs").json() == []  # nothing was enqueued


def test_an_unknown_job_is_404_on_every_route_and_a_bad_id_is_422(api) -> None:
    server: ApiServer = api()
    for method, path in [
        ("GET", "/v1/jobs/nope"),
        ("POST", "/v1/jobs/nope/cancel"),
        ("POST", "/v1/jobs/nope/retry"),
        ("GET", "/v1/jobs/nope/events"),
        ("GET", "/v1/jobs/nope/outputs/00-txt2img-00.png"),
    ]:
        answer = server.client.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert "nope" in answer.json()["detail"]
    moved = server.client.post("/v1/jobs/nope/move", json={"to": "front"})
    assert moved.status_code == 404
    assert server.client.get("/v1/jobs/bad%20id").status_code == 422


def test_cancel_retry_and_resubmitting_an_id_follow_the_producer(api) -> None:
    server: ApiServer = api()  # no worker: the job stays queued
    first = server.client.post("/v1/jobs", json={"config": small_config(), "id": "mine-1"})
    again = server.client.post("/v1/jobs", json={"config": small_config(), "id": "mine-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()

    not_yet = server.client.post("/v1/jobs/mine-1/retry")
    assert not_yet.status_code == 409 and "only failed, canceled" in not_yet.json()["detail"]
    canceled = server.client.post("/v1/jobs/mine-1/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["result"] == "canceled (it had not started)"
    assert canceled.json()["job"]["status"] == "canceled"
    retried = server.client.post("/v1/jobs/mine-1/retry")
    assert retried.status_code == 200 and retried.json()["job_id"] == "mine-1"
    assert server.client.get("/v1/jobs/mine-1").json()["status"] == "queued"
    assert [v["job_id"] for v in server.client.get("/v1/jobs", params={"status": "queued"}).json()] == [
        "mine-1"
    ]


def test_lenient_is_accepted_and_unknown_fields_are_refused(api) -> None:
    server: ApiServer = api()
    ok = server.client.post("/v1/jobs", json={"config": small_config(), "lenient": True})
    assert ok.status_code == 201
    extra = server.client.post("/v1/jobs", json={"config": small_config(), "priority": 1})
    assert extra.status_code == 422
    wrong_queue = server.client.post("/v1/jobs", json={"config": small_config(), "queue": "urgent"})
    assert wrong_queue.status_code == 422


def test_redis_down_is_503_without_a_traceback(api, closed_port: int) -> None:
    dead = connect(f"redis://127.0.0.1:{closed_port}/0", check=False)
    server: ApiServer = api(conn=dead)
    for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/abc"), ("GET", "/v1/queues")]:
        answer = server.client.request(method, path)
        assert answer.status_code == 503, answer.text
        assert "Traceback" not in answer.text
    posted = server.client.post("/v1/jobs", json={"config": small_config()})
    assert posted.status_code == 503


def test_the_server_answers_on_the_same_redis_the_cli_uses(api, connection: redis.Redis, run_cli) -> None:
    server: ApiServer = api()
    sub = server.client.post("/v1/jobs", json={"config": small_config()}).json()
    status = run_cli("status", sub["job_id"], "--json")
    assert status.returncode == 0, status.stderr
    assert __import__("json").loads(status.stdout) == server.client.get(f"/v1/jobs/{sub['job_id']}").json()
