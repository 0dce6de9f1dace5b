"""Callback URLs may not point a GPU host into its own network: loopback, link-local (cloud
metadata) and private addresses are refused at submit and again at delivery, on the address the
host resolves to then, unless STABLENEW_WEBHOOK_ALLOWED_HOSTS lists the host."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from plan_configs import TinyConfigs
from stablenew.errors import ConfigError
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration


def _config(callback_url: str) -> dict[str, Any]:
    return {**TinyConfigs.txt2img("where to"), "callback_url": callback_url}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://0.0.0.0:9/hook",
    ],
)
def test_a_callback_to_an_internal_address_is_refused_at_submit(
    connection: redis.Redis, tmp_path: Path, url: str
) -> None:
    producer = Producer(connection, Settings(output_dir=tmp_path / "outputs"))

    with pytest.raises(ConfigError) as refused:
        producer.submit(_config(url))

    assert "callback_url" in str(refused.value) and "private address" in str(refused.value)


def test_a_listed_internal_host_is_allowed(connection: redis.Redis, tmp_path: Path) -> None:
    producer = Producer(
        connection, Settings(output_dir=tmp_path / "outputs", webhook_allowed_hosts="10.0.0.7")
    )

    assert producer.submit(_config("http://10.0.0.7/hook")).job_id


def _loopback_name() -> str | None:
    """A host name other than 'localhost' that resolves to loopback or a private address here."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        return None
    return name if addresses and all(not ipaddress.ip_address(a).is_global for a in addresses) else None


def test_a_host_name_resolving_to_an_internal_address_is_refused_at_submit(
    connection: redis.Redis, tmp_path: Path
) -> None:
    name = _loopback_name()
    if name is None:
        pytest.skip("this host's name resolves to no internal address")
    producer = Producer(connection, Settings(output_dir=tmp_path / "outputs"))

    with pytest.raises(ConfigError, match="private address"):
        producer.submit(_config(f"http://{name}:9/hook"))


def test_the_worker_checks_again_at_delivery_and_sends_nothing_to_an_internal_address(
    producer: Producer,
    simulator: SimulatedWebUI,
    worker_process: Callable[..., Any],
    webhook_receiver: WebhookReceiver,
) -> None:
    """Submitted where loopback is allowed; run by a worker whose settings do not allow it."""
    worker = worker_process("default", webui_url=simulator.url, env={"STABLENEW_WEBHOOK_ALLOWED_HOSTS": ""})
    allowed = producer.submit(_config(webhook_receiver.url)).job_id
    deadline = time.monotonic() + 20
    while not producer.status(allowed).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the delivery thread would have sent it by now

    assert producer.status(allowed).status == "finished"
    assert webhook_receiver.deliveries == []
    assert "webhook not sent" in worker.log() and "private address" in worker.log()
