"""``GET /v1/jobs/{id}/events``: a job's progress as Server-Sent Events.

The stream polls the job's status (the same ``Producer.status`` the CLI's ``watch`` polls) every
``interval`` seconds and sends only what changed:

- ``state``: the whole status view, first thing on every connection (a reconnecting client is
  up to date at once);
- ``job``: the job's status, error, queue or position changed;
- ``stage``: one stage changed (status, progress, outputs, error), with the stage's whole view;
- ``end``: the job ended; carries the whole status view, then the stream closes;
- ``gone``: the job expired or was deleted while watched; the stream closes.

Event ids increase through the stream and continue from a reconnecting client's ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from stablenew import Producer
from stablenew.errors import JobNotFound

KEEPALIVE_S = 15.0
_JOB_FIELDS = ("status", "error", "queue", "position", "manifest")


def changes(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events that take a client from ``previous`` (None: nothing seen yet) to ``current``."""
    if previous is None:
        return [("state", current)]
    events: list[tuple[str, dict[str, Any]]] = []
    job_id = current["job_id"]
    if any(previous.get(k) != current.get(k) for k in _JOB_FIELDS):
        events.append(("job", {"job_id": job_id} | {k: current.get(k) for k in _JOB_FIELDS}))
    before = {s["index"]: s for s in previous.get("stages", [])}
    for stage in current.get("stages", []):
        if before.get(stage["index"]) != stage:
            events.append(("stage", {"job_id": job_id, **stage}))
    return events


def format_event(event_id: int, event: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isdigit() and len(raw) < 18 else 0


async def job_events(
    request: Request, producer: Producer, job_id: str, *, interval: float = 0.25
) -> AsyncIterator[str]:
    """The event stream of one job (see the module docstring)."""
    next_id = last_event_id(request) + 1
    previous: dict[str, Any] | None = None
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        try:
            view = await run_in_threadpool(producer.status, job_id)
        except JobNotFound as exc:
            yield format_event(next_id, "gone", {"job_id": job_id, "detail": str(exc)})
            return
        current = view.to_dict()
        for event, data in changes(previous, current):
            yield format_event(next_id, event, data)
            next_id += 1
            last_sent = time.monotonic()
        if view.done:
            yield format_event(next_id, "end", current)
            return
        previous = current
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(interval)
