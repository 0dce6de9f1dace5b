"""stablenew's errors as HTTP answers, mapped once, like the CLI's exit codes.

==========================================  =====  ==========================
error                                       HTTP   CLI exit code
==========================================  =====  ==========================
JobNotFound                                 404    2
ConfigError, InvalidStagePlanError,         422    2
PlanVersionError
JobError (e.g. retry of a running job)      409    2
RedisUnavailable, a lost Redis connection   503    4
WebUIError                                  502    3
anything else (a bug)                       500    1 (no traceback is sent)
==========================================  =====  ==========================

A :class:`~stablenew.errors.ConfigError` answers with one entry per problem, naming the field as
the config wrote it, in the same words the CLI prints.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stablenew.errors import (
    ConfigError,
    InvalidStagePlanError,
    JobError,
    JobNotFound,
    PlanVersionError,
    RedisUnavailable,
    StableNewError,
    WebUIError,
)

log = logging.getLogger("stablenew.api")


def error_body(exc: StableNewError) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body for one of our errors."""
    if isinstance(exc, ConfigError):
        problems = [
            {"field": p.path, "message": p.message, "text": str(p)}
            | ({"value": p.value} if p.has_value and _is_json(p.value) else {})
            for p in exc.problems
        ]
        return 422, {"detail": str(exc).splitlines()[0], "problems": problems}
    if isinstance(exc, JobNotFound):
        return 404, {"detail": str(exc)}
    if isinstance(exc, InvalidStagePlanError | PlanVersionError):
        return 422, {"detail": str(exc), "problems": []}
    if isinstance(exc, JobError):
        return 409, {"detail": str(exc)}
    if isinstance(exc, RedisUnavailable):
        return 503, {"detail": str(exc)}
    if isinstance(exc, WebUIError):
        return 502, {"detail": str(exc)}
    return 500, {"detail": f"internal error: {type(exc).__name__}"}


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StableNewError)
    async def stablenew_error(request: Request, exc: StableNewError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def redis_lost(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"Redis connection lost: {exc}"}, status_code=503)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
