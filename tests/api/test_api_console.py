"""The console's pages as HTML: what they show, and that everything from a job is escaped."""

from __future__ import annotations

import pytest

from api_server import ApiServer
from jobs_helpers import small_config

pytestmark = pytest.mark.integration

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_pages_show_queues_jobs_and_settings_with_every_prompt_escaped(api) -> None:
    server: ApiServer = api()
    job_id = server.client.post("/v1/jobs", json={"config": small_config(HOSTILE), "id": "hostile"}).json()[
        "job_id"
    ]

    index = server.client.get("/")
    page = server.client.get(f"/jobs/{job_id}")

    assert index.status_code == 200 and page.status_code == 200
    assert 'data-job="hostile"' in index.text and 'data-queue="default"' in index.text
    assert "No worker is running." in index.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text
    for html in (index.text, page.text):
        assert "<script>alert" not in html and "<img src=x" not in html
    assert "<dt>steps</dt><dd>6</dd>" in page.text
    assert 'data-rerun="hostile"' in page.text and '<button type="submit" >Rerun</button>' in page.text
    assert 'data-action="cancel" data-job-id="hostile" >' in page.text  # enabled: the job is queued


def test_an_unknown_job_page_is_404_and_names_are_escaped(api) -> None:
    server: ApiServer = api()
    answer = server.client.get("/jobs/%3Cb%3Ex")
    assert answer.status_code == 404
    assert "<b>x" not in answer.text and "&lt;b&gt;x" in answer.text


def test_static_files_and_the_overview_fragment_are_served(api) -> None:
    server: ApiServer = api(public_read=True)
    assert "EventSource" in server.anonymous.get("/static/console.js").text
    assert "@media" in server.anonymous.get("/static/console.css").text
    fragment = server.anonymous.get("/fragments/overview")
    assert fragment.status_code == 200 and '<section class="queues">' in fragment.text
    assert 'data-action="pause"' not in fragment.text  # no buttons without the right to use them
