"""Webhooks (stablenew.run.notify) against a real HTTP receiver: a stdlib server on a loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stablenew.run import _notify as notify_module
from stablenew.run import notify, signature, verify_signature

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
@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    """Records every POST and answers from a script: an HTTP status, or "hang" (never answers).

    ``answers`` are used in order; once they run out, every request gets ``then``.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int | str] = []
        self.then: int | str = 200
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.receiver = self  # type: ignore[attr-defined]
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02})

    def url(self, path: str = "/hooks/stablenew") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def record(self, item: Received) -> int | str:
        with self._lock:
            self.received.append(item)
            return self.answers.pop(0) if self.answers else self.then


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = receiver.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if answer == "hang":
            receiver.release.wait()
            return
        assert isinstance(answer, int)
        self.send_response(answer)
        if 300 <= answer < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def expected_signature(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    """Computed here from the documented scheme, independently of the module."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------ delivery
def test_delivers_the_summary_as_json_signed_over_timestamp_and_exact_body(receiver: Receiver) -> None:
    delivered = notify(receiver.url(), summary(), secret=SECRET, **FAST)

    assert delivered is True
    [got] = receiver.received
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
def test_the_event_header_names_how_the_job_ended(receiver: Receiver, status: str, event: str) -> None:
    assert notify(receiver.url(), summary(status), secret=None, **FAST)

    assert receiver.received[0].headers["x-stablenew-event"] == event
    assert json.loads(receiver.received[0].body)["status"] == status


@pytest.mark.parametrize("secret", [None, ""])
def test_no_signature_header_is_sent_without_a_secret(receiver: Receiver, secret: str | None) -> None:
    assert notify(receiver.url(), summary(), secret=secret, **FAST)

    headers = receiver.received[0].headers
    assert "x-stablenew-signature" not in headers
    assert headers["x-stablenew-event"] == "job.finished"
    assert headers["x-stablenew-timestamp"].isdigit()


def test_server_errors_are_retried_until_the_receiver_accepts(receiver: Receiver) -> None:
    receiver.answers = [500, 503]

    delivered = notify(receiver.url(), summary(), secret=SECRET, attempts=3, **FAST)

    assert delivered is True
    assert len(receiver.received) == 3
    assert len({r.headers["x-stablenew-delivery"] for r in receiver.received}) == 1
    assert {r.body for r in receiver.received} == {receiver.received[0].body}
    for attempt in receiver.received:  # every attempt is signed for its own timestamp
        ts = attempt.headers["x-stablenew-timestamp"]
        assert attempt.headers["x-stablenew-signature"] == expected_signature(attempt.body, ts)


def test_gives_up_after_the_given_number_of_attempts(receiver: Receiver) -> None:
    receiver.then = 500

    delivered = notify(receiver.url(), summary(), secret=SECRET, attempts=4, **FAST)

    assert delivered is False
    assert len(receiver.received) == 4


def test_waits_the_backoff_between_attempts_repeating_its_last_value(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.then = 502
    waits: list[float] = []
    monkeypatch.setattr(notify_module.time, "sleep", waits.append)

    notify(receiver.url(), summary(), secret=None, timeout=2.0, attempts=4, backoff=(0.5, 2.0))

    assert waits == [0.5, 2.0, 2.0]  # none before the first attempt, none after the last


@pytest.mark.timeout(30)  # without the timeout, notify would wait on this receiver forever
def test_a_receiver_that_never_answers_costs_one_timeout_per_attempt(receiver: Receiver) -> None:
    receiver.then = "hang"

    delivered = notify(receiver.url(), summary(), secret=None, timeout=0.3, attempts=2, backoff=(0.01,))

    assert delivered is False
    assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_a_client_error_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.then = status

    assert notify(receiver.url(), summary(), secret=None, attempts=3, **FAST) is False
    assert len(receiver.received) == 1


def test_too_many_requests_is_retried(receiver: Receiver) -> None:
    receiver.answers = [429]

    assert notify(receiver.url(), summary(), secret=None, attempts=2, **FAST) is True
    assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_nor_retried(receiver: Receiver, status: int) -> None:
    receiver.then = status

    assert notify(receiver.url(), summary(), secret=SECRET, attempts=3, **FAST) is False
    assert [r.path for r in receiver.received] == ["/hooks/stablenew"]


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


def test_a_summary_that_is_not_json_returns_false_without_sending(receiver: Receiver) -> None:
    bad = {**summary(), "error": object()}

    assert notify(receiver.url(), bad, secret=SECRET, **FAST) is False
    assert receiver.received == []


@pytest.mark.parametrize("status", ["started", "queued", None])
def test_a_job_that_has_not_ended_is_not_announced(receiver: Receiver, status: str | None) -> None:
    assert notify(receiver.url(), {**summary(), "status": status}, secret=None, **FAST) is False
    assert receiver.received == []


def test_logs_name_the_receiver_by_origin_only_never_its_token_or_the_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stablenew.notify")
    receiver.then = 500

    notify(receiver.url("/hooks/T0KEN-in-path?key=QUERYKEY"), summary(), secret=SECRET, attempts=2, **FAST)

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
