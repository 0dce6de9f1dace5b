"""Deployment files (issue 5): docker-compose.yml, worker/Dockerfile, .dockerignore, worker/env.example,
the systemd unit, and producer/gui_example.py run against a real Redis, a real worker and the simulator.

Docker cannot run here, so the compose file and the Dockerfile are checked by reading them: every command
they run must be a real ``stablenew`` command, every file they name must exist, and the settings that make
a deployment safe (password, persistence, warm shutdown, non-root) must be there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from stablenew.cli.parser import build_parser
from stablenew.jobs.producer import Producer
from stablenew.settings import Settings
from stablenew.simulator import SimulatedWebUI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "worker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "worker" / "env.example"
UNIT_FILE = ROOT / "worker" / "stablenew-worker@.service"
GUI_EXAMPLE = ROOT / "producer" / "gui_example.py"
EXAMPLES = ROOT / "producer" / "examples"
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make ", "python3-dev")
CLUTTER = (
    ".env",
    ".venv/bin/python",
    "outputs/job/00-txt2img-00.png",
    "tests/conftest.py",
    "src/stablenew.egg-info/PKG-INFO",
    "src/stablenew/__pycache__/cli.cpython-311.pyc",
)


# ------------------------------------------------------------------------------------------ readers
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def runs_stablenew(service: dict[str, Any]) -> bool:
    """Built from our Dockerfile (whose ENTRYPOINT is ``stablenew``): its command is stablenew's argv."""
    return "build" in service


