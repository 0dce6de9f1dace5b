"""A small HTTP server on 127.0.0.1 whose answers a test writes: the hostile or unlucky WebUI, and
the webhook receiver of tests/webhook_receiver.py.

``HostileServer(handler)`` runs a ThreadingHTTPServer in a daemon thread; ``handler(request)`` gets
each request (method, path, headers, body) and writes the answer itself on ``request.wfile``, byte by
byte if it likes. Every request is recorded as it arrives, under a lock (``requests`` is a snapshot),
with when it arrived and when its answer ended. ``stop()`` sets ``stopping`` (handlers that drip or
wait check it) and closes the server; use it as a context manager.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Self

from PIL import Image


class Headers(dict[str, str]):
    """A request's headers, names as sent; looked up in any case, as HTTP names are."""

    def _key(self, name: object) -> Any:
        if isinstance(name, str):
            for key in self:
                if key.lower() == name.lower():
                    return key
        return name

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(self._key(name))

    def __contains__(self, name: object) -> bool:
        return super().__contains__(self._key(name))

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(self._key(name), default)


@dataclass
class Request:
    method: str
    path: str
    headers: Headers
    body: bytes
    wfile: BinaryIO
    stopping: threading.Event
    arrived: float  # time.monotonic() when its request line and headers were read
    ended: float | None = None  # when its handler was done: the answer written, or the peer gone

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        head = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.wfile.flush()


Handler = Callable[[Request], None]


class _QuickHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which can stall on reverse DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class HostileServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stopping = threading.Event()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = Headers(self.headers.items())
                request = Request(self.command, self.path, headers, body, self.wfile, owner.stopping, arrived)
                with owner._lock:
                    owner._requests.append(request)
                try:
                    with contextlib.suppress(OSError):  # the peer went away mid-answer
                        owner.handler(request)
                finally:
                    request.ended = time.monotonic()
                self.close_connection = True

            do_GET = do_POST = _any

        self._server = _QuickHTTPServer(("127.0.0.1", 0), _Handler)
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in the order they arrived (a copy: the server may be appending)."""
        with self._lock:
            return list(self._requests)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def png_bytes(width: int = 64, height: int = 64) -> bytes:
    """A complete PNG with some detail (so that half of it is a real truncation, not padding)."""
    image = Image.effect_noise((width, height), 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def cut_in_half(data: bytes) -> bytes:
    """The first half of ``data``, cut to a multiple of 3 bytes so its base64 is padded like a whole file."""
    return data[: len(data) // 2 // 3 * 3]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def generation_answer(images: list[str]) -> bytes:
    """A txt2img/img2img answer as A1111 shapes it."""
    info = json.dumps({"seed": 1, "all_seeds": [1] * len(images)})
    return json.dumps({"images": images, "parameters": {}, "info": info}).encode()
