"""Webhooks (stablenew.run.notify) against a real HTTP receiver: a stdlib server on a loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stablenew.run import _notify as notify_module
from stablenew.run import notify, signature, verify_signature
from webhook_receiver import NEVER, WebhookReceiver

SECRET = "s3cret-webhook-key"
FAST = {"timeout": 2.0, "backoff": (0.01, 0.02)}


def summary(status: str = "finished") -> dict[str, Any]:
    """The summary the worker passes: ``status --json`` without its queue fields."""
    return {
        "job_id": "job-42",
        "status": status,
        "error": None if status == "finished" else "stage 0 (txt2img): WebUIRejected: bad sampler",
        "manifest": "/outputs/job-42/manifest.json",
        "stages": [
            {
                "index": 0,
                "type": "txt2img",
                "status": "finished" if status == "finished" else status,
                "progress": 1.0,
                "started_at": "2026-01-01T00:00:00+00:00",
                "ended_at": "2026-01-01T00:00:09+00:00",
                "attempts": 1,
                "outputs": [
                    {"path": "000_txt2img_0.png", "sha256": "ab" * 32, "width": 64, "height": 64, "seed": 7}
                ],
                "error": None,
            }
        ],
    }


# ------------------------------------------------------------------------------------------ receiver
@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Records every POST and answers 200, or as a test scripts it (``answers``, then ``then``)."""
    with WebhookReceiver("/hooks/stablenew", then=200) as server:
        yield server


