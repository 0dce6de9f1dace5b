"""Rerun over HTTP: the same Producer.rerun as `stablenew rerun`, with a real worker and the simulator."""

from __future__ import annotations

import pytest

from api_server import ApiServer
from jobs_helpers import is_done, two_stage_config, wait_http

pytestmark = pytest.mark.integration


def test_rerun_changes_one_setting_and_reuses_the_stages_before_it(api, simulator, worker_process) -> None:
    server: ApiServer = api()
    worker_process(webui_url=simulator.url)
    first = server.client.post("/v1/jobs", json={"config": two_stage_config()}).json()
    assert wait_http(server.client, first["job_id"], is_done)["status"] == "finished"
    generations_before = len([r for r in simulator.requests if r.path == "/sdapi/v1/txt2img"])

    answer = server.client.post(
        f"/v1/jobs/{first['job_id']}/rerun", json={"set": {"upscale_config.upscaling_resize": 3}}
    )

    assert answer.status_code == 201, answer.text
    new = answer.json()
    assert new["job_id"] != first["job_id"] and new["stages"] == ["txt2img", "upscale"]
    view = wait_http(server.client, new["job_id"], is_done)
    assert view["status"] == "finished", view
    assert [s["status"] for s in view["stages"]] == ["reused", "finished"]
    assert view["stages"][0]["reused_from"]["job_id"] == first["job_id"]
    assert len([r for r in simulator.requests if r.path == "/sdapi/v1/txt2img"]) == generations_before


def test_rerun_refuses_an_unknown_key_naming_it_and_an_unknown_job(api) -> None:
    server: ApiServer = api()
    job = server.client.post("/v1/jobs", json={"config": two_stage_config()}).json()

    bad = server.client.post(
        f"/v1/jobs/{job['job_id']}/rerun", json={"set": {"upscale_config.upscaling_resiz": 3}}
    )
    missing = server.client.post("/v1/jobs/no-such-job-0000/rerun", json={"set": {}})
    anonymous = server.anonymous.post(f"/v1/jobs/{job['job_id']}/rerun", json={"set": {}})

    assert bad.status_code == 422, bad.text
    assert "upscaling_resiz" in bad.text
    assert missing.status_code == 404
    assert anonymous.status_code == 401


def test_the_job_page_offers_a_rerun_with_a_setting_to_change(api) -> None:
    server: ApiServer = api()
    job = server.client.post("/v1/jobs", json={"config": two_stage_config()}).json()

    page = server.client.get(f"/jobs/{job['job_id']}")

    assert page.status_code == 200
    assert f'data-rerun="{job["job_id"]}"' in page.text
    assert 'name="set"' in page.text
