"""The console in a real browser (Debian's Chromium driven by Playwright) while a real worker runs
a job against the simulator: progress moves, thumbnails appear, a click cancels a job.

Set CONSOLE_SCREENSHOT_DIR to keep the screenshots (the README's docs/console-*.png come from here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_server import TOKEN, ApiServer
from jobs_helpers import is_done, two_stage_config, wait_http

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's Chromium is not installed (apt-get install -y chromium); Playwright's own browser "
        "download is not used",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def progress_of(page, job_id: str, stage: int) -> float:
    value: float = page.eval_on_selector(
        f'article[data-job="{job_id}"] [data-stage="{stage}"] progress', "p => p.value"
    )
    return value


def test_the_console_shows_live_progress_and_thumbnails_and_cancels_with_a_click(
    api, simulator, worker_process, browser, tmp_path: Path
) -> None:
    server: ApiServer = api()
    simulator.set_latency(2.5)
    worker_process(webui_url=simulator.url)
    server.client.post("/v1/queues/default/pause")  # both jobs wait until the console is open
    running = server.client.post(
        "/v1/jobs", json={"config": two_stage_config("a lighthouse at dusk", steps=20), "id": "lighthouse"}
    ).json()["job_id"]
    waiting = server.client.post(
        "/v1/jobs", json={"config": two_stage_config("a harbour in the rain"), "id": "harbour"}
    ).json()["job_id"]
    folder = shots(tmp_path)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Given a logged-in console showing both jobs queued
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.inner_text(f'article[data-job="{waiting}"] .job-status') == "queued"
    assert page.locator('.queue[data-queue="default"] .badge.paused').count() == 1

    # When the queue is resumed, the first job runs
    page.click('button[data-action="resume"][data-queue="default"]')

    # Then the running job's first stage shows its progress moving
    page.wait_for_function(
        f"""() => {{ const p = document.querySelector('article[data-job="{running}"] [data-stage="0"] progress');
        return p && p.value > 0 && p.value < 1; }}""",
        timeout=20_000,
    )
    first = progress_of(page, running, 0)
    page.screenshot(path=str(folder / "console-progress.png"), full_page=True)
    page.wait_for_function(
        f"""() => {{ const p = document.querySelector('article[data-job="{running}"] [data-stage="0"] progress');
        return p.value > {first}; }}""",
        timeout=20_000,
    )
    assert page.inner_text(f'article[data-job="{running}"] .job-status') == "started"

    # When the first stage ends its thumbnail appears
    thumb = f'article[data-job="{running}"] [data-stage="0"] img'
    page.wait_for_selector(thumb, timeout=30_000)
    page.wait_for_function(f"""() => document.querySelector('{thumb}').naturalWidth > 0""", timeout=10_000)
    assert "?thumb=256" in page.get_attribute(thumb, "src")

    # And a click on Cancel cancels the waiting job
    page.click(f'article[data-job="{waiting}"] button[data-action="cancel"]')
    page.wait_for_function(
        f"""() => document.querySelector('article[data-job="{waiting}"] .job-status').textContent === 'canceled'""",
        timeout=15_000,
    )
    assert server.client.get(f"/v1/jobs/{waiting}").json()["status"] == "canceled"

    # And when the job ends, every stage has its picture
    last_thumb = f'article[data-job="{running}"] [data-stage="1"] img'
    page.wait_for_selector(last_thumb, timeout=40_000)
    page.wait_for_function(
        f"""() => document.querySelector('{last_thumb}').naturalWidth > 0""", timeout=10_000
    )
    assert wait_http(server.client, running, is_done)["status"] == "finished"
    page.wait_for_function(
        f"""() => document.querySelector('article[data-job="{running}"] .job-status').textContent === 'finished'""",
        timeout=15_000,
    )
    page.screenshot(path=str(folder / "console-queue.png"), full_page=True)

    # The job page shows each stage's picture large, with its settings
    page.goto(f"{server.url}/jobs/{running}")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.stage-large img')].every(i => i.naturalWidth > 0)",
        timeout=10_000,
    )
    assert page.locator(".stage-large img").count() == 2
    assert "a lighthouse at dusk" in page.inner_text(".stage-large")
    page.screenshot(path=str(folder / "console-job.png"), full_page=True)

    # And the console reads on a phone
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(server.url + "/")
    phone.wait_for_selector(f'article[data-job="{running}"] [data-stage="1"] img')
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    phone.screenshot(path=str(folder / "console-phone.png"), full_page=False)
    assert errors == []
