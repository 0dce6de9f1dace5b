"""Who may do what: the bearer token, --public-read, the console's cookie, and CORS."""

from __future__ import annotations

import httpx
import pytest

from api_server import TOKEN, ApiServer
from jobs_helpers import small_config

pytestmark = pytest.mark.integration

READS = ["/v1/jobs", "/v1/queues", "/v1/workers", "/"]
WRITES = ["/v1/jobs", "/v1/queues/default/pause", "/v1/queues/default/resume"]


def test_without_the_token_nothing_is_read_or_changed(api) -> None:
    server: ApiServer = api()
    for path in READS[:-1]:
        assert server.anonymous.get(path).status_code == 401
    assert server.anonymous.get("/", follow_redirects=False).headers["location"] == "/login"
    wrong = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
    with wrong:
        assert wrong.get("/v1/jobs").status_code == 401
        assert wrong.post("/v1/jobs", json={"config": small_config()}).status_code == 401
    assert server.anonymous.post("/v1/jobs", json={"config": small_config()}).status_code == 401
    assert server.client.get("/v1/jobs").json() == []  # nothing was enqueued


def test_public_read_opens_reads_but_not_changes(api) -> None:
    server: ApiServer = api(public_read=True)
    for path in READS:
        assert server.anonymous.get(path).status_code == 200, path
    for path in WRITES:
        answer = server.anonymous.post(path, json={"config": small_config()})
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
    assert server.client.post("/v1/queues/low/pause").json()["paused"] is True


def test_a_server_without_a_token_refuses_every_change(api) -> None:
    server: ApiServer = api(token=None, public_read=True)
    answer = server.anonymous.post("/v1/jobs", json={"config": small_config()})
    assert answer.status_code == 401
    assert "no STABLENEW_API_TOKEN" in answer.json()["detail"]


def test_the_console_cookie_reads_and_changes_only_with_the_console_header(api) -> None:
    server: ApiServer = api()
    browser = httpx.Client(base_url=server.url)
    with browser:
        refused = browser.post(
            "/login", content="token=wrong", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert refused.status_code == 401
        logged = browser.post(
            "/login", content=f"token={TOKEN}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert logged.status_code == 303
        cookie = browser.cookies.get("stablenew_console")
        assert cookie and TOKEN not in cookie
        assert browser.get("/v1/jobs").status_code == 200
        assert browser.get("/").status_code == 200
        assert browser.post("/v1/queues/high/pause").status_code == 401  # a cross-site form could do this
        paused = browser.post("/v1/queues/high/pause", headers={"X-StableNew-Console": "1"})
        assert paused.status_code == 200 and paused.json()["paused"] is True


def test_cors_is_off_unless_origins_are_configured(api) -> None:
    closed: ApiServer = api()
    answer = closed.client.get("/v1/jobs", headers={"Origin": "https://gui.example"})
    assert "access-control-allow-origin" not in answer.headers
    opened: ApiServer = api(cors="https://gui.example")
    answer = opened.client.get("/v1/jobs", headers={"Origin": "https://gui.example"})
    assert answer.headers["access-control-allow-origin"] == "https://gui.example"
    other = opened.client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
