"""Configs and waits shared by the API tests (the HTTP twin of tests/job_checks.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"


def small_config(prompt: str = "a lighthouse on a cliff at dusk", *, steps: int = 6) -> dict[str, Any]:
    """The txt2img example, small and quick."""
    config: dict[str, Any] = json.loads((EXAMPLES / "txt2img_only.json").read_text())
    config["txt2img_config"].update(prompt=prompt, width=256, height=256, steps=steps)
    return config


def two_stage_config(prompt: str = "a lighthouse", *, steps: int = 6) -> dict[str, Any]:
    """txt2img then upscale: two stages, two pictures."""
    config = small_config(prompt, steps=steps)
    config["upscale_enabled"] = True
    config["upscale_config"] = {"upscaler": "R-ESRGAN 4x+", "upscaling_resize": 2}
    return config


def wait_http(
    client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        if until(view):
            return view
        assert time.monotonic() < deadline, f"job {job_id}: not reached in {timeout} s; last {view}"
        time.sleep(0.05)


def is_done(view: dict[str, Any]) -> bool:
    return view["status"] in ("finished", "failed", "canceled", "stopped")
