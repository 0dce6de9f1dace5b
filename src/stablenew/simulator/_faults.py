"""The faults a simulator injects: one-off :class:`Fault` s, a random fault rate, and a whole-server outage.

:class:`FaultSchedule` decides, per request, which fault (if any) it meets and acts it out: an error answer in
A1111's shape, a dropped connection, a hang, or a fault the route applies to its answer.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Literal, get_args

from ._api import GENERATION_ROUTES, Dropped, a1111_error, validation_error

FaultKind = Literal["status", "hang", "malformed_json", "bad_base64", "close", "no_images"]


@dataclass
class Fault:
    """One injected fault, consumed in order by the next ``count`` matching requests.

    ``route`` None matches any POST generation route; a path matches that route for any method.
    ``status`` is the HTTP status for kind "status"; ``seconds`` how long a "hang" waits (``stop()`` cuts it).
    "no_images" answers 200 with an empty ``images`` list, as A1111 does for ``send_images: false``.
    A "status" answer (not 422) is in A1111's error shape: ``error`` is the exception's class name and
    ``message`` its text (``errors``), e.g. ``Fault("status", error="Exception", message="Could not find
    checkpoint with name x")`` for an error no retry can fix.
    """

    kind: FaultKind
    route: str | None = None
    status: int = 500
    count: int = 1
    seconds: float = 30.0
    error: str = "RuntimeError"
    message: str | None = None


class FaultSchedule:
    """The faults still to come; thread-safe. ``seed`` fixes the sequence of random faults."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._rate = 0.0
        self._random = random.Random(seed)  # noqa: S311 (fault injection, not security)
        self._outage: Fault | None = None

    def inject(self, fault: Fault) -> None:
        """Queue a fault (a copy is kept) for the next matching request(s)."""
        if fault.kind not in get_args(FaultKind) or fault.count < 1:
            raise ValueError(
                f"invalid fault {fault!r}: kind must be one of {get_args(FaultKind)}, count >= 1"
            )
        with self._lock:
            self._faults.append(replace(fault))

    def set_rate(self, rate: float) -> None:
        """Fail this fraction of generation requests at random (half "status" 500, half "close")."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {rate!r}")
        with self._lock:
            self._rate = rate

    def set_outage(self, fault: Fault | None) -> None:
        """Fail every request with ``fault`` (kind status, close or hang) until ``set_outage(None)``."""
        if fault is not None and fault.kind not in ("status", "close", "hang"):
            raise ValueError(
                f"an outage fails requests: kind must be status, close or hang, got {fault.kind!r}"
            )
        with self._lock:
            self._outage = None if fault is None else replace(fault)

    def take(self, method: str, path: str, stopping: threading.Event) -> Fault | None:
        """Consume the fault this request meets and act out the ones that replace the answer.

        Returns None or a fault the route applies to its answer ("malformed_json", "bad_base64",
        "no_images", or a "hang" that ran its ``seconds``).

        Raises:
            HTTPError: kind "status" (422 in FastAPI's validation shape, else A1111's error shape).
            Dropped: kind "close", or a "hang" cut short by ``stopping``.
        """
        generation = method == "POST" and path in GENERATION_ROUTES
        with self._lock:
            fault = self._outage or next(
                (f for f in self._faults if f.route == path or (f.route is None and generation)), None
            )
            if fault is not None and fault is not self._outage:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            elif fault is None and generation and self._random.random() < self._rate:
                fault = Fault("status") if self._random.random() < 0.5 else Fault("close")
            if fault is None:
                return None
        if fault.kind == "status":
            if fault.status == 422:
                raise validation_error(["body"], "simulated validation failure", "value_error")
            message = fault.message or f"simulated failure (HTTP {fault.status})"
            raise a1111_error(fault.status, fault.error, message)
        if fault.kind == "close" or (fault.kind == "hang" and stopping.wait(fault.seconds)):
            raise Dropped
        return fault
