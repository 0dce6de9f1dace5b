"""What the event stream sends between two views of a job: only what changed."""

from __future__ import annotations

import copy

from stablenew.api._events import changes, format_event

VIEW = {
    "job_id": "j1",
    "status": "started",
    "stages": [
        {"index": 0, "type": "txt2img", "status": "running", "progress": 0.2, "outputs": []},
        {"index": 1, "type": "upscale", "status": "pending", "progress": 0.0, "outputs": []},
    ],
    "error": None,
    "manifest": None,
    "queue": "default",
    "position": None,
    "enqueued_at": "2026-12-07T00:00:00+00:00",
}


def test_the_first_view_is_sent_whole_and_an_unchanged_one_sends_nothing() -> None:
    assert changes(None, VIEW) == [("state", VIEW)]
    assert changes(VIEW, copy.deepcopy(VIEW)) == []


def test_a_stage_that_moved_is_sent_alone_with_its_whole_view() -> None:
    later = copy.deepcopy(VIEW)
    later["stages"][0]["progress"] = 0.6
    assert changes(VIEW, later) == [("stage", {"job_id": "j1", **later["stages"][0]})]


def test_a_job_status_change_comes_before_the_stage_changes() -> None:
    later = copy.deepcopy(VIEW)
    later["status"] = "failed"
    later["error"] = "WebUI rejected the plan"
    later["stages"][0]["status"] = "failed"
    events = changes(VIEW, later)
    assert [e for e, _ in events] == ["job", "stage"]
    assert events[0][1]["status"] == "failed" and events[0][1]["error"] == "WebUI rejected the plan"


def test_an_event_is_one_sse_block_of_compact_json() -> None:
    assert format_event(7, "end", {"a": [1, 2]}) == 'id: 7\nevent: end\ndata: {"a":[1,2]}\n\n'
