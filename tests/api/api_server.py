"""The API server the tests start (see ``tests/api/conftest.py``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import httpx

TOKEN = "test-token-0123456789"


@dataclass
class ApiServer:
    url: str
    client: httpx.Client  # sends the token
    anonymous: httpx.Client
    output_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
