"""The CLI builds one Settings from the environment and the flags given: flags > env > defaults."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from job_checks import wait_done
from stablenew.cli import main
from stablenew.config_files import load_config_file
from stablenew.jobs.producer import Producer
from worker_processes import StartWorker

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
TXT2IMG_ONLY = EXAMPLES / "txt2img_only.json"


def test_flags_are_not_written_into_the_environment(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STABLENEW_REDIS_URL", raising=False)

    code = main(["--redis-url", f"redis://127.0.0.1:{closed_port}/0", "list"])

    assert code == 4, capsys.readouterr().err
    assert "STABLENEW_REDIS_URL" not in os.environ


def test_the_redis_url_flag_wins_over_the_variable(run_cli: Any, redis_url: str, closed_port: int) -> None:
    result = run_cli(
        "--redis-url", redis_url, "list", env={"STABLENEW_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    )

    assert result.returncode == 0, result.stderr


def test_the_variable_is_used_when_no_flag_is_given(run_cli: Any, closed_port: int) -> None:
    result = run_cli("list", env={"STABLENEW_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"})

    assert result.returncode == 4, result.stderr


def test_a_worker_runs_its_jobs_with_the_webui_and_output_dir_of_its_flags(
    worker_process: StartWorker,
    producer: Producer,
    simulator: Any,
    closed_port: int,
    tmp_path: Path,
) -> None:
    # Given a queued job and a shell whose STABLENEW_WEBUI_URL names a closed port
    sub = producer.submit(load_config_file(TXT2IMG_ONLY))
    out = tmp_path / "flag-outputs"

    # When a worker is started with --webui-url and --output-dir
    worker_process(
        webui_url=f"http://127.0.0.1:{closed_port}",
        command=[
            sys.executable,
            "-m",
            "stablenew",
            "worker",
            "--webui-url",
            simulator.url,
            "--output-dir",
            str(out),
        ],
    )

    # Then the job ran against the simulator and wrote under the flag's output root
    view = wait_done(producer, sub.job_id)
    assert view.status == "finished", view
    assert list(out.glob("*/manifest.json"))


# ---------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(
            [],
            {"STABLENEW_RETRY_MAX": "three"},
            "STABLENEW_RETRY_MAX='three': must be an integer >= 0",
            id="retry-max",
        ),
        pytest.param(
            [],
            {"STABLENEW_RETRY_INTERVALS": "10,abc"},
            "STABLENEW_RETRY_INTERVALS='10,abc': must be",
            id="intervals",
        ),
        pytest.param(
            [],
            {"STABLENEW_QUEUES": " , "},
            "STABLENEW_QUEUES=' , ': must name at least one queue",
            id="no-queues",
        ),
        pytest.param(
            [],
            {"STABLENEW_QUEUES": "high,urgent"},
            "STABLENEW_QUEUES='high,urgent': unknown queue 'urgent'",
            id="queue",
        ),
        pytest.param(
            [],
            {"STABLENEW_REDIS_URL": "redis://:hunter2@127.0.0.1:6379/abc"},
            "STABLENEW_REDIS_URL='redis://:***@127.0.0.1:6379/abc': the database after the host must be a number",
            id="redis-db-name",
        ),
        pytest.param(
            [],
            {"STABLENEW_REDIS_URL": "redis://127.0.0.1:6379/99"},
            "database 99 is out of range: 0..15 unless your server sets databases",
            id="redis-db-99",
        ),
        pytest.param(
            [],
            {"STABLENEW_WEBUI_AUTH": "hunter2"},
            "STABLENEW_WEBUI_AUTH: must be user:password",
            id="webui-auth",
        ),
        pytest.param(
            [],
            {"STABLENEW_WEBUI_URL": "ftp://me:hunter2@host"},
            "STABLENEW_WEBUI_URL='ftp://me:***@host': must be an http:// or https:// URL",
            id="webui-url",
        ),
        pytest.param(
            ["--redis-url", "redis://:hunter2@127.0.0.1/abc"],
            {},
            "--redis-url='redis://:***@127.0.0.1/abc'",
            id="flag",
        ),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it_and_what_is_allowed(
    run_cli: Any, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run_cli(*args, "list", env=env)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_a_worker_given_an_unknown_queue_exits_2_naming_its_queue_arguments(run_cli: Any) -> None:
    result = run_cli("worker", "high", "urgent")

    assert result.returncode == 2, result.stderr
    assert (
        result.stderr
        == "error: worker queues='high,urgent': unknown queue 'urgent': each must be one of high,default,low\n"
    )
