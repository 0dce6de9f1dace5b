"""WebUIClient: the thin HTTP boundary to one AUTOMATIC1111 WebUI.

Every ``requests`` exception is translated once (:func:`~stablenew.webui._responses.translate_request_error`),
every non-2xx answer once (:func:`~stablenew.webui._responses.status_error`); nothing from ``requests`` leaks
out. Errors carry the route URL, never credentials. The client never retries: retry policy belongs to the
worker (``errors.is_transient``). Request bodies stream from :mod:`~stablenew.webui._request_body`; the error
mapping and the checks on each answer live in :mod:`~stablenew.webui._responses`.

Timeouts are always a ``(connect, read)`` pair: ``(connect_timeout, read_timeout)`` for txt2img, img2img and
extras (A1111 answers only when the generation is done); ``(t, t)`` with ``t = connect_timeout`` for progress
and interrupt, so pollers never hang; ``(connect_timeout, min(read_timeout, 60))`` for lookups and ping.
The pair's sum is also the **deadline** of the whole call, headers and body: an answer that drips in slower
than that is cut (:mod:`~stablenew.webui._bounded`), and :meth:`WebUIClient.abort` cuts every call in flight
at once. The decoded answer is bounded too: ``max_answer_bytes`` for a generation (the executor derives it
from the images the request asks for), :data:`LOOKUP_ANSWER_BYTES` for anything else; a gzip or deflate body
is inflated by us, never past that limit.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from stablenew.errors import WebUIError, WebUIHTTPError, WebUIRejected, WebUITimeout, WebUIUnavailable
from stablenew.webui._bounded import (
    AnswerTooLarge,
    CallGuard,
    CallRegistry,
    UnknownEncoding,
    guard_adapter,
    read_bounded,
)
from stablenew.webui._request_body import JsonBody
from stablenew.webui._responses import (
    html_answer,
    parse_info,
    require_base64,
    status_error,
    text_of,
    translate_request_error,
)

if TYPE_CHECKING:
    from stablenew.settings import Settings

_Timeout = tuple[float, float]
_LOOKUP_READ_TIMEOUT = 60.0
LOOKUP_ANSWER_BYTES = 16 * 1024 * 1024  # model lists, progress, versions: never near this
GENERATION_ANSWER_BYTES = 512 * 1024 * 1024  # a generation call not told its own limit
_ERROR_BODY_BYTES = 1024 * 1024  # an error page: only its start is ever shown


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
    (``pool_maxsize`` is then ignored and :meth:`close` leaves it open; its connections are not ours to cut,
    so its calls keep their size bound but not their deadline, and :meth:`abort` cannot reach them).
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
            adapter = guard_adapter(HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._calls = CallRegistry()

    @classmethod
    def from_settings(cls, settings: Settings, *, read_timeout: float | None = None) -> Self:
        """The client of ``settings.webui_url`` with its auth and timeouts.

        ``read_timeout`` caps the configured ``webui_read_timeout`` (the shorter one is used), for
        callers that only look things up and must not wait as long as a generation may take.
        """
        configured = settings.webui_read_timeout
        return cls(
            settings.webui_url,
            auth=settings.webui_basic_auth,
            connect_timeout=settings.webui_connect_timeout,
            read_timeout=configured if read_timeout is None else min(configured, read_timeout),
        )

    def __repr__(self) -> str:
        return f"WebUIClient({self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def abort(self) -> None:
        """Cut every call of this client in flight, at once (from another thread: the progress poller on a
        cancel). Each raises :class:`~stablenew.errors.WebUIUnavailable`; later calls are not affected."""
        self._calls.abort()

    def close(self) -> None:
        """Close the pooled connections (a session passed in by the caller is left open)."""
        if self._owns_session:
            self._session.close()

    def txt2img(
        self, payload: Mapping[str, Any], *, release_images: bool = False, max_answer_bytes: int | None = None
    ) -> GenerationResult:
        """POST ``/sdapi/v1/txt2img`` and wait for the images (up to ``read_timeout``).

        Raises:
            WebUIUnavailable, WebUITimeout: the request did not get an answer.
            WebUIRejected: a 4xx answer. WebUIHTTPError: a 3xx or 5xx answer, or an unusable 2xx body.

        ``release_images=True`` hands the request's images over: once encoded for sending, ``init_images`` /
        ``image`` in ``payload`` (a dict) are emptied, so a multi-MB image is not held while the answer
        downloads. The worker's executor uses it; callers that reuse the payload leave it off.

        ``max_answer_bytes`` bounds the decoded answer (default :data:`GENERATION_ANSWER_BYTES`); a larger
        one is a WebUIHTTPError, not read further.
        """
        return self._generate("/sdapi/v1/txt2img", payload, release_images, max_answer_bytes)

    def img2img(
        self, payload: Mapping[str, Any], *, release_images: bool = False, max_answer_bytes: int | None = None
    ) -> GenerationResult:
        """POST ``/sdapi/v1/img2img`` (also the ADetailer stage); raises as :meth:`txt2img` does."""
        return self._generate("/sdapi/v1/img2img", payload, release_images, max_answer_bytes)

    def extra_single_image(
        self, payload: Mapping[str, Any], *, release_images: bool = False, max_answer_bytes: int | None = None
    ) -> GenerationResult:
        """POST ``/sdapi/v1/extra-single-image`` (upscale): ``images`` holds the one image returned."""
        url, body = self._call(
            "POST",
            "/sdapi/v1/extra-single-image",
            self._generation_timeout,
            payload,
            release_images=release_images,
            limit=max_answer_bytes or GENERATION_ANSWER_BYTES,
        )
        image = body.get("image") if isinstance(body, dict) else None
        if not isinstance(image, str):
            raise WebUIHTTPError(200, "extras response has no 'image' string", url=url)
        if not image:  # like an empty images list from txt2img: no image this time, maybe the next
            raise WebUIHTTPError(200, "extra-single-image returned no image", url=url, transient=True)
        require_base64([image], url)
        html_info = body.get("html_info")
        return GenerationResult([image], {}, {}, html_info if isinstance(html_info, str) else None)

    def _generate(
        self, route: str, payload: Mapping[str, Any], release_images: bool, max_answer_bytes: int | None
    ) -> GenerationResult:
        url, body = self._call(
            "POST",
            route,
            self._generation_timeout,
            payload,
            release_images=release_images,
            limit=max_answer_bytes or GENERATION_ANSWER_BYTES,
        )
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise WebUIHTTPError(200, "response has no 'images' list of base64 strings", url=url)
        require_base64(images, url)
        parameters = body.get("parameters")
        info, parameters = parse_info(body.get("info")), parameters if isinstance(parameters, dict) else {}
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

    def task_progress(self, task_id: str) -> dict[str, Any] | None:
        """POST ``/internal/progress`` for one task (a request's ``force_task_id``): ``active`` while it is the
        one generating, ``queued`` while it waits, ``completed`` once done. None where the route does not exist
        (A1111 started with ``--nowebui``): then no request can be told apart from another's."""
        short = (self._connect_timeout, self._connect_timeout)
        try:
            url, body = self._call("POST", "/internal/progress", short, {"id_task": task_id})
        except WebUIRejected as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "task progress response is not a JSON object", url=url)
        return body

    def ping(self) -> None:
        """GET ``/sdapi/v1/memory``: a health probe that works under ``--nowebui`` too; raises on failure."""
        self._call("GET", "/sdapi/v1/memory", self._lookup_timeout, parse=False)

    def sd_models(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/sd-models``: checkpoints, each with ``title`` and ``model_name``."""
        return self._get_list("/sdapi/v1/sd-models")

    def options(self) -> dict[str, Any]:
        """GET ``/sdapi/v1/options``: the WebUI's settings in force (``sd_model_checkpoint`` is the loaded one)."""
        url, body = self._call("GET", "/sdapi/v1/options", self._lookup_timeout)
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "options response is not a JSON object", url=url)
        return body

    def loaded_checkpoint(self) -> str | None:
        """GET ``/sdapi/v1/options``: the ``sd_model_checkpoint`` the WebUI holds loaded (its title), if any."""
        url, body = self._call("GET", "/sdapi/v1/options", self._lookup_timeout)
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "options response is not a JSON object", url=url)
        name = body.get("sd_model_checkpoint")
        return name if isinstance(name, str) and name else None

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

    def script_info(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/script-info``: one entry per script and tab kind, with its declared ``args``."""
        return self._get_list("/sdapi/v1/script-info")

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
        limit: int = LOOKUP_ANSWER_BYTES,
    ) -> tuple[str, Any]:
        """Send one request; return the route URL and the parsed 2xx JSON body, or raise the mapped error.

        Images are the bulk of every request and answer (a 4096x4096 PNG is ~35 MB of base64), so neither
        is ever held as one more whole copy than needed: the request streams its base64 strings in slices
        (:class:`JsonBody`), and the answer is read into a single buffer that is released as it is parsed.
        """
        url = self.base_url + route
        seconds = timeout[0] + timeout[1]
        with self._calls.guarded(seconds) as guard:
            try:
                status, content_type, raw = self._send(
                    method, url, timeout, payload, parse, release_images, limit
                )
            except WebUIError:
                if guard.reason is None:
                    raise
                raise _cut(guard, url, seconds) from None
            if guard.reason is not None:  # cut while the body ended as if whole (no length given)
                raise _cut(guard, url, seconds)
        if raw is None:
            return url, None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WebUIHTTPError(status, f"response is not UTF-8 JSON: {text_of(raw)!r}", url=url) from None
        del raw
        try:
            return url, json.loads(text)
        except ValueError:
            page = html_answer(text.encode(), content_type, status)
            if page is not None:
                raise WebUIHTTPError(status, page, url=url) from None
            # JSON that starts as a JSON document but breaks off was cut short on the way: a retry
            # may get it whole. Anything else (an HTML page from a proxy) will come back the same.
            cut_short = text.lstrip()[:1] in ("{", "[")
            raise WebUIHTTPError(
                status, f"response is not JSON: {text_of(text.encode())!r}", url=url, transient=cut_short
            ) from None

    def _send(
        self,
        method: str,
        url: str,
        timeout: _Timeout,
        payload: Mapping[str, Any] | None,
        parse: bool,
        release_images: bool,
        limit: int,
    ) -> tuple[int, str, bytes | None]:
        """Send the request and read the answer's body within ``limit``: (status, content type, body).

        Raises:
            WebUIError: no answer, a non-2xx answer, or a body over ``limit`` or in an unknown encoding.
        """
        # gzip and deflate only: read_bounded inflates them itself, within the limit.
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        data: JsonBody | None = None
        if payload is not None:
            # Serialised here, not by requests: a payload bug raises TypeError/ValueError to the caller rather
            # than becoming a "WebUI unavailable" that the worker would retry.
            data = JsonBody(payload)
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
            raise translate_request_error(exc, url) from exc
        del data
        status, content_type = response.status_code, response.headers.get("Content-Type", "")
        try:
            ok = 200 <= status < 300
            if ok and not parse:
                return status, content_type, None
            try:
                raw = read_bounded(response.raw, limit if ok else _ERROR_BODY_BYTES)
            except AnswerTooLarge as exc:
                if not ok:
                    raw = b""  # an error page that large: its status still says what happened
                else:
                    raise WebUIHTTPError(status, f"answer is too large: {exc}", url=url) from None
            except UnknownEncoding as exc:
                detail = f"answer has Content-Encoding {text_of(str(exc).encode())!r}, not gzip or deflate"
                raise WebUIHTTPError(status, detail, url=url) from None
            except zlib.error as exc:
                raise WebUIHTTPError(status, f"compressed answer does not inflate: {exc}", url=url) from None
            except (requests.RequestException, Urllib3HTTPError, OSError) as exc:
                raise translate_request_error(exc, url) from exc
            if not ok:
                response._content = raw  # status_error reads .content: the bounded body, not a second read
                raise status_error(response, url, self._auth[0] if self._auth and self._auth[1] else None)
        finally:
            response.close()
        del response  # with it the request object, which would keep the sent body's parts alive
        return status, content_type, raw


def _cut(guard: CallGuard, url: str, seconds: float) -> WebUIError:
    """The error of a call its guard cut: past its deadline, or aborted by :meth:`WebUIClient.abort`."""
    if guard.reason == "deadline":
        return WebUITimeout(
            f"the WebUI did not finish answering {url} within {seconds:g} s (the call's deadline)", url=url
        )
    return WebUIUnavailable(f"the call to {url} was aborted while it waited for the answer", url=url)


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