def workers() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if runs_stablenew(s) and s["command"][0] == "worker"}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def seconds(duration: str) -> float:
    """A compose (``1h30m``) or systemd (``30min``) duration in seconds."""
    units = {"h": 3600, "min": 60, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration.replace(" ", ""), duration
    return sum(float(n) * units[u] for n, u in parts)


def parses_as_stablenew(argv: list[str]) -> Any:
    """The namespace ``stablenew ARGV`` parses into; fails the test (not SystemExit) when it does not."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(
            f"`stablenew {shlex.join(argv)}` is not a valid command (exit {exc.code})"
        ) from None
    assert args.handler is not None, f"`stablenew {shlex.join(argv)}` names no command"
    return args


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instruction.upper(), " ".join(rest.split())))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [rest for instruction, rest in stage if instruction == name]


def unit_entries(section: str) -> list[tuple[str, str]]:
    """``(key, value)`` pairs of one section of the systemd unit (keys may repeat)."""
    entries: list[tuple[str, str]] = []
    current = None
    for line in UNIT_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line in the unit: {line!r}"
        if current == section:
            entries.append((key.strip(), value.strip()))
    return entries


def unit(section: str) -> dict[str, str]:
    return dict(unit_entries(section))


def env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------------------ compose
def test_compose_defines_redis_workers_and_a_dashboard_each_with_an_image_or_a_build() -> None:
    found = services()

    assert {"redis", "dashboard"} <= set(found)
    assert len([n for n in workers() if not found[n].get("profiles")]) >= 2, "one worker per GPU, shown twice"
    for name, service in found.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"


def test_redis_requires_a_password_persists_every_write_and_checks_its_health_with_the_password() -> None:
    service = services()["redis"]
    command = service["command"]
    env = env_of(service)

    assert str(service["image"]).startswith("redis:7")
    assert "${REDIS_PASSWORD" in command[command.index("--requirepass") + 1]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in service["volumes"])
    named = str(service["volumes"][0]).split(":")[0]
    assert named in (compose().get("volumes") or {}), f"volume {named} is not declared"
    check = " ".join(service["healthcheck"]["test"])
    assert "redis-cli" in check
    assert "${REDIS_PASSWORD" in check or "${REDIS_PASSWORD" in env.get("REDISCLI_AUTH", "")


def test_every_service_built_from_our_image_runs_a_real_stablenew_command() -> None:
    ours = {name: s for name, s in services().items() if runs_stablenew(s)}
    entrypoints = instructions(dockerfile_stages()[-1], "ENTRYPOINT")

    assert entrypoints == ['["stablenew"]'], "compose commands are stablenew's argv only with this ENTRYPOINT"
    assert {"dashboard", "simulator"} <= set(ours)
    for name, service in ours.items():
        assert isinstance(service["command"], list), f"{name}: use the exec form (a list)"
        parses_as_stablenew([str(arg) for arg in service["command"]])


def test_workers_wait_for_redis_restart_and_have_time_to_finish_a_stage_when_stopped() -> None:
    for name, service in workers().items():
        args = parses_as_stablenew(service["command"])
        env = env_of(service)

        assert args.wait, f"{name}: without --wait the worker refuses to start before its WebUI"
        assert service["restart"] == "unless-stopped", name
        assert seconds(service["stop_grace_period"]) >= 600, name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert env["STABLENEW_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD"), name
        assert "@redis:6379/" in env["STABLENEW_REDIS_URL"], name
        assert env["STABLENEW_WEBUI_URL"].startswith("http://"), name


def test_each_worker_has_its_own_name_and_webui_and_writes_to_the_image_output_volume() -> None:
    found = workers()
    names = [parses_as_stablenew(s["command"]).name for s in found.values()]
    urls = [env_of(s)["STABLENEW_WEBUI_URL"] for s in found.values()]
    image_env = " ".join(instructions(dockerfile_stages()[-1], "ENV"))
    image_output_dir = re.search(r"STABLENEW_OUTPUT_DIR=(\S+)", image_env)

    assert len(set(names)) == len(names) and all(names), names
    assert len(set(urls)) == len(urls), urls
    assert image_output_dir is not None
    for name, service in found.items():
        output_dir = env_of(service)["STABLENEW_OUTPUT_DIR"]
        assert output_dir == image_output_dir.group(1), name
        assert any(str(v).endswith(f":{output_dir}") for v in service["volumes"]), name


def test_the_dashboard_listens_on_all_interfaces_of_its_container_and_publishes_its_port() -> None:
    service = services()["dashboard"]
    args = parses_as_stablenew(service["command"])

    assert args.host == "0.0.0.0"
    assert any(str(p).endswith(f":{args.port}") for p in service["ports"])
    assert "${REDIS_PASSWORD" in env_of(service)["STABLENEW_REDIS_URL"]
    # Bound beyond loopback (inside its container), the dashboard serves only with a user and password.
    assert "${DASHBOARD_AUTH:?" in env_of(service)["STABLENEW_DASHBOARD_AUTH"]


def test_the_simulator_profile_runs_the_simulator_and_a_worker_that_uses_it() -> None:
    found = services()
    simulator = found["simulator"]
    args = parses_as_stablenew(simulator["command"])
    sim_workers = [s for s in workers().values() if s.get("profiles") == ["simulator"]]

    assert simulator["profiles"] == ["simulator"]
    assert args.host == "0.0.0.0" and args.latency > 0
    assert sim_workers
    for service in sim_workers:
        assert env_of(service)["STABLENEW_WEBUI_URL"] == f"http://simulator:{args.port}"
        assert "simulator" in service["depends_on"]


def test_every_file_and_service_the_compose_file_names_exists() -> None:
    found = services()
    for name, service in found.items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / dockerfile).is_file(), f"{name}: dockerfile {dockerfile}"
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str | dict) else env_files:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert (ROOT / path).is_file(), f"{name}: env_file {path}"
        for dependency in service.get("depends_on") or {}:
            assert dependency in found, f"{name} depends on unknown service {dependency}"


# ------------------------------------------------------------------------------------------ Dockerfile
def test_the_image_builds_a_wheel_first_and_the_slim_final_stage_installs_only_wheels() -> None:
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    builds = " ".join(instructions(build, "RUN"))
    installs = " ".join(instructions(final, "RUN"))

    assert len(dockerfile_stages()) >= 2
    assert instructions(build, "FROM")[0].startswith("python:3.11-slim")
    assert instructions(final, "FROM")[0].startswith("python:3.11-slim")
    assert "pip wheel" in builds
    assert "pip install --no-index" in installs and "/wheels" in installs
    assert all("--from=" in c for c in instructions(final, "COPY")), "the final stage copies no source"


def test_the_final_image_runs_as_a_non_root_user_without_build_tools() -> None:
    final = dockerfile_stages()[-1]
    users = instructions(final, "USER")
    text = " ".join(rest.lower() for _, rest in final)

    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    for tool in BUILD_TOOLS:
        assert tool not in text, f"build tool {tool.strip()!r} in the final image"


def test_the_image_runs_a_waiting_worker_by_default_with_its_outputs_on_a_volume() -> None:
    final = dockerfile_stages()[-1]
    command = json.loads(instructions(final, "CMD")[-1])
    env = " ".join(instructions(final, "ENV"))
    output_dir = re.search(r"STABLENEW_OUTPUT_DIR=(\S+)", env)
    volumes = " ".join(instructions(final, "VOLUME"))

    assert parses_as_stablenew(command).wait
    assert command[0] == "worker"
    assert output_dir is not None
    assert output_dir.group(1) in volumes


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _ignore_regex(line.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_leaves_out_secrets_and_clutter() -> None:
    copied = []
    for stage in dockerfile_stages():
        for args in instructions(stage, "COPY"):
            if "--from=" not in args:
                copied.extend(args.split()[:-1])
    sources = [p for p in (ROOT / "src").rglob("*.py") if "__pycache__" not in p.parts]

    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    assert sources and not any(dockerignored(p.relative_to(ROOT).as_posix()) for p in sources)
    for clutter in CLUTTER:
        assert dockerignored(clutter), f"{clutter} would be sent to the Docker build"


# ------------------------------------------------------------------------------------------ env.example
def test_env_example_documents_every_setting() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for field in Settings.model_fields:
        variable = f"STABLENEW_{field.upper()}"
        assert re.search(rf"^(# )?{variable}=", text, re.M), f"{variable} is not in worker/env.example"


def test_env_example_lines_are_plain_assignments_whose_values_are_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("STABLENEW_")]:
        monkeypatch.delenv(key)
    assigned = 0
    for line in env_example_lines():
        match = re.match(r"^(# )?(STABLENEW_[A-Z_]+)=(.*)$", line)
        if match:
            value = match.group(3)
            assert not value.startswith(("'", '"')) and " " not in value, f"systemd/docker-safe: {line!r}"
            monkeypatch.setenv(match.group(2), value)
            assigned += 1
        else:
            assert not line or line.startswith("#"), f"not a comment or KEY=value: {line!r}"
    monkeypatch.delenv("STABLENEW_WEBHOOK_SECRET", raising=False)  # empty in the example: unset

    settings = Settings()

    assert assigned >= len(Settings.model_fields)
    assert settings.output_dir == Path("/srv/stablenew/outputs")
    assert settings.webui_basic_auth == ("user", "secret")


# ------------------------------------------------------------------------------------------ systemd
def test_the_systemd_unit_starts_a_real_worker_named_after_its_host_and_instance() -> None:
    service = unit("Service")
    argv = shlex.split(service["ExecStart"])
    args = parses_as_stablenew(argv[1:])

    assert argv[0].startswith("/") and argv[0].endswith("/stablenew")
    assert argv[1] == "worker" and args.wait
    assert "%i" in args.name and "%H" in args.name
    assert service["EnvironmentFile"] == "/etc/stablenew/%i.env"
    assert service["User"] not in ("root", "0")
    assert unit("Install")["WantedBy"] == "multi-user.target"


def test_the_systemd_unit_stops_warmly_restarts_on_failure_and_may_write_only_its_outputs() -> None:
    service = unit("Service")
    environment = dict(v.split("=", 1) for k, v in unit_entries("Service") if k == "Environment")
    writable = " ".join(v for k, v in unit_entries("Service") if k == "ReadWritePaths").split()

    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed", "SIGTERM to the work horse kills the running job at once"
    assert seconds(service["TimeoutStopSec"]) >= 600
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    assert environment["STABLENEW_OUTPUT_DIR"] in writable


# ------------------------------------------------------------------------------------------ gui example
def run_gui_example(
    *args: str, env: dict[str, str], timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GUI_EXAMPLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def submitted_job_id(stdout: str) -> str:
    match = re.search(r"^submitted \S+ as job (\S+) on ", stdout, re.M)
    assert match, stdout
    return match.group(1)


def env_without_redis(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    return {**env, "STABLENEW_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


def test_gui_example_submits_follows_the_job_and_prints_its_final_status(
    producer: Producer, simulator: SimulatedWebUI, worker_process: Any, stablenew_env: dict[str, str]
) -> None:
    worker_process(webui_url=simulator.url)

    result = run_gui_example(str(EXAMPLES / "full_pipeline.json"), "--interval", "0.1", env=stablenew_env)

    assert result.returncode == 0, result.stdout + result.stderr
    job_id = submitted_job_id(result.stdout)
    assert producer.status(job_id).status == "finished"
    assert "final status: finished" in result.stdout
    for index, stage in enumerate(("txt2img", "img2img", "upscale", "adetailer")):
        assert re.search(rf"^  {index}\. {stage} +finished +{job_id}/", result.stdout, re.M), result.stdout
    assert f"manifest: {stablenew_env['STABLENEW_OUTPUT_DIR']}/{job_id}/manifest.json" in result.stdout


def test_gui_example_cancel_after_ends_with_the_job_canceled(
    producer: Producer, simulator: SimulatedWebUI, worker_process: Any, stablenew_env: dict[str, str]
) -> None:
    worker_process(webui_url=simulator.url)
    simulator.set_latency(30.0)  # far longer than the test waits: only a cancel ends it in time

    result = run_gui_example(
        str(EXAMPLES / "txt2img_only.json"), "--cancel-after", "1", "--interval", "0.1", env=stablenew_env
    )

    assert result.returncode == 5, result.stdout + result.stderr
    job_id = submitted_job_id(result.stdout)
    assert re.search(r"^cancel: ", result.stdout, re.M), result.stdout
    assert "final status: canceled" in result.stdout
    assert producer.status(job_id).status == "canceled"


def test_gui_example_reports_a_bad_config_before_it_touches_redis(tmp_path: Path, closed_port: int) -> None:
    config = json.loads((EXAMPLES / "txt2img_only.json").read_text(encoding="utf-8"))
    config["txt2img_config"]["steps"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(config), encoding="utf-8")

    result = run_gui_example(str(bad), env=env_without_redis(f"redis://127.0.0.1:{closed_port}/0"))

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error in {bad}: txt2img_config.steps" in result.stderr
    assert "Traceback" not in result.stderr


def test_gui_example_reports_an_unreachable_redis_without_printing_its_password(closed_port: int) -> None:
    result = run_gui_example(env=env_without_redis(f"redis://:s3cret-pw@127.0.0.1:{closed_port}/0"))

    assert result.returncode == 4, result.stdout + result.stderr
    assert "error: cannot reach Redis" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_gui_example_type_checks_under_mypy_strict_as_a_typed_gui_would() -> None:
    """GUIs copy this file: the public names (``from stablenew import Producer``) must be visible to mypy."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(GUI_EXAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ settings
def test_a_worker_started_without_queue_arguments_listens_on_the_queues_of_stablenew_queues(
    connection: redis.Redis, simulator: SimulatedWebUI, run_cli: Any
) -> None:
    """env.example and docs/configuration.md document STABLENEW_QUEUES; `stablenew worker` must honour it."""
    name = f"queues-{uuid.uuid4().hex[:8]}"

    result = run_cli(
        "worker",
        "--burst",
        "--name",
        name,
        env={"STABLENEW_WEBUI_URL": simulator.url, "STABLENEW_QUEUES": "high"},
    )

    assert result.returncode == 0, result.stderr
    assert f"worker {name}: queues high, WebUI" in result.stderr
