"""WebUIClient: the thin HTTP boundary to one AUTOMATIC1111 WebUI.

Every ``requests`` exception is translated once (:func:`_translate_request_error`), every non-2xx answer once
(:func:`_status_error`); nothing from ``requests`` leaks out. Errors carry the route URL, never credentials.
The client never retries: retry policy belongs to the worker (``errors.is_transient``).

Timeouts are always a ``(connect, read)`` pair: ``(connect_timeout, read_timeout)`` for txt2img, img2img and
extras (A1111 answers only when the generation is done); ``(t, t)`` with ``t = connect_timeout`` for progress
and interrupt, so pollers never hang; ``(connect_timeout, min(read_timeout, 60))`` for lookups and ping.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote

import requests
from requests import exceptions as req_exc
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import ReadTimeoutError

from stablenew.errors import WebUIError, WebUIHTTPError, WebUIRejected, WebUITimeout, WebUIUnavailable

_Timeout = tuple[float, float]
_LOOKUP_READ_TIMEOUT = 60.0
_TEXT_LIMIT = 300
_DETAIL_LIMIT = 1000
_B64_CHECK_CHARS = 4096  # a multiple of 4: the checked prefix is whole base64 quanta
_DATA_URL_PREFIX = re.compile(r"data:image/[\w.+-]+;base64,")
_URL_ERRORS = (req_exc.InvalidURL, req_exc.MissingSchema, req_exc.InvalidSchema, req_exc.URLRequired)
_URL_HINT = "check STABLENEW_WEBUI_URL (expected http://host:port)"


@dataclass(frozen=True)
class GenerationResult:
    """What one generation call returned, images untouched.

    ``images`` are the base64 strings exactly as A1111 sent them (never decoded or re-encoded). ``info`` is
    A1111's ``info`` JSON string parsed (``{"raw": text}`` if it does not parse), ``parameters`` the request
    echo; both are ``{}`` for extras. ``html_info`` is set by extras only.
    """

    images: list[str]
    info: dict[str, Any]
    parameters: dict[str, Any]
    html_info: str | None = None

    def __repr__(self) -> str:  # never dump megabytes of base64 into a log line
        sizes = ", ".join(f"<{len(image)} chars>" for image in self.images)
        return (
            f"GenerationResult(images=[{sizes}], info_keys={list(self.info)}, html_info={self.html_info!r})"
        )


class WebUIClient:
    """A typed client for the A1111 and ADetailer HTTP API of one WebUI.

    ``base_url`` may end with a slash or not and may carry ``user:pass@``: such credentials move to ``auth``
    (an explicit ``auth`` wins) and never appear in ``base_url``, a repr or an error. All calls share one
    pooled session of up to ``pool_maxsize`` connections, so a generation and a progress poller may run in two
    threads at once. A ``session`` passed in is used as it is: its adapters and lifetime stay the caller's
    (``pool_maxsize`` is then ignored and :meth:`close` leaves it open).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 1800.0,
        session: requests.Session | None = None,
        pool_maxsize: int = 4,
    ) -> None:
        self.base_url, url_auth = _split_credentials(base_url)
        self._auth = auth if auth is not None else url_auth
        self._connect_timeout = connect_timeout
        self._generation_timeout = (connect_timeout, read_timeout)
        self._lookup_timeout = (connect_timeout, min(read_timeout, _LOOKUP_READ_TIMEOUT))
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session

    def __repr__(self) -> str:
        return f"WebUIClient({self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (a session passed in by the caller is left open)."""
        if self._owns_session:
            self._session.close()

    def txt2img(self, payload: Mapping[str, Any], *, release_images: bool = False) -> GenerationResult:
        """POST ``/sdapi/v1/txt2img`` and wait for the images (up to ``read_timeout``).

        Raises:
            WebUIUnavailable, WebUITimeout: the request did not get an answer.
            WebUIRejected: a 4xx answer. WebUIHTTPError: a 3xx or 5xx answer, or an unusable 2xx body.

        ``release_images=True`` hands the request's images over: once encoded for sending, ``init_images`` /
        ``image`` in ``payload`` (a dict) are emptied, so a multi-MB image is not held while the answer
        downloads. The worker's executor uses it; callers that reuse the payload leave it off.
        """
        return self._generate("/sdapi/v1/txt2img", payload, release_images)

    def img2img(self, payload: Mapping[str, Any], *, release_images: bool = False) -> GenerationResult:
        """POST ``/sdapi/v1/img2img`` (also the ADetailer stage); raises as :meth:`txt2img` does."""
        return self._generate("/sdapi/v1/img2img", payload, release_images)

    def extra_single_image(
        self, payload: Mapping[str, Any], *, release_images: bool = False
    ) -> GenerationResult:
        """POST ``/sdapi/v1/extra-single-image`` (upscale): ``images`` holds the one image returned."""
        url, body = self._call(
            "POST",
            "/sdapi/v1/extra-single-image",
            self._generation_timeout,
            payload,
            release_images=release_images,
        )
        image = body.get("image") if isinstance(body, dict) else None
        if not isinstance(image, str):
            raise WebUIHTTPError(200, "extras response has no 'image' string", url=url)
        if not image:  # like an empty images list from txt2img: no image this time, maybe the next
            raise WebUIHTTPError(200, "extra-single-image returned no image", url=url, transient=True)
        _require_base64([image], url)
        html_info = body.get("html_info")
        return GenerationResult([image], {}, {}, html_info if isinstance(html_info, str) else None)

    def _generate(self, route: str, payload: Mapping[str, Any], release_images: bool) -> GenerationResult:
        url, body = self._call(
            "POST", route, self._generation_timeout, payload, release_images=release_images
        )
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise WebUIHTTPError(200, "response has no 'images' list of base64 strings", url=url)
        _require_base64(images, url)
        parameters = body.get("parameters")
        info, parameters = _parse_info(body.get("info")), parameters if isinstance(parameters, dict) else {}
        return GenerationResult(images, info, parameters)

    def progress(self, *, timeout: float | None = None) -> dict[str, Any]:
        """GET ``/sdapi/v1/progress?skip_current_image=true``: the WebUI's global progress, short timeout."""
        short = timeout if timeout is not None else self._connect_timeout
        url, body = self._call("GET", "/sdapi/v1/progress?skip_current_image=true", (short, short))
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "progress response is not a JSON object", url=url)
        return body

    def interrupt(self) -> None:
        """POST ``/sdapi/v1/interrupt``: the running call then returns 200 with partial output."""
        self._call("POST", "/sdapi/v1/interrupt", (self._connect_timeout, self._connect_timeout), parse=False)

    def ping(self) -> None:
        """GET ``/sdapi/v1/memory``: a health probe that works under ``--nowebui`` too; raises on failure."""
        self._call("GET", "/sdapi/v1/memory", self._lookup_timeout, parse=False)

    def sd_models(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/sd-models``: checkpoints, each with ``title`` and ``model_name``."""
        return self._get_list("/sdapi/v1/sd-models")

    def sd_vae(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/sd-vae``: VAE files, each with ``model_name`` (the ``sd_vae`` value) and ``filename``."""
        return self._get_list("/sdapi/v1/sd-vae")

    def samplers(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/samplers``."""
        return self._get_list("/sdapi/v1/samplers")

    def schedulers(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/schedulers``."""
        return self._get_list("/sdapi/v1/schedulers")

    def upscalers(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/upscalers``."""
        return self._get_list("/sdapi/v1/upscalers")

    def latent_upscale_modes(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/latent-upscale-modes``."""
        return self._get_list("/sdapi/v1/latent-upscale-modes")

    def adetailer_version(self) -> str | None:
        """GET ``/adetailer/v1/version``; ``None`` when ADetailer is not installed (404)."""
        try:
            url, body = self._call("GET", "/adetailer/v1/version", self._lookup_timeout)
        except WebUIRejected as exc:
            if exc.status == 404:
                return None
            raise
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str):
            raise WebUIHTTPError(200, "ADetailer version response has no 'version' string", url=url)
        return version

    def adetailer_models(self) -> list[str]:
        """GET ``/adetailer/v1/ad_model``: detector names; WebUIRejected if ADetailer is not installed."""
        try:
            url, body = self._call("GET", "/adetailer/v1/ad_model", self._lookup_timeout)
        except WebUIRejected as exc:
            if exc.status == 404:
                raise WebUIRejected("ADetailer is not installed", status=404, url=exc.url) from exc
            raise
        models = body.get("ad_model") if isinstance(body, dict) else None
        if not isinstance(models, list) or not all(isinstance(name, str) for name in models):
            raise WebUIHTTPError(200, "ADetailer response has no 'ad_model' list of names", url=url)
        return models

    def _get_list(self, route: str) -> list[dict[str, Any]]:
        url, body = self._call("GET", route, self._lookup_timeout)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise WebUIHTTPError(200, "response is not a JSON list of objects", url=url)
        return body

    def _call(
        self,
        method: str,
        route: str,
        timeout: _Timeout,
        payload: Mapping[str, Any] | None = None,
        parse: bool = True,
        *,
        release_images: bool = False,
    ) -> tuple[str, Any]:
        """Send one request; return the route URL and the parsed 2xx JSON body, or raise the mapped error.

        Images are the bulk of every request and answer (a 4096x4096 PNG is ~35 MB of base64), so neither
        is ever held as one more whole copy than needed: the request streams its base64 strings in slices
        (:class:`_JsonBody`), and the answer is read into a single buffer that is released as it is parsed.
        """
        url = self.base_url + route
        headers = {"Accept": "application/json"}
        data: _JsonBody | None = None
        if payload is not None:
            # Serialised here, not by requests: a payload bug raises TypeError/ValueError to the caller rather
            # than becoming a "WebUI unavailable" that the worker would retry.
            data = _JsonBody(payload)
            headers["Content-Type"] = "application/json"
            if release_images and isinstance(payload, dict):
                for key, empty in (("init_images", []), ("image", "")):
                    if key in payload:
                        payload[key] = empty
        try:
            # Redirects are not followed: requests would turn a redirected POST into a payload-less GET.
            response = self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                auth=self._auth,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            )
        except (requests.RequestException, Urllib3HTTPError) as exc:
            raise _translate_request_error(exc, url) from exc
        del data
        try:
            if not 200 <= response.status_code < 300:
                raise _status_error(response, url, self._auth[0] if self._auth and self._auth[1] else None)
            if not parse:
                return url, None
            try:
                raw = response.raw.read(decode_content=True)
            except (requests.RequestException, Urllib3HTTPError, OSError) as exc:
                raise _translate_request_error(exc, url) from exc
        finally:
            response.close()
        status = response.status_code
        del response  # with it the request object, which would keep the sent body's parts alive
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WebUIHTTPError(status, f"response is not UTF-8 JSON: {_text_of(raw)!r}", url=url) from None
        del raw
        try:
            return url, json.loads(text)
        except ValueError:
            # JSON that starts as a JSON document but breaks off was cut short on the way: a retry
            # may get it whole. Anything else (an HTML page from a proxy) will come back the same.
            cut_short = text.lstrip()[:1] in ("{", "[")
            raise WebUIHTTPError(
                status, f"response is not JSON: {_text_of(text.encode())!r}", url=url, transient=cut_short
            ) from None


_SLICE_CHARS = 1 << 20
_INLINE_LIMIT = 1 << 16


class _JsonBody:
    """A JSON request body whose large base64 strings are sent in slices, never copied whole.

    ``json.dumps`` of a request holding a 35 MB image would build a 35 MB str and then 35 MB of bytes. Here
    the big strings (``init_images``, ``image``) are replaced by unique markers, the small rest is dumped as
    usual, and the images are spliced back in at send time, 1 MiB at a time. requests sends an iterable with
    ``__len__`` with a Content-Length, like any body. Strings that are not plain base64 are left to
    ``json.dumps`` (which would escape them) so the output is always valid JSON.
    """

    def __init__(self, payload: Mapping[str, Any]) -> None:
        body = dict(payload)
        token = uuid.uuid4().hex
        images: list[str] = []

        def mark(value: Any) -> Any:
            if isinstance(value, str) and len(value) > _INLINE_LIMIT and _is_plain_ascii(value):
                images.append(value)
                return f"\x00{token}{len(images) - 1}\x00"
            return value

        if isinstance(body.get("init_images"), list):
            body["init_images"] = [mark(v) for v in body["init_images"]]
        if "image" in body:
            body["image"] = mark(body["image"])
        text = json.dumps(body, allow_nan=False)
        parts: list[bytes | str] = []
        for index, image in enumerate(images):
            head, found, text = text.partition(f'"\\u0000{token}{index}\\u0000"')
            assert found, "image marker lost"
            parts += [head.encode() + b'"', image, b'"']
        parts.append(text.encode())
        self._parts = parts
        self._length = sum(len(p) for p in parts)  # base64 is ASCII: one byte per character

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []  # single use: each part is released once sent
        parts.reverse()
        while parts:
            part = parts.pop()
            if isinstance(part, bytes):
                yield part
                continue
            for start in range(0, len(part), _SLICE_CHARS):
                yield part[start : start + _SLICE_CHARS].encode("ascii")
            del part


def _is_plain_ascii(value: str) -> bool:
    """True when json.dumps would copy ``value`` unchanged, checked at C speed (``isascii`` is a flag).

    Quote, backslash and line breaks are looked for; other control characters are not (a full scan costs
    ~0.5 s at 35 MB): base64 never holds them, and if one did, the WebUI would refuse the body loudly (422),
    which is the right outcome for an image that is not base64.
    """
    return value.isascii() and not any(ch in value for ch in ('"', "\\", "\n", "\r"))


def _translate_request_error(exc: Exception, url: str) -> WebUIError:
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


def _status_error(response: requests.Response, url: str, user: str | None) -> WebUIError:
    """Map a non-2xx answer: 4xx (401 included) is a permanent rejection, 3xx and 5xx are HTTP errors.

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
    detail = _error_detail(response.content, response.reason or "no reason given")
    if 400 <= status < 500:
        return WebUIRejected(detail, status=status, url=url)
    return WebUIHTTPError(status, detail, url=url)


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
    return _text_of(content) or f"empty body ({reason})"


def _validation_problem(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
    message = str(item.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


def _parse_info(info: object) -> dict[str, Any]:
    """A1111 sends ``info`` as a JSON string; an unparsable one is kept raw: it must not fail a stage."""
    if info is None or isinstance(info, dict):
        return info or {}
    try:
        parsed = json.loads(info) if isinstance(info, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"raw": info}


def _require_base64(images: list[str], url: str) -> None:
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


def _split_credentials(base_url: str) -> tuple[str, tuple[str, str] | None]:
    """Return the base URL without ``user:pass@`` and trailing slashes, plus those credentials if any.

    Split by hand, not with urlsplit, which raises on some malformed URLs: even then the password must go.
    The user info ends at the last ``@`` (as :func:`stablenew.settings.redact_url` reads it), so a password
    holding an unencoded ``/``, ``?``, ``#`` or ``@`` is still taken whole rather than left in the URL,
    where every error message and the worker's inventory key would show it.
    """
    scheme, sep, rest = base_url.strip().rstrip("/").partition("://")
    userinfo, at, location = rest.rpartition("@")
    if not (sep and at):
        return base_url.strip().rstrip("/"), None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{location}", (unquote(user), unquote(password))


def _text_of(content: bytes) -> str:
    # Only the head is decoded: an error page may be large and only its start is shown.
    return _clip(content[: _TEXT_LIMIT * 4].decode("utf-8", "replace").strip(), _TEXT_LIMIT)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["GenerationResult", "WebUIClient"]
