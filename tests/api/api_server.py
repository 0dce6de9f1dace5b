"""The API server the tests start (see ``tests/api/conftest.py``)."""

from __future__ import annotations

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
