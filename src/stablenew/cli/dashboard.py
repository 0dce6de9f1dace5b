"""``stablenew dashboard``: rq-dashboard 0.9.0 for our JSON jobs, read-only.

rq-dashboard has no serializer setting in its app config: its CLI flag ``--json`` (env
``RQ_DASHBOARD_JSON``) sets the module global ``rq_dashboard.web.config.serializer``, which some of
its call sites pass to rq and others do not. With JSON jobs, 0.9.0 has these faults (paths are in
the installed ``rq_dashboard``/``rq`` packages), each worked around here:

- **Workers API 500 while a worker is busy.** ``web.py:673`` (and the workers page, ``web.py:357``)
  calls ``Worker.all(connection=...)`` with no serializer, so rq gives every worker the pickle
  serializer (``rq/worker/base.py:342`` -> ``:187``). ``web.py:664`` then calls
  ``worker.get_current_job()``, which fetches the job with that serializer (``rq/worker/base.py:824``),
  and ``web.py:236`` ``job.get_call_string()`` unpickles our JSON ``data`` (``rq/job.py:592``):
  ``DeserializationError`` -> HTTP 500. Fix: rq-dashboard looks ``Worker`` up in its module at call time,
  so we give it a ``Worker`` whose ``all()`` defaults to JSON (:class:`DashboardWorker`).
- **Job page reads meta with pickle.** ``web.py:416`` (and delete, ``web.py:441``) call
  ``Job.fetch(job_id, connection=...)`` without a serializer; rq unpickles ``meta`` on fetch
  (``rq/job.py:1027``; rq#2389), which is code execution for anyone who can write to Redis. Same
  fix: a ``Job`` whose ``fetch()`` defaults to JSON (:class:`DashboardJob`).
- **Requeue re-saves with pickle.** ``web.py:454``/``:465`` call ``rq.requeue_job`` without a
  serializer (``rq/job.py:168``): the JSON meta reads as ``{"unserialized": ...}`` and is written back
  pickled, corrupting the job for our workers. Delete/empty/compact are destructive. So every
  state-changing route is refused with 403 (``/requeue/<queue>`` even changes state on GET), and
  their buttons are removed from the templates (the ``RQ_DASHBOARD_DISABLE_DELETE`` flag only hides
  Delete and Empty; Requeue, Requeue All and Compact have no flag).
- **Undeclared ``six``.** ``web.py:55`` does ``from six import string_types``, but rq-dashboard does
  not list six in its requirements. stablenew declares ``six``; should it still be missing (an
  install with ``--no-deps``), :func:`_import_web` lends rq-dashboard a stand-in for that one import.

- **A paused worker looks idle.** The workers page (``workers.html``) shows no state, only the
  current job, and ``web.py:230`` calls every worker without one "idle", also one of ours that
  takes no job because its WebUI is down (RQ state ``suspended``). So the workers API says what
  such a worker is doing instead (:func:`_worker_activity`, from ``stablenew workers``' own
  :func:`~stablenew.jobs.worker_views.list_workers`), and the page's template prints that text.

What the job page shows of our jobs is ``job.meta["stablenew"]``: the job's ``status --json``, which
the worker writes with every state save (see docs/job-state.md).
- **The Redis password on every page.** ``web.py:313`` (``escape_format_instance_list``) hides only
  ``user:pass@`` up to the *first* ``@`` (a password holding ``@`` shows its tail) and never a
  ``?password=`` query; the queues, workers, jobs and job pages show the list. Fix: the module global
  is replaced by one that uses :func:`stablenew.settings.redact_url`.
- **No authentication.** rq-dashboard has none of its own. ``create_app(auth=(user, password))`` asks
  for HTTP basic on every route (compared in constant time); ``cmd_dashboard`` takes it from
  ``STABLENEW_DASHBOARD_AUTH=user:password`` and, without it, refuses to bind anything but loopback.

Operators change jobs with ``stablenew cancel`` / ``stablenew retry``, which keep them JSON.
The serializer and the two classes are module globals of rq-dashboard (as its own ``--json`` is), so
they apply to every rq-dashboard app in the process; the 403 guard and the templates are per app.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import ipaddress
import json
import re
import sys
import types
from typing import Any

from flask import Flask, Response, request
from jinja2 import DictLoader
from redis import Redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from stablenew.cli import EXIT_INPUT, EXIT_OK
from stablenew.settings import redact_url

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# rq-dashboard 0.9.0 endpoints that change jobs or queues (web.py:436-509). Refused whatever the
# method: ``requeue_all`` also answers GET.
MUTATING_ENDPOINTS = frozenset(
    {
        "rq_dashboard.delete_job_view",
        "rq_dashboard.requeue_job_view",
        "rq_dashboard.requeue_all",
        "rq_dashboard.empty_queue",
        "rq_dashboard.compact_queue",
    }
)

# The buttons that call those endpoints, as written in rq-dashboard 0.9.0's templates. Each must match
# exactly once: a changed template stops the dashboard at start-up rather than showing a live button.
_REMOVED_CONTROLS: dict[str, tuple[str, ...]] = {
    "rq_dashboard/jobs.html": (
        r'<a href="[^"]*" id="empty-btn".*?</a>',
        r'<a href="[^"]*" id="compact-btn".*?</a>',
        r'<a href="[^"]*" id="requeue-all-btn".*?</a>',
        r'<a href="#" data-role="requeue-job-btn".*?</a>',
        r'<a href="#" data-role="delete-job-btn".*?</a>',
    ),
    "rq_dashboard/job.html": (
        r'<button id="requeue-job-btn".*?</button>',
        r'<button id="delete-job-btn".*?</button>',
    ),
}

# The workers page's current-job cell, as written in rq-dashboard 0.9.0: a job is an object, any
# text (our "paused: ..." as well as rq-dashboard's "idle") is printed as it is.
_REPLACED_IN_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "rq_dashboard/workers.html": (
        (r"<% if \(d\.current_job !== 'idle'\) \{ %>", "<% if (typeof d.current_job === 'object') { %>"),
    ),
}

READ_ONLY_MESSAGE = (
    "stablenew serves rq-dashboard read-only: use `stablenew cancel JOB` or `stablenew retry JOB`\n"
)


class DashboardWorker(Worker):
    """rq's ``Worker`` as rq-dashboard must list ours: JSON serializer unless told otherwise."""

    @classmethod
    def all(
        cls,
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        queue: Queue | None = None,
        serializer: Any = None,
    ) -> list[BaseWorker]:
        workers: list[BaseWorker] = super().all(
            connection=connection,
            job_class=job_class,
            queue_class=queue_class,
            queue=queue,
            serializer=serializer or JSONSerializer,
        )
        return workers


