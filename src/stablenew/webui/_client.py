"""WebUIClient: the thin HTTP boundary to one AUTOMATIC1111 WebUI.

Each method is one A1111 or ADetailer route, and checks the shape of its answer. The calls themselves
(one request, its answer bounded in time and size, every ``requests`` error and non-2xx answer mapped to
our errors) are made by :class:`~stablenew.webui._transport.Transport`: nothing from ``requests`` leaks
out, and errors carry the route URL, never credentials. The client never retries: retry policy belongs to
the worker (``errors.is_transient``).

Timeouts are always a ``(connect, read)`` pair: ``(connect_timeout, read_timeout)`` for txt2img, img2img and
extras (A1111 answers only when the generation is done); ``(t, t)`` with ``t = connect_timeout`` for progress
and interrupt, so pollers never hang; ``(connect_timeout, min(read_timeout, 60))`` for lookups and ping.
The pair's sum is also the **deadline** of the whole call, headers and body, and :meth:`WebUIClient.abort`
cuts every call in flight at once. The decoded answer is bounded too: ``max_answer_bytes`` for a generation
(the executor derives it from the images the request asks for),
:data:`~stablenew.webui._transport.LOOKUP_ANSWER_BYTES` for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

import requests

from stablenew.errors import WebUIHTTPError, WebUIRejected

from ._responses import parse_info, require_base64
from ._transport import Transport

if TYPE_CHECKING:
    from stablenew.settings import Settings

_LOOKUP_READ_TIMEOUT = 60.0
GENERATION_ANSWER_BYTES = 512 * 1024 * 1024  # a generation call not told its own limit


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
        self._transport = Transport(self.base_url, self._auth, session=session, pool_maxsize=pool_maxsize)

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
        self._transport.abort()

    def close(self) -> None:
        """Close the pooled connections (a session passed in by the caller is left open)."""
        self._transport.close()

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
        url, body = self._transport.call(
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
        url, body = self._transport.call(
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
        url, body = self._transport.call("GET", "/sdapi/v1/progress?skip_current_image=true", (short, short))
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "progress response is not a JSON object", url=url)
        return body

    def interrupt(self) -> None:
        """POST ``/sdapi/v1/interrupt``: the running call then returns 200 with partial output."""
        self._transport.call(
            "POST", "/sdapi/v1/interrupt", (self._connect_timeout, self._connect_timeout), parse=False
        )

    def task_progress(self, task_id: str) -> dict[str, Any] | None:
        """POST ``/internal/progress`` for one task (a request's ``force_task_id``): ``active`` while it is the
        one generating, ``queued`` while it waits, ``completed`` once done. None where the route does not exist
        (A1111 started with ``--nowebui``): then no request can be told apart from another's."""
        short = (self._connect_timeout, self._connect_timeout)
        try:
            url, body = self._transport.call("POST", "/internal/progress", short, {"id_task": task_id})
        except WebUIRejected as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "task progress response is not a JSON object", url=url)
        return body

    def ping(self) -> None:
        """GET ``/sdapi/v1/memory``: a health probe that works under ``--nowebui`` too; raises on failure."""
        self._transport.call("GET", "/sdapi/v1/memory", self._lookup_timeout, parse=False)

    def sd_models(self) -> list[dict[str, Any]]:
        """GET ``/sdapi/v1/sd-models``: checkpoints, each with ``title`` and ``model_name``."""
        return self._get_list("/sdapi/v1/sd-models")

    def options(self) -> dict[str, Any]:
        """GET ``/sdapi/v1/options``: the WebUI's settings in force (``sd_model_checkpoint`` is the loaded one)."""
        url, body = self._transport.call("GET", "/sdapi/v1/options", self._lookup_timeout)
        if not isinstance(body, dict):
            raise WebUIHTTPError(200, "options response is not a JSON object", url=url)
        return body

    def loaded_checkpoint(self) -> str | None:
        """GET ``/sdapi/v1/options``: the ``sd_model_checkpoint`` the WebUI holds loaded (its title), if any."""
        url, body = self._transport.call("GET", "/sdapi/v1/options", self._lookup_timeout)
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
            url, body = self._transport.call("GET", "/adetailer/v1/version", self._lookup_timeout)
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
            url, body = self._transport.call("GET", "/adetailer/v1/ad_model", self._lookup_timeout)
        except WebUIRejected as exc:
            if exc.status == 404:
                raise WebUIRejected("ADetailer is not installed", status=404, url=exc.url) from exc
            raise
        models = body.get("ad_model") if isinstance(body, dict) else None
        if not isinstance(models, list) or not all(isinstance(name, str) for name in models):
            raise WebUIHTTPError(200, "ADetailer response has no 'ad_model' list of names", url=url)
        return models

    def _get_list(self, route: str) -> list[dict[str, Any]]:
        url, body = self._transport.call("GET", route, self._lookup_timeout)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise WebUIHTTPError(200, "response is not a JSON list of objects", url=url)
        return body


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
