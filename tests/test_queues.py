"""The queue names are defined once, in a module the CLI's --help can import for free."""

from __future__ import annotations

import argparse
import subprocess
import sys

from stablenew.cli.parser import build_parser
from stablenew.jobs import keys
from stablenew.queues import DEFAULT_QUEUE, QUEUES
from stablenew.settings import Settings


def _choices(command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices or ())


def test_the_cli_jobs_and_settings_use_the_one_list_of_queue_names() -> None:
    assert QUEUES == ("high", "default", "low")
    assert not hasattr(keys, "QUEUES")  # one definition, in stablenew.queues
    assert _choices("submit", "--queue") == QUEUES
    assert _choices("list", "--queue") == QUEUES
    assert DEFAULT_QUEUE in QUEUES
    assert Settings().queues == list(QUEUES)


def test_the_queue_names_module_and_the_parser_load_neither_pydantic_nor_rq() -> None:
    code = (
        "import sys, stablenew.queues, stablenew.cli.parser; stablenew.cli.parser.build_parser(); "
        "print(sorted(m for m in ('rq', 'redis', 'pydantic', 'pydantic_settings') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