class DashboardJob(Job):
    """rq's ``Job`` as rq-dashboard must fetch ours: JSON serializer unless told otherwise."""

    @classmethod
    def fetch(cls, id: str, connection: Redis | None = None, serializer: Any = None) -> Job:
        return super().fetch(id, connection=connection, serializer=serializer or JSONSerializer)


_MISSING = object()


def _import_web() -> Any:
    """Import ``rq_dashboard.web`` even if ``six`` (used, never declared: web.py:55) is missing.

    The stand-in holds only ``string_types``, the one name rq-dashboard imports, and is removed
    from ``sys.modules`` again right after, so no other library can mistake it for six.
    """
    if importlib.util.find_spec("six") is not None:
        import rq_dashboard.web

        return rq_dashboard.web
    stand_in = types.ModuleType("six", "stand-in for rq_dashboard.web's `from six import string_types`")
    stand_in.string_types = (str,)  # type: ignore[attr-defined]
    saved = sys.modules.get("six", _MISSING)
    sys.modules["six"] = stand_in
    try:
        import rq_dashboard.web

        return rq_dashboard.web
    finally:
        if saved is _MISSING:
            del sys.modules["six"]
        else:
            sys.modules["six"] = saved  # type: ignore[assignment]


def _read_only_templates(blueprint: Any) -> dict[str, str]:
    """rq-dashboard's job and jobs templates without their state-changing buttons, and its workers
    template printing what our API says a worker without a job is doing."""
    edits: dict[str, list[tuple[str, str]]] = {}
    for name, controls in _REMOVED_CONTROLS.items():
        edits.setdefault(name, []).extend((control, "") for control in controls)
    for name, replacements in _REPLACED_IN_TEMPLATES.items():
        edits.setdefault(name, []).extend(replacements)
    templates = {}
    for name, changes in edits.items():
        source: str = blueprint.jinja_loader.get_source(None, name)[0]
        for pattern, replacement in changes:
            source, found = re.subn(pattern, replacement, source, flags=re.DOTALL)
            if found != 1:
                raise RuntimeError(
                    f"rq-dashboard's {name} no longer matches {pattern!r} ({found} matches): "
                    "review stablenew.cli.dashboard before serving it"
                )
        templates[name] = source
    return templates


