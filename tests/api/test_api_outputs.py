"""Only files a job's state lists, only from under the output root: traversal attempts fail."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis
from PIL import Image

from api_server import ApiServer
from jobs_helpers import small_config
from stablenew.jobs.producer import Producer
from stablenew.jobs.state import StateStore
from stablenew.run import JobState, OutputRecord, StageState

pytestmark = pytest.mark.integration

SECRET = b"bytes of a file outside the output root"


def fake_finished(connection: redis.Redis, job_id: str, paths: list[str]) -> None:
    """Record in Redis that ``job_id``'s first stage made ``paths`` (as a worker would)."""
    outputs = [OutputRecord(path=p, sha256="ab" * 32) for p in paths]
    stage = StageState(index=0, type="txt2img", status="finished", progress=1.0, outputs=outputs)
    StateStore(connection).save(JobState(job_id=job_id, status="running", stages=[stage]))


@pytest.fixture
def job_with_outputs(api, producer: Producer, connection: redis.Redis, tmp_path: Path):
    server: ApiServer = api()
    job_id = producer.submit(small_config()).job_id
    root = server.output_dir
    (root / job_id).mkdir(parents=True)
    (root / job_id / "00-txt2img-00.png").write_bytes(b"\x89PNG listed")
    (root / job_id / "manifest.json").write_text("{}")
    (tmp_path / "secret.png").write_bytes(SECRET)
    (root / "other-job").mkdir()
    (root / "other-job" / "00-txt2img-00.png").write_bytes(b"other job")
    return server, job_id, root


def test_a_listed_output_is_served_by_its_name(job_with_outputs, connection: redis.Redis) -> None:
    server, job_id, _ = job_with_outputs
    fake_finished(connection, job_id, [f"{job_id}/00-txt2img-00.png"])
    answer = server.client.get(f"/v1/jobs/{job_id}/outputs/00-txt2img-00.png")
    assert answer.status_code == 200 and answer.content == b"\x89PNG listed"


@pytest.mark.parametrize(
    "name",
    [
        "manifest.json",  # on disk, but not an output the state lists
        "..%2Fsecret.png",
        "..%2F..%2Fsecret.png",
        "%2E%2E%2F%2E%2E%2Fsecret.png",
        "..%5C..%5Csecret.png",
        "%2Fetc%2Fpasswd",
        "00-txt2img-00.png%00.json",
    ],
)
def test_names_the_job_does_not_list_are_404(job_with_outputs, connection: redis.Redis, name: str) -> None:
    server, job_id, _root = job_with_outputs
    fake_finished(connection, job_id, [f"{job_id}/00-txt2img-00.png"])
    answer = server.client.get(f"/v1/jobs/{job_id}/outputs/{name}")
    assert answer.status_code in (404, 422), answer.text
    assert SECRET not in answer.content and b"root:" not in answer.content


@pytest.mark.parametrize("listed", ["../secret.png", "/etc/passwd", "other-job/../../secret.png"])
def test_a_state_listing_a_path_outside_the_output_root_serves_nothing(
    job_with_outputs, connection: redis.Redis, listed: str
) -> None:
    server, job_id, _root = job_with_outputs
    fake_finished(connection, job_id, [listed])
    name = listed.rsplit("/", 1)[-1]
    answer = server.client.get(f"/v1/jobs/{job_id}/outputs/{name}")
    assert answer.status_code == 404, answer.text
    assert SECRET not in answer.content and b"root:" not in answer.content


def test_a_symlink_out_of_the_output_root_is_not_followed(
    job_with_outputs, connection: redis.Redis, tmp_path: Path
) -> None:
    server, job_id, root = job_with_outputs
    (root / job_id / "01-upscale-00.png").symlink_to(tmp_path / "secret.png")
    fake_finished(connection, job_id, [f"{job_id}/01-upscale-00.png"])
    answer = server.client.get(f"/v1/jobs/{job_id}/outputs/01-upscale-00.png", params={"thumb": 64})
    assert answer.status_code == 404
    assert json.loads(answer.text)["detail"].endswith("is not on disk here")


def test_a_thumbnail_size_out_of_range_is_422(job_with_outputs, connection: redis.Redis) -> None:
    server, job_id, _ = job_with_outputs
    fake_finished(connection, job_id, [f"{job_id}/00-txt2img-00.png"])
    for size in ("0", "-5", "99999", "abc"):
        assert (
            server.client.get(f"/v1/jobs/{job_id}/outputs/00-txt2img-00.png?thumb={size}").status_code == 422
        )


def test_a_thumbnail_is_served_even_when_the_cache_cannot_be_written(
    job_with_outputs, connection: redis.Redis
) -> None:
    server, job_id, root = job_with_outputs
    Image.new("RGB", (600, 300), "red").save(root / job_id / "00-txt2img-00.png")
    (root / ".thumbnails").write_text("a file where the cache folder would go")
    fake_finished(connection, job_id, [f"{job_id}/00-txt2img-00.png"])

    answer = server.client.get(f"/v1/jobs/{job_id}/outputs/00-txt2img-00.png", params={"thumb": 128})

    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as image:
        assert image.size == (128, 64)
