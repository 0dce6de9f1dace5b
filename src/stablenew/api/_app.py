"""``create_app``: the FastAPI application of ``stablenew serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from stablenew import Producer, __version__
from stablenew.errors import JobNotFound
from stablenew.jobs.connection import connect
from stablenew.settings import Settings

from ._auth import require_read
from ._console import router as console_router
from ._errors import install_error_handlers
from ._events import job_events
from ._files import output_path, thumbnail
from ._routes import JobId, ProducerDep, router
from ._settings import ApiSettings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: Settings | None = None,
    api_settings: ApiSettings | None = None,
    *,
    connection: redis.Redis | None = None,
    event_interval: float = 0.25,
) -> FastAPI:
    """The API and console for the Redis and output root of ``settings``.

    ``api_settings`` (default: from ``STABLENEW_API_*``) holds the token, public reads and CORS
    origins; ``connection`` replaces the one made from ``settings.redis_url``; ``event_interval`` is
    how often an event stream looks at its job.

    Raises:
        RedisUnavailable: no ``connection`` was given and Redis does not answer.
    """
    settings = settings or Settings()
    api_settings = api_settings or ApiSettings()
    if connection is None:
        connection = connect(settings.redis_url.get_secret_value())
    app = FastAPI(
        title="stablenew",
        version=__version__,
        summary="Submit, watch and control Stable Diffusion pipeline jobs",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_settings = api_settings
    app.state.producer = Producer(connection, settings)
    install_error_handlers(app)
    if api_settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=api_settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    app.include_router(router)

    @app.get(
        "/v1/jobs/{job_id}/events", dependencies=[Depends(require_read)], response_class=StreamingResponse
    )
    def events(job_id: JobId, request: Request, p: ProducerDep) -> StreamingResponse:
        """Server-Sent Events: the job's state at once, then each change, then ``end``."""
        p.status(job_id)  # an unknown job is a 404, not an empty stream
        return StreamingResponse(
            job_events(request, p, job_id, interval=event_interval),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/v1/jobs/{job_id}/outputs/{name}", dependencies=[Depends(require_read)], response_class=FileResponse
    )
    def output(
        job_id: JobId,
        name: Annotated[str, PathParam(max_length=255)],
        p: ProducerDep,
        thumb: Annotated[int | None, Query(ge=16, le=2048)] = None,
    ) -> Response:
        """One image the job made, by its file name; ``?thumb=256`` a thumbnail at most 256 px."""
        root = settings.output_dir
        path, record = output_path(root, p.status(job_id).to_dict(), name)
        if thumb is None:
            return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
        try:
            small = thumbnail(root, path, str(record.get("sha256") or ""), thumb)
        except OSError as exc:  # Pillow cannot read it (a damaged file)
            raise JobNotFound(f"no thumbnail of {name!r}: {exc}", job_id=job_id) from None
        cache = {"Cache-Control": "private, max-age=3600"}
        if isinstance(small, bytes):
            return Response(small, media_type="image/png", headers=cache)
        return FileResponse(small, media_type="image/png", headers=cache)

    app.include_router(console_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
