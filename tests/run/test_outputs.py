"""JobOutputs: exact bytes, safe paths, atomic writes, verified reads."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
from PIL import Image

from stablenew.run import JobOutputs, OutputFile, atomic_write, is_valid_job_id


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


def test_write_stage_writes_exactly_the_decoded_bytes_and_describes_each_file(tmp_path):
    # Given two PNGs as the WebUI sends them (with a text chunk we must not lose by re-encoding)
    first, second = image_bytes(colour=(1, 2, 3)), image_bytes(size=(32, 16))
    outputs = JobOutputs(tmp_path, "job-1")

    # When a stage's images are written
    written = outputs.write_stage(0, "txt2img", [b64(first), b64(second)], [11, 12])

    # Then the files hold exactly those bytes, and each record says where, what and which seed
    assert [(tmp_path / w.path).read_bytes() for w in written] == [first, second]
    assert [w.path for w in written] == ["job-1/00-txt2img-00.png", "job-1/00-txt2img-01.png"]
    assert [w.sha256 for w in written] == [
        hashlib.sha256(first).hexdigest(),
        hashlib.sha256(second).hexdigest(),
    ]
    assert [(w.width, w.height, w.seed, w.bytes) for w in written] == [
        (64, 48, 11, len(first)),
        (32, 16, 12, len(second)),
    ]
    assert leftovers(tmp_path) == []


def test_write_stage_accepts_a_data_url_and_names_files_by_their_real_format(tmp_path):
    jpeg, webp = image_bytes("JPEG"), image_bytes("WEBP")
    outputs = JobOutputs(tmp_path, "job")

    written = outputs.write_stage(2, "upscale", ["data:image/jpeg;base64," + b64(jpeg), b64(webp)])

    assert [w.path for w in written] == ["job/02-upscale-00.jpg", "job/02-upscale-01.webp"]
    assert (tmp_path / written[0].path).read_bytes() == jpeg
    assert [w.seed for w in written] == [None, None]


def test_bytes_that_are_not_an_image_are_kept_as_is_without_a_size(tmp_path):
    data = b"not an image, but the WebUI sent it"

    [written] = JobOutputs(tmp_path, "job").write_stage(0, "txt2img", [b64(data)])

    assert written.path.endswith(".bin")
    assert (written.width, written.height) == (None, None)
    assert (tmp_path / written.path).read_bytes() == data


def test_invalid_base64_is_refused_naming_the_stage_and_leaves_no_file(tmp_path):
    outputs = JobOutputs(tmp_path, "job")

    with pytest.raises(ValueError, match="img2img image 0 is not valid base64"):
        outputs.write_stage(1, "img2img", ["not base64!!"])

    assert list(outputs.folder.iterdir()) == []


@pytest.mark.parametrize(
    "job_id", ["../escape", "a/b", "..", ".", "", "x" * 129, "job id", "j\x00b", "ü", "job\n"]
)
def test_an_unsafe_job_id_is_refused_before_any_path_is_built(tmp_path, job_id):
    assert not is_valid_job_id(job_id)
    with pytest.raises(ValueError, match="not a safe folder name"):
        JobOutputs(tmp_path, job_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["../txt2img", "up scale", "a/b", ""])
def test_an_unsafe_stage_name_is_refused(tmp_path, stage):
    with pytest.raises(ValueError, match="not a safe file name part"):
        JobOutputs(tmp_path, "job").write_stage(0, stage, [b64(image_bytes())])


def test_the_job_folder_is_directly_under_the_resolved_output_root(tmp_path):
    outputs = JobOutputs(tmp_path / "a" / ".." / "root", "job_1-A")

    assert outputs.folder == (tmp_path / "root").resolve() / "job_1-A"
    assert outputs.manifest_path == outputs.folder / "manifest.json"


def test_write_stage_writes_the_bytes_its_caller_decoded_already(tmp_path):
    # Given a stage's images and their bytes, as the executor decoded them to check them
    images = [b64(image_bytes(colour=(1, 2, 3))), b64(image_bytes(size=(32, 16)))]
    decoded = [base64.b64decode(image) for image in images]

    written = JobOutputs(tmp_path, "job").write_stage(0, "txt2img", images, [1, 2], decoded=decoded)

    assert [(tmp_path / w.path).read_bytes() for w in written] == decoded
    assert [w.sha256 for w in written] == [hashlib.sha256(d).hexdigest() for d in decoded]
    assert [(w.width, w.height) for w in written] == [(64, 48), (32, 16)]


def test_read_verified_returns_the_base64_of_intact_files(tmp_path):
    outputs = JobOutputs(tmp_path, "job")
    data = image_bytes()
    written = outputs.write_stage(0, "txt2img", [b64(data)])

    assert outputs.read_verified(written) == [b64(data)]


def test_read_verified_detects_a_tampered_file(tmp_path):
    # Given a stage's file whose content changed after its sha256 was recorded
    outputs = JobOutputs(tmp_path, "job")
    written = outputs.write_stage(0, "txt2img", [b64(image_bytes()), b64(image_bytes(colour=(0, 0, 0)))])
    path = tmp_path / written[1].path
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")

    # Then the stage's outputs are not trusted
    assert outputs.read_verified(written) is None


def test_read_verified_detects_a_missing_file(tmp_path):
    outputs = JobOutputs(tmp_path, "job")
    written = outputs.write_stage(0, "txt2img", [b64(image_bytes())])
    (tmp_path / written[0].path).unlink()

    assert outputs.read_verified(written) is None


@pytest.mark.parametrize("path", ["other/00-txt2img-00.png", "job/../other/00-txt2img-00.png", "secret.png"])
def test_read_verified_never_reads_outside_the_job_folder(tmp_path, path):
    # Given a file outside this job's folder whose sha256 is known
    data = image_bytes()
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    outputs = JobOutputs(tmp_path, "job")
    outputs.folder.mkdir(exist_ok=True)
    record = OutputFile(
        path=path, sha256=hashlib.sha256(data).hexdigest(), width=None, height=None, seed=None, bytes=0
    )

    assert outputs.read_verified([record]) is None


def test_verify_says_whether_every_file_still_has_its_recorded_sha256(tmp_path):
    # Given a stage's two files, as written
    outputs = JobOutputs(tmp_path, "job")
    written = outputs.write_stage(0, "txt2img", [b64(image_bytes()), b64(image_bytes(colour=(0, 0, 0)))])
    assert outputs.verify(written)

    # When one changes by a byte, or is gone, the stage's files are not intact
    path = tmp_path / written[1].path
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert not outputs.verify(written)
    path.unlink()
    assert not outputs.verify(written)


def test_verify_never_follows_a_symlink_or_leaves_the_job_folder(tmp_path):
    # Given a file outside the job's folder with the recorded sha256, and a link to it inside
    outputs = JobOutputs(tmp_path, "job")
    written = outputs.write_stage(0, "txt2img", [b64(image_bytes())])
    path = tmp_path / written[0].path
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(path.read_bytes())
    outside = OutputFile("elsewhere.png", written[0].sha256, None, None, None, 0)

    path.unlink()
    path.symlink_to(elsewhere)

    assert not outputs.verify(written)
    assert not outputs.verify([outside])


def test_write_manifest_writes_json_atomically(tmp_path):
    outputs = JobOutputs(tmp_path, "job")

    path = outputs.write_manifest({"job_id": "job", "stages": [{"status": "finished"}]})
    outputs.write_manifest({"job_id": "job", "stages": []})

    assert path == outputs.manifest_path
    assert json.loads(path.read_text()) == {"job_id": "job", "stages": []}
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    atomic_write(target, b"new bytes")

    assert target.read_bytes() == b"new bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    # Given an existing file
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    # When a write fails half-way (here: data of the wrong type)
    with pytest.raises(TypeError):
        atomic_write(target, "text is not bytes")  # type: ignore[arg-type]

    # Then the old content is intact and no temporary file is left behind
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
