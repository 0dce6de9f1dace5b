"""``stablenew dashboard`` shows no Redis password and, off loopback, asks who is looking.

rq-dashboard's own redaction (``escape_format_instance_list``) left a ``?password=`` query whole on the
queues, workers, jobs and job pages, and hid ``user:pass@`` only up to the first ``@``, so a password
holding ``@`` showed its tail; and it had no authentication. The pages are read here from the real
rq-dashboard app on a Redis that requires the password, with and without HTTP basic authentication.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask.testing import FlaskClient

from redis_servers import redis_server_with_password
from stablenew.cli import main
from stablenew.cli.dashboard import create_app
from stablenew.jobs.producer import Producer

PASSWORD = "dash-s3cr@t-Tail9"  # holds an @: the part after it is what used to show
TAIL = PASSWORD.rsplit("@", 1)[1]
PAGES = ("/", "/0/view/workers", "/0/view/jobs")


@pytest.fixture(scope="module")
def protected_redis() -> Iterator[int]:
    """A Redis-protocol server that requires PASSWORD; yields its port."""
    with redis_server_with_password(PASSWORD) as port:
        yield port


def urls(port: int) -> dict[str, str]:
    return {
        "userinfo with @": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        "password query": f"redis://127.0.0.1:{port}/0?password={quote(PASSWORD, safe='@')}",
    }


def job_on(url: str) -> str:
    with redis.Redis.from_url(url) as connection:
        return (
            Producer(connection)
            .submit(
                {
                    "txt2img_enabled": True,
                    "txt2img_config": {"prompt": "a harbour", "width": 64, "height": 64},
                }
            )
            .job_id
        )


def page(client: FlaskClient, path: str, **kwargs: Any) -> str:
    response = client.get(path, follow_redirects=True, **kwargs)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


@pytest.mark.parametrize("form", ["userinfo with @", "password query"])
def test_no_dashboard_page_shows_the_redis_password_or_its_tail(form: str, protected_redis: int) -> None:
    # Given: the dashboard on a Redis URL carrying the password, and a job to look at
    url = urls(protected_redis)[form]
    job_id = job_on(url)
    client = create_app(url).test_client()

    # When: every page that lists the Redis instances is read
    bodies = {path: page(client, path) for path in (*PAGES, f"/0/view/job/{job_id}")}

    # Then: each shows the instance, its password hidden
    for path, body in bodies.items():
        assert f"127.0.0.1:{protected_redis}" in body, path
        assert "***" in body, path
        assert PASSWORD not in body and TAIL not in body and quote(PASSWORD) not in body, path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_with_auth_every_page_asks_for_the_user_and_password(protected_redis: int) -> None:
    url = urls(protected_redis)["userinfo with @"]
    client = create_app(url, auth=("ops", "opens3same")).test_client()

    for path in (*PAGES, "/0/data/queues.json", "/static/favicon.ico"):
        for headers in ({}, basic("ops", "wrong"), basic("someone", "opens3same")):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert "***" in page(client, "/", headers=basic("ops", "opens3same"))


def test_without_auth_the_dashboard_refuses_to_serve_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STABLENEW_DASHBOARD_AUTH", raising=False)
    monkeypatch.setenv("STABLENEW_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached

    assert main(["dashboard", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "STABLENEW_DASHBOARD_AUTH" in capsys.readouterr().err
