"""Every ``rq`` command line the README and worker/README show says ``-S json`` (jobs here are JSON:
without it RQ re-saves a job it touches with pickle), unless it is one that touches no job."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from rq.cli.cli import main as rq_main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "worker" / "README.md"]
# rq subcommands that read or write no job, so no serializer applies, and why.
NEEDS_NO_SERIALIZER = {
    "suspend": "sets one flag key (rq:suspended); no job is read or written",
    "resume": "deletes that flag key",
}


def rq_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        inline = [line for line in re.findall(r"`(rq [^`]+)`", text) if " -" in line]  # not a mere name
        lines = inline + re.findall(r"^\s*\$? ?(rq .+)$", text, re.M)
        found += [(doc.name, line.split("#")[0].strip()) for line in lines]
    return sorted(set(found))


def test_the_docs_show_the_rq_commands_an_operator_uses() -> None:
    subcommands = {shlex.split(command)[1] for _, command in rq_commands()}

    assert {"worker", "info", "requeue", "suspend", "resume"} <= subcommands


@pytest.mark.parametrize(("doc", "command"), rq_commands())
def test_each_rq_command_says_json_unless_it_touches_no_job(doc: str, command: str) -> None:
    argv = shlex.split(command)[1:]
    subcommand = argv[0]

    if subcommand in NEEDS_NO_SERIALIZER:
        assert "-S" not in argv  # a flag it would not use
    else:
        assert "-S" in argv and argv[argv.index("-S") + 1] == "json", f"{doc}: `{command}` lacks -S json"


@pytest.mark.parametrize(("doc", "command"), rq_commands())
def test_each_rq_command_has_only_flags_rq_knows(doc: str, command: str) -> None:
    argv = ["redis://127.0.0.1:6379/0" if a.startswith("$") else a for a in shlex.split(command)[1:]]
    subcommand = rq_main.commands[argv[0]]

    with subcommand.make_context(argv[0], argv[1:]) as context:  # a flag rq lacks raises UsageError
        if argv[0] not in NEEDS_NO_SERIALIZER:
            assert context.params["serializer"] == "json", f"{doc}: `{command}`"
