"""Webhooks against real worker processes: sent after the job's end is recorded, never holding the
worker, and cut off at their deadline however slowly a receiver answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stablenew.jobs.producer import Producer
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0
WEBHOOK_DEADLINE_S = 4.0


def _config(prompt: str, callback_url: str | None = None) -> dict[str, Any]:
    section = {"prompt": prompt, "width": 64, "height": 64, "steps": 2}
    config: dict[str, Any] = {"txt2img_enabled": True, "txt2img_config": section}
    return {**config, "callback_url": callback_url} if callback_url else config


def _wait(what: str, check: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.02)
    return value


class StatusCheckingReceiver:
    """Answers 204 after asking ``status`` of the job the webhook names, as a receiver's handler would."""

    def __init__(self, producer: Producer) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (job id, event, status at delivery)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = producer.status(body["job_id"]).status
                receiver.seen.append((body["job_id"], self.headers["X-StableNew-Event"], status))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TricklingReceiver:
    """Reads the request, then sends its answer's header one byte every ``gap`` seconds (each gap
    under the sender's read timeout); records when each connection came and went."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.connections: list[tuple[float, float]] = []  # (accepted, closed by the peer or done)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                for byte in self.ANSWER:
                    if self.stopping.wait(self.gap):
                        break
                    conn.sendall(bytes([byte]))
            except OSError:
                pass
        self.connections.append((accepted, time.monotonic()))

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def checking_receiver(producer: Producer) -> Iterator[StatusCheckingReceiver]:
    r = StatusCheckingReceiver(producer)
    yield r
    r.close()


def test_a_receiver_asking_status_in_its_handler_sees_the_end_already_recorded(
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
    checking_receiver: StatusCheckingReceiver,
) -> None:
    worker_process("default", webui_url=simulator.url)
    ids = [producer.submit(_config(f"job {i}", checking_receiver.url)).job_id for i in range(5)]

    _wait("five webhooks", lambda: len(checking_receiver.seen) >= 5)
    time.sleep(0.3)  # a second delivery of any job would show here

    assert sorted(checking_receiver.seen) == sorted((i, "job.finished", "finished") for i in ids)


def test_a_trickling_webhook_receiver_neither_holds_the_worker_nor_outlives_its_deadline(
    request: pytest.FixtureRequest,
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
) -> None:
    receiver = TricklingReceiver(gap=0.5)  # 38 bytes: 19 s for the whole answer, each gap under 5 s
    try:
        worker_process(
            "default", webui_url=simulator.url, env={"STABLENEW_WEBHOOK_DEADLINE": str(WEBHOOK_DEADLINE_S)}
        )
        first = producer.submit(_config("with a slow receiver", receiver.url)).job_id
        _wait("the first job ends", lambda: producer.status(first).done)
        second = producer.submit(_config("the next job")).job_id
        submitted = time.monotonic()
        _wait("the next job ends", lambda: producer.status(second).done)
        next_job_s = time.monotonic() - submitted
        _wait("the slow delivery is cut off", lambda: receiver.connections, timeout=15)
    finally:
        receiver.close()

    assert producer.status(first).status == "finished"
    assert producer.status(second).status == "finished"
    assert next_job_s < WEBHOOK_DEADLINE_S - 1, next_job_s  # not behind the webhook
    (accepted, closed), *more = receiver.connections
    assert more == []  # cut off at the deadline: no further attempt
    assert WEBHOOK_DEADLINE_S <= closed - accepted < WEBHOOK_DEADLINE_S + 2, closed - accepted
    request.node.user_properties.append(("next_job_done_behind_slow_webhook_s", round(next_job_s, 2)))
    request.node.user_properties.append(("slow_webhook_cut_off_after_s", round(closed - accepted, 2)))
