"""A webhook receiver for the tests: an HTTP server on 127.0.0.1 that records every delivery and
answers as it is told (a status, after a delay, dripped one byte at a time, or never).

``WebhookReceiver()`` answers 204 to everything. ``answers`` are used in order, one a delivery; once
they run out, every delivery gets ``then``. An answer is a status code or an :class:`Answer`; a 3xx
names ``/elsewhere`` as its Location. ``on_delivery(delivery)`` runs before each answer, in the
delivery's thread (a receiver asking something of the job the webhook names, say).

Deliveries are recorded as they arrive, before their answer (``deliveries`` is a snapshot taken under
a lock), with their headers (looked up in any case), body, and when they arrived and ended. Use it as
a context manager, or the ``webhook_receiver`` fixture of tests/conftest.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Self

from hostile_http import HostileServer, Request

Delivery = Request  # the POST that carried one webhook
EVENT_HEADER = "X-StableNew-Event"


@dataclass(frozen=True)
class Answer:
    status: int = 204
    delay: float = 0.0  # seconds before the answer; math.inf: no answer until the receiver stops
    drip: float = 0.0  # seconds before each byte of the answer's head: slow, yet under any read timeout


NEVER = Answer(delay=math.inf)


class WebhookReceiver:
    def __init__(
        self,
        path: str = "/hook",
        *,
        answers: Iterable[Answer | int] = (),
        then: Answer | int = 204,
        on_delivery: Callable[[Delivery], object] | None = None,
    ) -> None:
        self.path = path
        self.answers: list[Answer | int] = list(answers)
        self.then = then
        self.on_delivery = on_delivery
        self._lock = threading.Lock()
        self._server = HostileServer(self._answer)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Where a callback_url sends its webhooks: this receiver and its ``path``."""
        return f"{self._server.url}{self.path}"

    @property
    def deliveries(self) -> list[Delivery]:
        """Every delivery so far, in the order they arrived."""
        return self._server.requests

    def events(self) -> list[str]:
        """The event each delivery announced (``job.finished``, ...), in the order they arrived."""
        return [delivery.headers[EVENT_HEADER] for delivery in self.deliveries]

    def _next_answer(self) -> Answer:
        with self._lock:
            answer = self.answers.pop(0) if self.answers else self.then
        return answer if isinstance(answer, Answer) else Answer(answer)

    def _answer(self, delivery: Delivery) -> None:
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        answer = self._next_answer()
        if answer.delay and delivery.stopping.wait(None if math.isinf(answer.delay) else answer.delay):
            return
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "X"
        head = [f"HTTP/1.1 {answer.status} {reason}", "Content-Length: 0", "Connection: close"]
        if 300 <= answer.status < 400:
            head.append("Location: /elsewhere")
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        chunks = [bytes([byte]) for byte in data] if answer.drip else [data]
        for chunk in chunks:
            if answer.drip and delivery.stopping.wait(answer.drip):
                return
            delivery.wfile.write(chunk)
            delivery.wfile.flush()

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop listening; an answer still delayed or dripping is dropped."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