def expected_signature(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    """Computed here from the documented scheme, independently of the module."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------ delivery
def test_delivers_the_summary_as_json_signed_over_timestamp_and_exact_body(receiver: WebhookReceiver) -> None:
    delivered = notify(receiver.url, summary(), secret=SECRET, **FAST)

    assert delivered is True
    [got] = receiver.deliveries
    assert got.path == "/hooks/stablenew"
    assert json.loads(got.body) == summary()
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-stablenew-event"] == "job.finished"
    timestamp = got.headers["x-stablenew-timestamp"]
    assert abs(int(timestamp) - time.time()) < 3600
    assert got.headers["x-stablenew-signature"] == expected_signature(got.body, timestamp)
    assert verify_signature(got.body, got.headers["x-stablenew-signature"], SECRET, timestamp=timestamp)


@pytest.mark.parametrize(
    ("status", "event"),
    [("finished", "job.finished"), ("failed", "job.failed"), ("canceled", "job.canceled")],
)
def test_the_event_header_names_how_the_job_ended(receiver: WebhookReceiver, status: str, event: str) -> None:
    assert notify(receiver.url, summary(status), secret=None, **FAST)

    assert receiver.deliveries[0].headers["x-stablenew-event"] == event
    assert json.loads(receiver.deliveries[0].body)["status"] == status


@pytest.mark.parametrize("secret", [None, ""])
def test_no_signature_header_is_sent_without_a_secret(receiver: WebhookReceiver, secret: str | None) -> None:
    assert notify(receiver.url, summary(), secret=secret, **FAST)

    headers = receiver.deliveries[0].headers
    assert "x-stablenew-signature" not in headers
    assert headers["x-stablenew-event"] == "job.finished"
    assert headers["x-stablenew-timestamp"].isdigit()


def test_server_errors_are_retried_until_the_receiver_accepts(receiver: WebhookReceiver) -> None:
    receiver.answers = [500, 503]

    delivered = notify(receiver.url, summary(), secret=SECRET, attempts=3, **FAST)

    assert delivered is True
    assert len(receiver.deliveries) == 3
    assert len({r.headers["x-stablenew-delivery"] for r in receiver.deliveries}) == 1
    assert {r.body for r in receiver.deliveries} == {receiver.deliveries[0].body}
    for attempt in receiver.deliveries:  # every attempt is signed for its own timestamp
        ts = attempt.headers["x-stablenew-timestamp"]
        assert attempt.headers["x-stablenew-signature"] == expected_signature(attempt.body, ts)


def test_gives_up_after_the_given_number_of_attempts(receiver: WebhookReceiver) -> None:
    receiver.then = 500

    delivered = notify(receiver.url, summary(), secret=SECRET, attempts=4, **FAST)

    assert delivered is False
    assert len(receiver.deliveries) == 4


def test_waits_the_backoff_between_attempts_repeating_its_last_value(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.then = 502
    waits: list[float] = []
    monkeypatch.setattr(notify_module.time, "sleep", waits.append)

    notify(receiver.url, summary(), secret=None, timeout=2.0, attempts=4, backoff=(0.5, 2.0))

    assert waits == [0.5, 2.0, 2.0]  # none before the first attempt, none after the last


@pytest.mark.timeout(30)  # without the timeout, notify would wait on this receiver forever
def test_a_receiver_that_never_answers_costs_one_timeout_per_attempt(receiver: WebhookReceiver) -> None:
    receiver.then = NEVER

    delivered = notify(receiver.url, summary(), secret=None, timeout=0.3, attempts=2, backoff=(0.01,))

    assert delivered is False
    assert len(receiver.deliveries) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_a_client_error_is_not_retried(receiver: WebhookReceiver, status: int) -> None:
    receiver.then = status

    assert notify(receiver.url, summary(), secret=None, attempts=3, **FAST) is False
    assert len(receiver.deliveries) == 1


def test_too_many_requests_is_retried(receiver: WebhookReceiver) -> None:
    receiver.answers = [429]

    assert notify(receiver.url, summary(), secret=None, attempts=2, **FAST) is True
    assert len(receiver.deliveries) == 2


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_nor_retried(receiver: WebhookReceiver, status: int) -> None:
    receiver.then = status

    assert notify(receiver.url, summary(), secret=SECRET, attempts=3, **FAST) is False
    assert [r.path for r in receiver.deliveries] == ["/hooks/stablenew"]


# ------------------------------------------------------------------------------------------ never raises
def test_a_refused_connection_is_retried_then_reported_without_raising(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stablenew.notify")

    delivered = notify(f"http://127.0.0.1:{closed_port}/hook", summary(), secret=SECRET, attempts=3, **FAST)

    assert delivered is False
    failed_attempts = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert len(failed_attempts) == 3
    assert "ConnectionError" in failed_attempts[0].getMessage()


@pytest.mark.parametrize("url", ["ftp://example.invalid/hook", "not a url", "http://", ""])
def test_an_unusable_url_returns_false_at_once(url: str) -> None:
    assert notify(url, summary(), secret=SECRET, attempts=3, **FAST) is False


def test_a_summary_that_is_not_json_returns_false_without_sending(receiver: WebhookReceiver) -> None:
    bad = {**summary(), "error": object()}

    assert notify(receiver.url, bad, secret=SECRET, **FAST) is False
    assert receiver.deliveries == []


@pytest.mark.parametrize("status", ["started", "queued", None])
def test_a_job_that_has_not_ended_is_not_announced(receiver: WebhookReceiver, status: str | None) -> None:
    assert notify(receiver.url, {**summary(), "status": status}, secret=None, **FAST) is False
    assert receiver.deliveries == []


def test_logs_name_the_receiver_by_origin_only_never_its_token_or_the_secret(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stablenew.notify")
    receiver.then = 500

    notify(
        f"http://127.0.0.1:{receiver.port}/hooks/T0KEN-in-path?key=QUERYKEY",
        summary(),
        secret=SECRET,
        attempts=2,
        **FAST,
    )

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"http://127.0.0.1:{receiver.port}" in text
    assert "T0KEN" not in text and "QUERYKEY" not in text and SECRET not in text


# ------------------------------------------------------------------------------------------ receivers
BODY = b'{"job_id":"job-42","status":"finished"}'
NOW = 1_800_000_000.0
TS = str(int(NOW))


def test_verify_signature_accepts_what_notify_signs() -> None:
    assert signature(BODY, SECRET, TS) == expected_signature(BODY, TS)
    assert verify_signature(BODY, expected_signature(BODY, TS), SECRET, timestamp=TS, now=NOW) is True


@pytest.mark.parametrize(
    ("body", "header", "secret", "timestamp", "why"),
    [
        (BODY + b" ", expected_signature(BODY, TS), SECRET, TS, "body changed"),
        (BODY, expected_signature(BODY, TS), "other-secret", TS, "wrong secret"),
        (BODY, expected_signature(BODY, TS), SECRET, str(int(NOW) - 1), "timestamp changed"),
        (BODY, expected_signature(BODY, TS).removeprefix("sha256="), SECRET, TS, "no scheme prefix"),
        (BODY, expected_signature(BODY, TS).upper(), SECRET, TS, "not the exact header"),
        (BODY, None, SECRET, TS, "no signature header"),
        (BODY, expected_signature(BODY, TS), SECRET, None, "no timestamp header"),
        (BODY, expected_signature(BODY, TS), SECRET, "18e8", "malformed timestamp"),
        (BODY, expected_signature(BODY, TS), "", TS, "receiver has no secret"),
    ],
)
def test_verify_signature_rejects_anything_that_differs(
    body: bytes, header: str | None, secret: str, timestamp: str | None, why: str
) -> None:
    assert verify_signature(body, header, secret, timestamp=timestamp, now=NOW) is False, why


@pytest.mark.parametrize("skew", [-301.0, 301.0, 86_400.0])
def test_verify_signature_rejects_a_replay_outside_the_tolerance(skew: float) -> None:
    header = expected_signature(BODY, TS)

    assert verify_signature(BODY, header, SECRET, timestamp=TS, now=NOW + skew) is False
    assert verify_signature(BODY, header, SECRET, timestamp=TS, now=NOW + skew, tolerance=1e6) is True
