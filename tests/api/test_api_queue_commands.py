"""``stablenew queues``, ``pause``, ``resume`` and ``move``: the same queue control as the API."""

from __future__ import annotations

import json

import pytest

from api_server import ApiServer
from jobs_helpers import small_config

pytestmark = pytest.mark.integration


def test_the_cli_pauses_resumes_moves_and_shows_what_the_api_shows(api, run_cli) -> None:
    server: ApiServer = api()
    ids = [server.client.post("/v1/jobs", json={"config": small_config()}).json()["job_id"] for _ in range(2)]

    assert run_cli("pause", "low").returncode == 0
    moved = run_cli("move", ids[1], "--front")
    assert moved.returncode == 0 and "moved to the front of default" in moved.stdout
    shown = run_cli("queues", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == server.client.get("/v1/queues").json()
    assert [q["paused"] for q in json.loads(shown.stdout)] == [False, False, True]
    assert server.client.get(f"/v1/jobs/{ids[1]}").json()["position"] == 1
    text = run_cli("queues").stdout
    assert "PAUSED" in text.splitlines()[2] and "queued 2" in text.splitlines()[1]

    assert run_cli("resume", "low").returncode == 0
    assert server.client.get("/v1/queues").json()[2]["paused"] is False
    nowhere = run_cli("move", ids[0])
    assert nowhere.returncode == 2 and "say where" in nowhere.stderr
    unknown = run_cli("move", "nope", "--front")
    assert unknown.returncode == 2 and "no job 'nope'" in unknown.stderr
