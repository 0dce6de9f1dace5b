"""The ``stablenew`` command: one entry point, the same producer functions a GUI calls.

Exit codes (a public contract, documented in the README):

====  =====================================================
0     success
1     unexpected internal error (a bug: run with --debug)
2     bad input: config, plan, job id, arguments
3     WebUI error (unreachable, timeout, rejected, HTTP error)
4     Redis unreachable
5     the job failed or was canceled (``--wait``, ``watch``)
====  =====================================================

Heavy modules (rq, pydantic models, requests, rich) are imported inside the commands that use
them, so ``stablenew --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stablenew.cli.parser import build_parser

if TYPE_CHECKING:
    from stablenew.settings import Settings

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_WEBUI, EXIT_REDIS, EXIT_JOB = 0, 1, 2, 3, 4, 5


# Arguments that stand for a setting: the attribute on args (= the Settings field) and how the
# user wrote it. Flags override STABLENEW_* variables, which override the defaults.
SETTING_FLAGS = (
    ("redis_url", "--redis-url"),
    ("webui_url", "--webui-url"),
    ("output_dir", "--output-dir"),
    ("queues", "worker queues"),
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The one Settings of this command: the environment plus the flags given."""
    from stablenew.settings import load_settings

    return load_settings(
        {field: getattr(args, field, None) for field, _ in SETTING_FLAGS}, flag_names=dict(SETTING_FLAGS)
    )


def exit_code_for(exc: BaseException) -> int:
    from stablenew.errors import (
        ConfigError,
        InvalidStagePlanError,
        JobError,
        PlanVersionError,
        RedisUnavailable,
        WebUIError,
    )

    if isinstance(exc, ConfigError | InvalidStagePlanError | PlanVersionError | JobError):
        return EXIT_INPUT
    if isinstance(exc, WebUIError):
        return EXIT_WEBUI
    if isinstance(exc, RedisUnavailable):
        return EXIT_REDIS
    return EXIT_BUG


def print_error(exc: BaseException) -> None:
    from stablenew.errors import ConfigError, SettingsError

    if isinstance(exc, SettingsError):
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return
    if isinstance(exc, ConfigError):
        where = f" in {exc.source}" if exc.source else ""
        for problem in exc.problems:
            print(f"error{where}: {problem}", file=sys.stderr)
        return
    print(f"error: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        if args.uses_settings:
            args.settings = settings_from_args(args)
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from stablenew.errors import StableNewError

        if args.debug:
            raise
        if isinstance(exc, StableNewError):
            print_error(exc)
            return exit_code_for(exc)
        print(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", file=sys.stderr
        )
        return EXIT_BUG


__all__ = ["main"]
