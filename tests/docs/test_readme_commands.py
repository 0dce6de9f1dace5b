"""Every command the README and worker/README show is a real command with real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from stablenew.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "worker" / "README.md", ROOT / "producer" / "README.md"]
PLACEHOLDERS = {
    "CONFIG": "producer/examples/full_pipeline.json",
    "JOB": "abc123",
    "URL": "http://127.0.0.1:7860",
    "DIR": "outputs",
    "N": "gpu0",
    "P": "9181",
    "Q": "default",
    "S": "finished",
    "ID": "my-job",
    "QUEUES...": "high",
    "SECONDS": "1",
    "CONFIG...": "producer/examples/full_pipeline.json",
}


def _stablenew_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for line in re.findall(r"`(stablenew [^`]+)`", text) + re.findall(
            r"^\s*\$? ?(stablenew .+)$", text, re.M
        ):
            found.append((doc.name, line.split("#")[0].strip()))
    return sorted(set(found))


def _argv(command: str) -> list[str]:
    argv = []
    for token in shlex.split(command.replace("\\|", "|"))[1:]:
        token = token.strip("[]")
        if not token or token == "...":
            continue
        if "|" in token:
            token = token.split("|")[0]
        argv.append(PLACEHOLDERS.get(token, token))
    return argv


def test_the_readme_shows_stablenew_commands() -> None:
    assert len(_stablenew_commands()) >= 15


@pytest.mark.parametrize(("doc", "command"), _stablenew_commands())
def test_each_documented_command_parses(doc: str, command: str) -> None:
    argv = _argv(command)
    if argv and argv[0] in ("--version", "--help"):
        return
    args = build_parser().parse_args(argv)
    assert args.handler is not None, f"{doc}: `{command}` names no command"


def test_the_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:2000]
    assert "make demo" in head and "make test" in head


def test_the_readme_configs_are_valid_and_plan_the_same_job() -> None:
    import json

    from stablenew.jobs.producer import build_checked_plan

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    configs = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    configs = [c for c in configs if "job_id" not in c]  # the status --json sample is not a config
    plans = [build_checked_plan(c) for c in configs]
    assert len(plans) == 2
    assert plans[0].get_stage_types() == plans[1].get_stage_types()
