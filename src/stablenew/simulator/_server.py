"""The simulator's HTTP plumbing: a threading server that can drop its open connections, and the handler
that hands each request to the server's ``answer`` function and writes back its answer.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._api import Dropped, Response, a1111_error

# (method, target, headers, raw body) -> the answer to write; raises Dropped to close without one.
Answer = Callable[[str, str, dict[str, str], bytes], Response]


class Server(ThreadingHTTPServer):
    """Serves ``answer`` and tracks open connections, so that ``SimulatedWebUI.stop()`` can cut them."""

    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not block stop()

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        super().__init__(address, Handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which can stall on reverse DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away is not an error
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler: reads the body, asks the simulator, writes its answer (or drops)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: don't wait for delayed ACKs
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            response = self.server.answer(method, self.path, dict(self.headers.items()), raw)
        except Dropped:
            self.close_connection = True
            return
        except Exception as exc:  # a simulator bug still answers in A1111's error shape
            response = a1111_error(500, type(exc).__name__, str(exc)).response
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: no per-request line on stderr."""
