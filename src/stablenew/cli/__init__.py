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
import os
import sys
from collections.abc import Sequence

from stablenew.cli.parser import build_parser

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_WEBUI, EXIT_REDIS, EXIT_JOB = 0, 1, 2, 3, 4, 5


def _apply_global_flags(args: argparse.Namespace) -> None:
    """Flags override STABLENEW_* variables, which override defaults: flags go into the env."""
    for flag, env in (
        ("redis_url", "STABLENEW_REDIS_URL"),
        ("webui_url", "STABLENEW_WEBUI_URL"),
        ("output_dir", "STABLENEW_OUTPUT_DIR"),
    ):
        value = getattr(args, flag, None)
        if value:
            os.environ[env] = str(value)


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
    from stablenew.errors import ConfigError

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
    _apply_global_flags(args)
    try:
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
