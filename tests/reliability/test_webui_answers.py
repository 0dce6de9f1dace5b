"""What a WebUI sends back is checked before a stage counts as done, against small hostile HTTP servers.

An image that does not decode to its end (a PNG cut short on the way) used to be recorded as the stage's
output, and a retry reused it because its sha256 matched the file written. Now it is a failed call, transient
(the WebUI may send it whole next time), and nothing is recorded.
"""

from __future__ import annotations

import io
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hostile_http import HostileServer, Request, b64, cut_in_half, generation_answer, png_bytes
from stablenew.errors import Canceled, WebUIHTTPError, WebUITimeout, is_transient
from stablenew.jobs.producer import build_checked_plan
from stablenew.pipeline import StageType, build_stage_payload
from stablenew.run import PlanRun
from stablenew.settings import Settings
from stablenew.webui import WebUIClient, WebUIExecutor

WHOLE_PNG = png_bytes(64, 64)


def txt2img() -> dict[str, Any]:
    section = {"prompt": "a harbour", "steps": 2, "width": 64, "height": 64, "seed": 5}
    return {"txt2img_enabled": True, "txt2img_config": section}


def test_a_truncated_image_is_a_failed_transient_call_and_never_a_finished_stage(tmp_path: Path) -> None:
    # Given: a WebUI whose first answer carries a PNG cut in half (valid base64), the second a whole one
    answers = [b64(cut_in_half(WHOLE_PNG)), b64(WHOLE_PNG)]

    def answer(request: Request) -> None:
        request.answer(200, generation_answer([answers.pop(0)]))

    plan = build_checked_plan(txt2img())
    with HostileServer(answer) as webui:
        settings = Settings(webui_url=webui.url, output_dir=tmp_path / "outputs", progress_interval=0.2)

        # When: the stage runs against the truncated answer
        with PlanRun(settings, plan, "cut-image") as run, pytest.raises(WebUIHTTPError) as excinfo:
            run.run()
        state = run.recorder.state

        # Then: a transient failure naming the image; the stage is not finished and has no output
        assert is_transient(excinfo.value)
        assert "image 0 is not a complete image" in str(excinfo.value)
        assert state.stages[0].status != "finished"
        assert state.stages[0].outputs == []

        # And the next try (the worker's retry) records the whole image, not the cut one
        with PlanRun(settings, plan, "cut-image", state=state) as rerun:
            rerun.run()
        (output,) = rerun.recorder.state.stages[0].outputs
        with Image.open(io.BytesIO((tmp_path / "outputs" / output.path).read_bytes())) as img:
            img.load()
            assert img.size == (64, 64)


# ------------------------------------------------------------------------------ size and time bounds
# A WebUI answer used to have no size or time bound: a 1 MB gzip body that inflates to 1 GiB took the
# work horse to 2.8 GiB, a body dripping one byte every 2 s held a stage far past a 3 s read timeout, and a
# cancel did nothing while it dripped. Now the decoded answer is bounded (by the images the request asks for,
# with a floor), a call has a deadline (connect + read timeout, for headers and body together), and a cancel
# cuts our own read at once.

DRIP_EVERY_S = 2.0
DRIP_BYTES = 15  # the drip ends after 30 s, so that even unbounded code finishes the test


def gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(inflated // len(zeros))]
    return b"".join([*parts, packer.flush()])


def drip(request: Request) -> None:
    """Headers at once, then the body one byte every DRIP_EVERY_S (never a 3 s silence)."""
    body = generation_answer([b64(WHOLE_PNG)])
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    request.wfile.write(head.encode())
    request.wfile.flush()
    for byte in body[:DRIP_BYTES]:
        if request.stopping.wait(DRIP_EVERY_S):
            return
        request.wfile.write(bytes([byte]))
        request.wfile.flush()


def test_a_gzip_bomb_is_refused_before_it_is_inflated(record_property: Any) -> None:
    # Given: a WebUI answering txt2img with 1 MiB of gzip that inflates to 1 GiB
    bomb = gzip_bomb(1024 * 1024 * 1024)

    def answer(request: Request) -> None:
        request.answer(200, bomb, {"Content-Encoding": "gzip"})

    with HostileServer(answer) as webui, WebUIClient(webui.url, read_timeout=30) as client:
        executor = WebUIExecutor(client)
        tracemalloc.start()  # the peak of what Python held while the answer was read

        # When: a 64x64 stage runs against it
        with pytest.raises(WebUIHTTPError) as excinfo:
            executor.run_stage(
                StageType.TXT2IMG, build_stage_payload(build_checked_plan(txt2img()).stages[0], None)
            )
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

    # Then: refused as too large, having held about the limit (64 MiB), never the gigabyte
    assert "answer is too large" in str(excinfo.value)
    assert not is_transient(excinfo.value)
    assert peak < 256, f"held {peak:.0f} MiB at its peak"
    record_property("gzip bomb (1 MiB -> 1 GiB): peak MiB held while reading", round(peak))


def test_a_dripping_answer_is_cut_at_the_calls_deadline(record_property: Any) -> None:
    # Given: a WebUI that sends its answer one byte every 2 s, under a 3 s read timeout
    with HostileServer(drip) as webui, WebUIClient(webui.url, connect_timeout=1, read_timeout=3) as client:
        started = time.monotonic()

        # When / Then: the call ends as a timeout at its deadline (1 + 3 s), not when the drip ends
        with pytest.raises(WebUITimeout) as excinfo:
            client.txt2img({"prompt": "a harbour"})
        elapsed = time.monotonic() - started

    assert "deadline" in str(excinfo.value)
    assert elapsed < 6, f"the call took {elapsed:.1f} s"
    record_property("dripping answer, 3 s read timeout: call ended after s", round(elapsed, 1))


def test_a_cancel_cuts_a_dripping_answer_within_seconds(record_property: Any) -> None:
    # Given: a WebUI that drips its txt2img answer and ignores the interrupt, a long read timeout
    def answer(request: Request) -> None:
        if request.path.startswith("/sdapi/v1/txt2img"):
            drip(request)
        elif request.path == "/internal/progress":  # our request is the one generating
            request.answer(200, b'{"active": true}')
        else:
            request.answer(200, b"{}")

    canceled_at: list[float] = []

    def should_cancel() -> bool:
        if time.monotonic() - started > 1.0:
            canceled_at.append(time.monotonic())
            return True
        return False

    with HostileServer(answer) as webui, WebUIClient(webui.url, read_timeout=120) as client:
        executor = WebUIExecutor(client, progress_interval=0.2, should_cancel=should_cancel)
        payload = build_stage_payload(build_checked_plan(txt2img()).stages[0], None)
        started = time.monotonic()

        # When: a cancel is asked 1 s into the stage
        with pytest.raises(Canceled):
            executor.run_stage(StageType.TXT2IMG, payload)
        ended = time.monotonic()

    # Then: the stage ended within seconds of the cancel, and the interrupt was still sent
    assert canceled_at
    after = ended - canceled_at[0]
    assert after < 3, f"the stage ended {after:.1f} s after the cancel"
    assert "/sdapi/v1/interrupt" in webui.paths()
    record_property("cancel during a dripping answer: stage ended after s", round(after, 2))
