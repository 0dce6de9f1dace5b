"""The API's deployment files: the compose service and the systemd unit run a real ``stablenew serve``."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from stablenew.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_api_with_a_required_token_published_on_loopback_only() -> None:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    args = build_parser().parse_args([str(a) for a in service["command"]])

    assert args.host == "0.0.0.0" and not args.public_read
    assert service["environment"]["STABLENEW_API_TOKEN"].startswith("${API_TOKEN:?")
    assert service["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]
    assert any(str(v).endswith(":/srv/stablenew/outputs") for v in service["volumes"])


def test_the_systemd_unit_serves_on_loopback_with_an_env_file() -> None:
    text = (ROOT / "worker" / "stablenew-api.service").read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    args = build_parser().parse_args(argv[1:])

    assert argv[0].endswith("/stablenew") and argv[1] == "serve"
    assert args.host == "127.0.0.1"
    assert "EnvironmentFile=/etc/stablenew/api.env" in text


def test_the_api_package_exports_create_app_and_its_settings_only() -> None:
    import stablenew.api

    assert stablenew.api.__all__ == sorted(stablenew.api.__all__) == ["ApiSettings", "create_app"]
