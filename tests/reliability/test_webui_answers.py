"""What a WebUI sends back is checked before a stage counts as done, against small hostile HTTP servers.

An image that does not decode to its end (a PNG cut short on the way) used to be recorded as the stage's
output, and a retry reused it because its sha256 matched the file written. Now it is a failed call, transient
(the WebUI may send it whole next time), and nothing is recorded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hostile_http import HostileServer, Request, b64, cut_in_half, generation_answer, png_bytes
from PIL import Image

from stablenew.errors import WebUIHTTPError, is_transient
from stablenew.jobs.producer import build_checked_plan
from stablenew.run import PlanRun
from stablenew.settings import Settings

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
