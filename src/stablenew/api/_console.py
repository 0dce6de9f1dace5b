"""The web console at ``/``: queues, jobs with their pictures and live progress, a page per job,
and the workers. Server-rendered with Jinja2 (autoescaped: prompts are shown as text, never as
markup); ``static/console.js`` adds live progress from the event stream and the buttons."""

from __future__ import annotations

import hmac
import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from rq.job import Job
from rq.serializers import JSONSerializer

from stablenew import Producer, StageExecutionPlan
from stablenew.errors import JobNotFound, StableNewError
from stablenew.jobs import queue_control
from stablenew.jobs.worker_views import list_workers

from ._auth import COOKIE_NAME, cookie_value, has_credentials, is_authorized
from ._settings import ApiSettings

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["basename"] = lambda path: PurePosixPath(str(path)).name
_env.filters["pretty"] = lambda value: (
    json.dumps(value, indent=1) if isinstance(value, dict | list) else value
)

# Shown for each stage on the job page, in this order, when the stage's config has them.
SETTING_KEYS = (
    "prompt",
    "negative_prompt",
    "model",
    "sampler_name",
    "scheduler",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "denoising_strength",
    "upscaler",
    "upscaling_resize",
    "batch_size",
)


def _producer(request: Request) -> Producer:
    found: Producer = request.app.state.producer
    return found


def _can(request: Request, *, write: bool) -> bool:
    settings: ApiSettings = request.app.state.api_settings
    return is_authorized(request, settings, write=write)


def _render(name: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings: ApiSettings = request.app.state.api_settings
    context |= {"can_write": has_credentials(request, settings), "logged_in": COOKIE_NAME in request.cookies}
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status_code)


def _login_redirect() -> Response:
    return RedirectResponse("/login", status_code=303)


def _overview(p: Producer) -> dict[str, Any]:
    return {
        "queues": [q.to_dict() for q in queue_control.queue_views(p.connection)],
        "jobs": [v.to_dict() for v in p.list_jobs(limit=50)],
        "workers": [w.to_dict() for w in list_workers(p.connection)],
    }


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    if not _can(request, write=False):
        return _login_redirect()
    return _render("index.html", request, **_overview(_producer(request)))


@router.get("/fragments/overview", response_class=HTMLResponse)
def overview_fragment(request: Request) -> Response:
    if not _can(request, write=False):
        return Response("log in again", status_code=401)
    return _render("overview.html", request, **_overview(_producer(request)))


def _plan(p: Producer, job_id: str) -> StageExecutionPlan | None:
    """The plan a job carries (for its settings), or None when it cannot be read."""
    try:
        job = Job.fetch(job_id, connection=p.connection, serializer=JSONSerializer)
        return StageExecutionPlan.from_json(job.args[0])
    except (StableNewError, ValueError, TypeError, IndexError, KeyError):
        return None
    except Exception:  # rq's NoSuchJobError, DeserializationError: the page shows no settings
        return None


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> Response:
    if not _can(request, write=False):
        return _login_redirect()
    p = _producer(request)
    try:
        view = p.status(job_id).to_dict()
    except (JobNotFound, StableNewError) as exc:
        return _render("missing.html", request, status_code=404, job_id=job_id, detail=str(exc))
    plan = _plan(p, job_id)
    settings: list[list[tuple[str, Any]]] = []
    for index in range(len(view["stages"])):
        config = plan.stages[index].config if plan is not None and index < len(plan.stages) else {}
        settings.append([(k, config[k]) for k in SETTING_KEYS if config.get(k) not in (None, "")])
    return _render("job.html", request, job=view, settings=settings)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _render("login.html", request, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    settings: ApiSettings = request.app.state.api_settings
    form = parse_qs((await request.body())[:4096].decode(errors="replace"))
    given = (form.get("token") or [""])[0]
    token = settings.token.get_secret_value() if settings.token else None
    if token is None or not hmac.compare_digest(given.encode(), token.encode()):
        return _render("login.html", request, status_code=401, error="That is not this server's token.")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        cookie_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=30 * 24 * 3600,
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME)
    return response
