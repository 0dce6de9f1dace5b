"""``stablenew dashboard``: rq-dashboard for our JSON jobs, read-only.

rq-dashboard 0.9.0 knows nothing of custom serializers, and with JSON jobs it has known faults:
its requeue re-saves a job with pickle (corrupting it for our JSON workers), its delete/empty
actions are destructive, and it imports ``six`` without declaring it (we depend on ``six``).
So we serve it with ``RQ_DASHBOARD_JSON`` semantics (JSON serializer everywhere) and refuse every
state-changing route: operators use ``stablenew cancel/retry``, which keep jobs JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from stablenew.cli import EXIT_OK

# Routes of rq-dashboard 0.9.0 that change state (all POST); refused with 403.
_MUTATING_PREFIXES = ("/job/", "/queue/", "/requeue", "/empty", "/delete", "/compact", "/cancel")


def create_app(redis_url: str) -> Any:
    """The rq-dashboard Flask app bound to ``redis_url``, JSON jobs, read-only."""
    from flask import Flask, abort, request
    from rq.serializers import JSONSerializer
    from rq_dashboard import default_settings
    from rq_dashboard.web import blueprint, setup_rq_connection

    app = Flask(__name__)
    app.config.from_object(default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = [redis_url]
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True
    app.config["RQ_DASHBOARD_SERIALIZER"] = JSONSerializer
    app.register_blueprint(blueprint)
    setup_rq_connection(app)

    @app.before_request
    def read_only() -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            abort(403, description="stablenew serves rq-dashboard read-only; use `stablenew cancel/retry`")

    return app


def cmd_dashboard(args: argparse.Namespace) -> int:
    from stablenew.settings import Settings, redact_url

    url = Settings().redis_url.get_secret_value()
    app = create_app(url)
    print(f"rq-dashboard (read-only) for {redact_url(url)} at http://{args.host}:{args.port}/")
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False)
    return EXIT_OK
