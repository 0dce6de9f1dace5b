"""Reading what the WebUI sent back: failures mapped onto the error tree, answers checked before use.

Every ``requests`` exception is translated here once (:func:`translate_request_error`), every non-2xx answer
once (:func:`status_error`); :class:`~stablenew.webui._client.WebUIClient` lets nothing from ``requests`` leak
out. Messages are clipped, so a large error page never floods a log line.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any

import requests
from requests import exceptions as req_exc
from urllib3.exceptions import ReadTimeoutError

from stablenew.errors import WebUIError, WebUIHTTPError, WebUIRejected, WebUITimeout, WebUIUnavailable

_TEXT_LIMIT = 300
_DETAIL_LIMIT = 1000
_B64_CHECK_CHARS = 4096  # a multiple of 4: the checked prefix is whole base64 quanta
_DATA_URL_PREFIX = re.compile(r"data:image/[\w.+-]+;base64,")
_URL_ERRORS = (req_exc.InvalidURL, req_exc.MissingSchema, req_exc.InvalidSchema, req_exc.URLRequired)
_URL_HINT = "check STABLENEW_WEBUI_URL (expected http://host:port)"


def translate_request_error(exc: Exception, url: str) -> WebUIError:
    """Map a ``requests`` exception (or a stray urllib3 one) to our tree: the only place this happens.

    No usable answer exists, so none of these is a WebUIHTTPError. ConnectTimeout is both a ConnectionError
    and a Timeout: checked first, it means the host never accepted the connection. A read timeout while the
    body streams in arrives as a ConnectionError wrapping urllib3's ReadTimeoutError: a timeout too. A bad URL
    or a redirect loop, like a DNS failure, means there is no WebUI at the configured address.
    """
    reason = _reason(exc)
    cause = exc.args[0] if exc.args else None
    read_timeout = isinstance(exc, ReadTimeoutError) or isinstance(cause, ReadTimeoutError)
    if isinstance(exc, requests.ConnectTimeout):
        return WebUIUnavailable(f"the WebUI did not accept a connection to {url} in time: {reason}", url=url)
    if isinstance(exc, requests.Timeout) or read_timeout:
        return WebUITimeout(f"the WebUI did not answer {url} within the read timeout: {reason}", url=url)
    if isinstance(exc, _URL_ERRORS):
        return WebUIUnavailable(f"invalid WebUI URL {url!r}: {reason}; {_URL_HINT}", url=url)
    if isinstance(exc, requests.TooManyRedirects):
        return WebUIUnavailable(f"{url} redirects in a loop: {reason}; {_URL_HINT}", url=url)
    if isinstance(exc, req_exc.ChunkedEncodingError | req_exc.ContentDecodingError):
        return WebUIUnavailable(f"the connection broke while reading {url}: {reason}", url=url)
    return WebUIUnavailable(f"cannot reach the WebUI at {url}: {reason}", url=url)


def _reason(exc: Exception) -> str:
    cause: object = exc.args[0] if exc.args else exc
    cause = getattr(cause, "reason", None) or cause  # urllib3's MaxRetryError wraps the real cause
    return _clip(str(cause) or type(exc).__name__, _TEXT_LIMIT)


# A1111 answers 500 for every exception it does not map (modules/api/api.py::api_middleware.handle_exception:
# {"error": class name, "detail", "body", "errors": str(exception)}), also for requests that will fail the same
# way each time they are sent. These are told apart by their words (A1111 v1.10.1; docs/webui-api.md, "Errors"):
# (error class or None for any, pattern of the errors/detail text, where A1111 raises it).
PERMANENT_500S: tuple[tuple[str | None, re.Pattern[str], str], ...] = (
    (None, re.compile(r"\bInvalid encoded image\b"), "modules/api/api.py::decode_base64_to_image"),
    (
        None,
        re.compile(r"\bCould not find checkpoint with name\b"),
        "modules/processing.py::process_images_inner, StableDiffusionProcessingTxt2Img.init",
    ),
    (
        None,
        re.compile(r"\bcould not find upscaler named\b"),
        "modules/processing.py::StableDiffusionProcessingTxt2Img.init; "
        "scripts/postprocessing_upscale.py::ScriptPostprocessingUpscale.process",
    ),
    (None, re.compile(r"\bbad sampler name: "), "modules/sd_samplers.py::create_sampler"),
    # an override_settings key that is no option: str(KeyError) is the quoted key alone
    ("KeyError", re.compile(r"^'[^']*'$"), "modules/options.py::Options.set"),
    (None, re.compile(r"^model '.*' not found$"), "modules/api/api.py::Api.set_config"),
)


def is_permanent_500(content: bytes) -> bool:
    """Whether an A1111 error answer says something a retry of the same request cannot change."""
    try:
        body = json.loads(content)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    error = body.get("error")
    texts = [t for t in (body.get("errors"), body.get("detail")) if isinstance(t, str) and t]
    return any(
        (kind is None or kind == error) and any(pattern.search(text) for text in texts)
        for kind, pattern, _ in PERMANENT_500S
    )


def status_error(response: requests.Response, url: str, user: str | None) -> WebUIError:
    """Map a non-2xx answer: 4xx (401 included) is a permanent rejection, 3xx and 5xx are HTTP errors.

    A 5xx is transient unless its words are those of an error the same request meets every time
    (:data:`PERMANENT_500S`): that one fails at once, with no retry of any kind.

    A 401 names the user only when a password was given too: ``STABLENEW_WEBUI_AUTH`` set to a bare
    password (no ``user:``) reads as a user name, which must not be shown."""
    status = response.status_code
    if status == 401:
        if user is None:
            detail = "the WebUI requires HTTP Basic authentication: set STABLENEW_WEBUI_AUTH=user:password"
        else:
            detail = f"the WebUI rejected the credentials of user {user!r}: check STABLENEW_WEBUI_AUTH"
        return WebUIRejected(detail, status=status, url=url)
    if 300 <= status < 400:
        where = response.headers.get("Location", "?")
        return WebUIHTTPError(status, f"unexpected redirect to {where}; {_URL_HINT}", url=url)
    detail = html_answer(response.content, response.headers.get("Content-Type", ""), status) or _error_detail(
        response.content, response.reason or "no reason given"
    )
    if 400 <= status < 500:
        return WebUIRejected(detail, status=status, url=url)
    permanent = status >= 500 and is_permanent_500(response.content)
    return WebUIHTTPError(status, detail, url=url, transient=False if permanent else None)


def html_answer(content: bytes, content_type: str, status: int) -> str | None:
    """What to say when the WebUI URL answered with a web page (the Gradio UI, a proxy's error page)
    instead of the JSON API: who answered and what was expected, never the raw HTML. ``None`` when
    the answer is not HTML."""
    head = content[:65536].decode("utf-8", "replace")
    if "html" not in content_type.lower() and not re.match(r"\s*<(!doctype\s+html|html)\b", head, re.I):
        return None
    found = re.search(r"<title[^>]*>(.*?)</title>", head, re.I | re.S)
    title = " ".join(html.unescape(found.group(1)).split()) if found else ""
    page = f' (page title "{_clip(title, 80)}")' if title else ""
    kinds = [part.split(";")[0].strip() for part in content_type.split(",") if "html" in part.lower()]
    kind = kinds[0] if kinds else "HTML"
    return (
        f"answered HTTP {status} with a web page, {kind}{page}, where the A1111 JSON API was expected: "
        "is the WebUI started with --api (or --nowebui), and does STABLENEW_WEBUI_URL point at it "
        "rather than at a proxy or another service?"
    )


def _error_detail(content: bytes, reason: str) -> str:
    """The human message of an A1111 error body, whichever of its shapes it has."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail, errors, error = body.get("detail"), body.get("errors"), body.get("error")
        if isinstance(detail, list) and detail:  # FastAPI validation error (422)
            return _clip("; ".join(_validation_problem(item) for item in detail), _DETAIL_LIMIT)
        message = next((text for text in (errors, detail) if isinstance(text, str) and text), None)
        if message is not None:
            # "HTTPException" adds nothing to "404: Init image not found"; a real class name does.
            if isinstance(error, str) and error and error != "HTTPException":
                message = f"{error}: {message}"
            return _clip(message, _DETAIL_LIMIT)
        if isinstance(error, str) and error:
            return error
    return text_of(content) or f"empty body ({reason})"


def _validation_problem(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
    message = str(item.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


def parse_info(info: object) -> dict[str, Any]:
    """A1111 sends ``info`` as a JSON string; an unparsable one is kept raw: it must not fail a stage."""
    if info is None or isinstance(info, dict):
        return info or {}
    try:
        parsed = json.loads(info) if isinstance(info, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"raw": info}


def require_base64(images: list[str], url: str) -> None:
    """Raise WebUIHTTPError(200) unless each image looks like base64 (a ``data:`` prefix is allowed).

    Trade-off: decoding a whole 10+ MB image would cost a full-size bytes copy and real CPU per stage, only to
    throw the bytes away (images are stored as sent). Instead the length must be a positive multiple of 4
    (padded base64 always is), and the first few KB and the last quantum must decode strictly. That catches
    what goes wrong in practice (an error page, a path or a message in place of the image, a damaged tail);
    corruption deep inside is left to whoever finally decodes the image.
    """
    for index, text in enumerate(images):
        match = _DATA_URL_PREFIX.match(text)
        start = match.end() if match else 0
        try:
            if len(text) == start or (len(text) - start) % 4:
                raise ValueError("length is not a positive multiple of 4")
            base64.b64decode(text[start : start + _B64_CHECK_CHARS], validate=True)
            base64.b64decode(text[-4:], validate=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            detail = f"image {index} is not valid base64 ({exc}; starts {_clip(text, 40)!r})"
            raise WebUIHTTPError(200, detail, url=url) from None


def text_of(content: bytes) -> str:
    # Only the head is decoded: an error page may be large and only its start is shown.
    return _clip(content[: _TEXT_LIMIT * 4].decode("utf-8", "replace").strip(), _TEXT_LIMIT)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
