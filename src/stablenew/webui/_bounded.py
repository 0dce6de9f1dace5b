"""Bounds on reading one WebUI answer: its decoded size, and the total time of the call.

A per-read timeout does not bound a call: a body that drips one byte every 2 s never trips a 3 s read
timeout, and a 1 MB gzip body can inflate to 1 GiB in memory. So each call has

- a **deadline** (:class:`CallGuard`): a timer thread shuts the call's socket down when it passes, which
  ends whatever read is blocked on it, waiting for the headers or in the middle of the body; :meth:`abort`
  does the same at once, from another thread (the progress poller, on a cancel), for every call in flight;
- a **size limit** (:func:`read_bounded`): the body is read raw and inflated here, by us, never more than the
  limit plus one byte at a time (``zlib``'s ``max_length``), so a bomb is refused before it is in memory.

The socket is found through our own urllib3 connection classes (:func:`guard_adapter`): each connection
tells the call running in its thread that it is the one to cut.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse

from ._images import ImageBytes, image_size

_CHUNK = 256 * 1024
_current = threading.local()


class CallGuard:
    """One call in flight: why it was cut (``None`` while it was not), and the connection to cut."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.reason is not None:
                _shut(conn)

    def cut(self, reason: str) -> None:
        """Stop the call: its blocked read (or the next one) fails at once."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            if self._conn is not None:
                _shut(self._conn)


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to cut
            sock.shutdown(socket.SHUT_RDWR)


class CallRegistry:
    """The calls in flight on one client, so that :meth:`abort` reaches each of them."""

    def __init__(self) -> None:
        self._calls: set[CallGuard] = set()
        self._lock = threading.Lock()

    @contextmanager
    def guarded(self, seconds: float) -> Iterator[CallGuard]:
        """A guard for the call made in this block, cut when ``seconds`` have passed."""
        guard = CallGuard()
        timer = threading.Timer(seconds, guard.cut, ("deadline",))
        timer.daemon = True
        with self._lock:
            self._calls.add(guard)
        previous = getattr(_current, "guard", None)
        _current.guard = guard
        timer.start()
        try:
            yield guard
        finally:
            timer.cancel()
            _current.guard = previous
            with self._lock:
                self._calls.discard(guard)

    def abort(self, reason: str = "aborted") -> None:
        with self._lock:
            calls = list(self._calls)
        for guard in calls:
            guard.cut(reason)


class _GuardedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)
        _attach(self)  # connected by now: a cut that came while connecting reaches the socket

    def getresponse(self) -> Any:
        _attach(self)
        return super().getresponse()


class _GuardedHTTPSConnection(HTTPSConnection, _GuardedHTTPConnection):
    pass


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def _attach(conn: HTTPConnection) -> None:
    guard = getattr(_current, "guard", None)
    if guard is not None:
        guard.attach(conn)


def guard_adapter(adapter: HTTPAdapter) -> HTTPAdapter:
    """``adapter`` with connections a :class:`CallGuard` can cut (its pool manager's own copy of the
    pool classes: urllib3's module-wide table is left alone)."""
    adapter.poolmanager.pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedHTTPSPool}
    return adapter


class AnswerTooLarge(Exception):
    """The decoded body is over the limit of the call."""


class UnknownEncoding(Exception):
    """A ``Content-Encoding`` we did not ask for."""


def read_bounded(raw: BaseHTTPResponse, limit: int) -> bytes:
    """The body of ``raw``, inflated (gzip, deflate or none) by us, refused once it passes ``limit`` bytes.

    Raises:
        AnswerTooLarge: more than ``limit`` bytes, raw or decoded.
        UnknownEncoding: a content encoding other than gzip, deflate or identity.
        zlib.error: a compressed body that does not inflate.
        Whatever reading the socket raises (urllib3 errors, OSError).
    """
    encoding = (raw.headers.get("Content-Encoding") or "identity").strip().lower()
    inflater: Any = None
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    elif encoding not in ("identity", ""):
        raise UnknownEncoding(encoding)
    body = bytearray()
    received = 0
    while True:
        chunk = raw.read(_CHUNK, decode_content=False)
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise AnswerTooLarge(f"more than {limit} bytes")
        if inflater is None:
            body += chunk
            continue
        while chunk:
            body += inflater.decompress(chunk, limit - len(body) + 1)
            if len(body) > limit:
                raise AnswerTooLarge(f"more than {limit} bytes once decompressed")
            chunk = inflater.unconsumed_tail
    if inflater is not None:
        body += inflater.flush()
        if len(body) > limit:
            raise AnswerTooLarge(f"more than {limit} bytes once decompressed")
    return bytes(body)


ANSWER_FLOOR_BYTES = 64 * 1024 * 1024
_INFO_BYTES = 1024 * 1024  # info, parameters and infotexts beside the images


def answer_limit(body: Mapping[str, Any], image: str | ImageBytes | None) -> int:
    """The most a generation answer to ``body`` may decode to: the largest image the request can make
    (its size, a hires or upscale factor, or the input ``image``'s size) x 4 bytes a pixel x the images
    it asks for x 4/3 for base64, plus room for ``info``; never under :data:`ANSWER_FLOOR_BYTES`."""
    try:
        in_width, in_height = image_size(image) if image else (0, 0)
    except ValueError:
        in_width, in_height = 0, 0
    width = _int(body.get("width")) or in_width
    height = _int(body.get("height")) or in_height
    factor = 1.0
    if body.get("enable_hr"):
        resize_x, resize_y = _int(body.get("hr_resize_x")), _int(body.get("hr_resize_y"))
        if resize_x or resize_y:
            factor = max(resize_x / max(width, 1), resize_y / max(height, 1))
        else:
            factor = _float(body.get("hr_scale"))
    if "upscaling_resize" in body or "upscaling_resize_w" in body:
        if body.get("resize_mode") == 1:
            width, height = _int(body.get("upscaling_resize_w")), _int(body.get("upscaling_resize_h"))
        else:
            factor = _float(body.get("upscaling_resize"))
    pixels = max(width * height * factor * factor, in_width * in_height)
    images = max(1, _int(body.get("batch_size"))) * max(1, _int(body.get("n_iter")))
    return max(ANSWER_FLOOR_BYTES, math.ceil(pixels * 4 * images * 4 / 3) + _INFO_BYTES)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 1.0
    )
