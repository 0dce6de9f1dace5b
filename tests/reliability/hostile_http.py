"""A small HTTP server on 127.0.0.1 whose answers a test writes: the hostile or unlucky WebUI.

``HostileServer(handler)`` runs a ThreadingHTTPServer in a daemon thread; ``handler(request)`` gets
each request (method, path, headers, body) and writes the answer itself on ``request.wfile``, byte by
byte if it likes. Every request is recorded. ``stop()`` sets ``stopping`` (handlers that drip or wait
check it) and closes the server; use it as a context manager.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Self

from PIL import Image


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wfile: BinaryIO
    stopping: threading.Event

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        head = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.wfile.flush()


Handler = Callable[[Request], None]


class HostileServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, dict(self.headers), body, self.wfile, owner.stopping
                )
                owner.requests.append(request)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner.handler(request)
                self.close_connection = True

            do_GET = do_POST = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

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