def _worker_activity(connection: Redis, workers: list[dict[str, Any]]) -> None:
    """Our word for each worker rq-dashboard lists, where it differs from rq-dashboard's: its
    state as ``stablenew workers`` says it, and for a worker paused because its WebUI is failing,
    ``current_job`` says so instead of "idle"."""
    from stablenew.jobs.worker_views import list_workers

    ours = {view.name: view for view in list_workers(connection)}
    for worker in workers:
        view = ours.get(worker.get("name", ""))
        if view is None:
            continue
        worker["state"] = view.state
        if view.state == "suspended" and not isinstance(worker.get("current_job"), dict):
            worker["current_job"] = (
                f"paused: its WebUI is failing ({view.webui_failures} failures in a row); probing it"
            )


def redacted_instance_list(urls: str | list[str] | tuple[str, ...]) -> list[str]:
    """rq-dashboard's list of Redis instances as its pages show it, every password hidden."""
    return [redact_url(url) for url in ([urls] if isinstance(urls, str) else urls)]


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def create_app(redis_url: str, *, auth: tuple[str, str] | None = None) -> Flask:
    """The rq-dashboard Flask app bound to ``redis_url``: JSON jobs, read-only, passwords hidden.

    With ``auth`` (user, password) every request must carry them as HTTP basic authentication.
    """
    web = _import_web()
    from rq_dashboard import default_settings

    web.config.serializer = JSONSerializer
    web.Worker = DashboardWorker
    web.Job = DashboardJob
    web.escape_format_instance_list = redacted_instance_list

    app = Flask(__name__, static_folder=web.blueprint.static_folder)  # base.html links the app's favicon
    app.config.from_object(default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = [redis_url]
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True
    app.jinja_loader = DictLoader(_read_only_templates(web.blueprint))  # searched before the blueprint's
    app.register_blueprint(web.blueprint)
    web.setup_rq_connection(app)

    @app.before_request
    def refuse_changes() -> Response | None:  # app hooks run before the blueprint's: no Redis touched
        if auth is not None:
            given = request.authorization
            # Both compared, always: how long the answer takes says nothing about which one was wrong.
            user_ok = _same(given.username or "" if given else "", auth[0])
            password_ok = _same(given.password or "" if given else "", auth[1])
            if not (user_ok and password_ok):
                return Response(
                    "authentication required\n",
                    status=401,
                    mimetype="text/plain",
                    headers={"WWW-Authenticate": 'Basic realm="stablenew dashboard", charset="UTF-8"'},
                )
        if request.method in SAFE_METHODS and request.endpoint not in MUTATING_ENDPOINTS:
            return None
        return Response(READ_ONLY_MESSAGE, status=403, mimetype="text/plain")

    @app.after_request
    def our_worker_states(response: Response) -> Response:
        if request.endpoint != "rq_dashboard.list_workers" or response.status_code != 200:
            return response
        body = response.get_json()
        _worker_activity(app.redis_conn, body["workers"])  # type: ignore[attr-defined]
        response.set_data(json.dumps(body))
        return response

    @app.errorhandler(NoSuchJobError)
    def job_not_found(exc: NoSuchJobError) -> tuple[str, int]:  # rq-dashboard answers 500
        return f"{exc}\n", 404

    return app


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_dashboard(args: argparse.Namespace) -> int:
    from stablenew.jobs.connection import connect

    settings = args.settings
    auth = None
    if settings.dashboard_auth is not None:
        user, _, password = settings.dashboard_auth.get_secret_value().partition(":")
        auth = (user, password)
    if auth is None and not is_loopback(args.host):
        print(
            f"error: the dashboard would serve {args.host} without authentication: set "
            "STABLENEW_DASHBOARD_AUTH=user:password, or bind 127.0.0.1",
            file=sys.stderr,
        )
        return EXIT_INPUT
    url = settings.redis_url.get_secret_value()
    connect(url).close()  # an unreachable Redis is exit code 4 now, not an error page later
    app = create_app(url, auth=auth)
    login = "HTTP basic authentication" if auth else "no authentication, loopback only"
    print(
        f"rq-dashboard (read-only, {login}) for {redact_url(url)} at http://{args.host}:{args.port}/",
        flush=True,
    )
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)
    return EXIT_OK
