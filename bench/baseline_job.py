"""Baseline (a) of the worker benchmark: the least an RQ job can do for one four-stage plan.

``run`` makes the same four HTTP calls our worker makes (bodies captured from it, images filled
in), with plain ``requests``, and writes each returned image's bytes to disk. It is run by the
plain RQ ``Worker`` (``rq worker -S json -c bench.baseline_job``), so it needs no allow-list. The
``-c`` (RQ's settings module, which defines nothing here) makes the worker import this module, and
so ``requests``, before it forks: its work horses start warm, as ``stablenew worker``'s do (it
imports its job module up front). Without it every job would pay that import. ``noop`` is the job
function of the raw-enqueue baseline of the submit benchmark. The floor (b) calls
:func:`four_calls` in a loop in one process.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import requests

_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image", "/sdapi/v1/img2img")


def four_calls(session: requests.Session, url: str, bodies: list[dict[str, Any]], out_dir: str) -> int:
    """txt2img -> img2img -> upscale -> ADetailer, each image written as received; returns bytes written."""
    os.makedirs(out_dir, exist_ok=True)
    image: str | None = None
    written = 0
    for index, (route, template) in enumerate(zip(_ROUTES, bodies, strict=True)):
        body = dict(template)
        if "init_images" in body:
            body["init_images"] = [image]
        if "image" in body:
            body["image"] = image
        response = session.post(url + route, json=body, timeout=600)
        response.raise_for_status()
        answer = response.json()
        image = answer["image"] if "image" in answer else answer["images"][0]
        data = base64.b64decode(image)
        with open(os.path.join(out_dir, f"{index:02d}.png"), "wb") as handle:
            handle.write(data)
        written += len(data)
    return written


def run(url: str, bodies: list[dict[str, Any]], out_dir: str) -> int:
    """The RQ job: one plan's four calls on a fresh session (as each of our jobs opens its own)."""
    with requests.Session() as session:
        return four_calls(session, url, bodies, out_dir)


def noop(plan_json: str) -> None:
    """A job function that does nothing with its (plan-sized) JSON argument."""
    return None
