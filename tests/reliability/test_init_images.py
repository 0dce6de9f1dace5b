"""Init images are image data that decodes to its end, checked at submit and again by the worker.

A PNG cut in half used to pass (its header is fine) and fail on the GPU host as ``500 Invalid encoded
image``; a URL in ``init_images`` used to reach the WebUI, which fetches http(s) init images itself, so
a submitter could make GPU hosts fetch any URL. Now submit decodes every init image completely and names
the field of the one that does not, and a worker re-checks a plan that was written into Redis past the
producer: the WebUI never hears of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from hostile_http import HostileServer, Request, b64, cut_in_half, png_bytes
from stablenew.cli import main
from stablenew.config_files import load_config_file
from stablenew.errors import ConfigError
from stablenew.jobs.keys import JOB_FUNCTION
from stablenew.jobs.producer import Producer, build_checked_plan
from stablenew.jobs.rq_classes import StableNewJob
from stablenew.simulator import SimulatedWebUI

WHOLE_PNG = png_bytes(64, 64)


def img2img(init: dict[str, Any]) -> dict[str, Any]:
    section = {"prompt": "a harbour", "steps": 2, "denoising_strength": 0.4, **init}
    return {"img2img_enabled": True, "img2img_config": section}


def problems_of(producer: Producer, config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        producer.submit(config)
    return [str(problem) for problem in excinfo.value.problems]


def test_an_init_image_file_cut_in_half_is_refused_at_submit(
    tmp_path: Path, producer: Producer, connection: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: a config naming a PNG whose second half is missing (its header and signature are intact)
    (tmp_path / "half.png").write_bytes(cut_in_half(WHOLE_PNG))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(img2img({"init_image_path": "half.png"})), encoding="utf-8")

    # When / Then: reading it refuses the image by its field; the CLI exits 2 and enqueues nothing
    with pytest.raises(ConfigError) as excinfo:
        load_config_file(path)
    (problem,) = excinfo.value.problems
    assert problem.path == "img2img_config.init_image_path"
    assert "does not decode" in problem.message
    assert main(["submit", str(path)]) == 2
    assert "init_image_path" in capsys.readouterr().err
    assert connection.dbsize() == 0


@pytest.mark.parametrize("form", ["base64", "data URI"])
def test_an_inline_init_image_cut_in_half_is_refused_at_submit(
    form: str, producer: Producer, connection: redis.Redis
) -> None:
    half = b64(cut_in_half(WHOLE_PNG))
    image = half if form == "base64" else f"data:image/png;base64,{half}"

    (problem,) = problems_of(producer, img2img({"init_images": [image]}))

    assert problem.startswith("img2img_config.init_images.0: is not a complete image")
    assert connection.dbsize() == 0


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/cat.png",
        "http://127.0.0.1:6379/latest/meta-data/iam",
        "/var/lib/stablenew/inputs/cat.png",
        "data:image/png;base64," + b64(b"not an image, only text that base64 carries"),
    ],
    ids=["url", "loopback url", "path", "data uri of text"],
)
def test_init_images_that_are_not_image_data_are_refused_at_submit(
    value: str, producer: Producer, connection: redis.Redis
) -> None:
    (problem,) = problems_of(producer, img2img({"init_images": [value]}))

    assert problem.startswith("img2img_config.init_images.0: ")
    assert any(word in problem for word in ("must be base64 image data", "is not a PNG, JPEG or WebP"))
    assert connection.dbsize() == 0


def test_a_whole_image_as_base64_or_data_uri_is_accepted(producer: Producer) -> None:
    images = [b64(WHOLE_PNG), f"data:image/png;base64,{b64(WHOLE_PNG)}"]

    submission = producer.submit(img2img({"init_images": images}))

    assert submission.plan.stages[0].config["init_images"] == images


def test_a_plan_written_into_redis_with_a_url_init_image_never_reaches_the_webui(
    connection: redis.Redis, worker_process: Any, simulator: SimulatedWebUI
) -> None:
    # Given: a worker on the simulated WebUI, and a plan whose init image was replaced by a loopback URL
    # (a server that records any fetch) after the producer checked it, written straight into Redis
    def answer(request: Request) -> None:
        request.answer(200, WHOLE_PNG, {"Content-Type": "image/png"})

    with HostileServer(answer) as target:
        plan = json.loads(build_checked_plan(img2img({"init_images": [b64(WHOLE_PNG)]})).to_json())
        plan["stages"][0]["config"]["init_images"] = [f"{target.url}/internal/secret.png"]
        queue = Queue("default", connection=connection, serializer=JSONSerializer, job_class=StableNewJob)
        worker_process("default", webui_url=simulator.url)

        # When: the worker takes the job
        job = queue.enqueue(JOB_FUNCTION, json.dumps(plan))
        deadline = time.monotonic() + 30
        while job.get_status(refresh=True) not in (JobStatus.FAILED, JobStatus.FINISHED):
            assert time.monotonic() < deadline, "the job did not end in 30 s"
            time.sleep(0.05)

        # Then: it failed naming the field; the WebUI got no img2img and nobody fetched the URL
        assert job.get_status() == JobStatus.FAILED
        result = job.latest_result()
        assert result is not None
        assert "init_images.0: must be base64 image data" in (result.exc_string or "")
        assert not [r for r in simulator.requests if r.path.startswith("/sdapi/v1/img2img")]
        assert target.requests == []
