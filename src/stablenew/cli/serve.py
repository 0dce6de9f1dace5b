"""``stablenew serve``: the HTTP API and web console on uvicorn (loopback by default)."""

from __future__ import annotations

import argparse
import sys

from stablenew.cli import EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stablenew.api import ApiSettings, create_app
    from stablenew.errors import ConfigError, FieldProblem
    from stablenew.settings import redact_url

    settings = args.settings
    api_settings = ApiSettings()
    if args.public_read:
        api_settings.public_read = True
    if api_settings.token is None:
        raise ConfigError(
            [
                FieldProblem(
                    "STABLENEW_API_TOKEN",
                    "must be set: it guards every change (and every read, without --public-read)",
                    has_value=False,
                )
            ]
        )
    app = create_app(settings, api_settings)  # an unreachable Redis is exit code 4 here
    reads = "anyone" if api_settings.public_read else "the token"
    print(
        f"stablenew API and console for {redact_url(settings.redis_url.get_secret_value())} at "
        f"http://{args.host}:{args.port}/ (reads: {reads}; changes: the token)",
        file=sys.stderr,
        flush=True,
    )
    # Open event streams never end by themselves: a stop waits for them 5 s at most.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return EXIT_OK
