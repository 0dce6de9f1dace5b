"""Bearer-token checks, and the console's cookie.

A script sends ``Authorization: Bearer <STABLENEW_API_TOKEN>``. A browser on the console logs in
once (``/login``) and gets an HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never
the token itself). The cookie is enough for reads; a change made with the cookie must also carry
the ``X-StableNew-Console`` header, which a cross-site form cannot send and a cross-site script can
only send after a CORS preflight the server refuses.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

from ._settings import ApiSettings

COOKIE_NAME = "stablenew_console"
CONSOLE_HEADER = "X-StableNew-Console"


def cookie_value(token: str) -> str:
    """What the console cookie holds for ``token``: a keyed digest, useless as a bearer token."""
    return hmac.new(token.encode(), b"stablenew console session", hashlib.sha256).hexdigest()


def _bearer_ok(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _cookie_ok(request: Request, token: str) -> bool:
    given = request.cookies.get(COOKIE_NAME, "")
    return hmac.compare_digest(given.encode(), cookie_value(token).encode())


def is_authorized(request: Request, settings: ApiSettings, *, write: bool) -> bool:
    """Whether ``request`` may read (``write=False``) or change things."""
    if not write and settings.public_read:
        return True
    if settings.token is None:
        return False
    token = settings.token.get_secret_value()
    if _bearer_ok(request, token):
        return True
    if not _cookie_ok(request, token):
        return False
    return not write or CONSOLE_HEADER.lower() in request.headers


def has_credentials(request: Request, settings: ApiSettings) -> bool:
    """Whether ``request`` carries the token or the console cookie (what the console needs to
    offer its buttons; the change itself is checked again when the button is used)."""
    if settings.token is None:
        return False
    token = settings.token.get_secret_value()
    return _bearer_ok(request, token) or _cookie_ok(request, token)


def _check(request: Request, *, write: bool) -> None:
    settings: ApiSettings = request.app.state.api_settings
    if is_authorized(request, settings, write=write):
        return
    if settings.token is None:
        detail = "this server has no STABLENEW_API_TOKEN set: it allows public reads only"
    else:
        detail = "missing or wrong bearer token (Authorization: Bearer <STABLENEW_API_TOKEN>)"
    raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def require_read(request: Request) -> None:
    """FastAPI dependency: the request may read."""
    _check(request, write=False)


def require_write(request: Request) -> None:
    """FastAPI dependency: the request may change jobs or queues."""
    _check(request, write=True)
