"""One call to a WebUI: the request sent, its answer bounded in time and size, its errors mapped.

Every ``requests`` exception is translated once (:func:`~stablenew.webui._responses.translate_request_error`),
every non-2xx answer once (:func:`~stablenew.webui._responses.status_error`); nothing from ``requests`` leaks
out. Errors carry the route URL, never credentials. Request bodies stream from
:mod:`~stablenew.webui._request_body`; the error mapping and the checks on each answer live in
:mod:`~stablenew.webui._responses`.

A call's ``(connect, read)`` timeout pair's sum is also the **deadline** of the whole call, headers and body:
an answer that drips in slower than that is cut (:mod:`~stablenew.webui._bounded`), and
:meth:`Transport.abort` cuts every call in flight at once. The decoded answer is bounded too: by the
caller's ``limit`` (the client gives a generation its own), :data:`LOOKUP_ANSWER_BYTES` by default; a gzip
or deflate body is inflated by us, never past that limit.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from stablenew.errors import WebUIError, WebUIHTTPError, WebUITimeout, WebUIUnavailable

from ._bounded import (
    AnswerTooLarge,
    CallGuard,
    CallRegistry,
    UnknownEncoding,
    guard_adapter,
    read_bounded,
)
from ._request_body import JsonBody
from ._responses import html_answer, status_error, text_of, translate_request_error

_Timeout = tuple[float, float]
LOOKUP_ANSWER_BYTES = 16 * 1024 * 1024  # model lists, progress, versions: never near this
_ERROR_BODY_BYTES = 1024 * 1024  # an error page: only its start is ever shown


class Transport:
    """The HTTP calls to one WebUI, over one pooled session of up to ``pool_maxsize`` connections, or over
    the ``session`` passed in, which stays the caller's (see :class:`~stablenew.webui._client.WebUIClient`).
    ``base_url`` carries no credentials: ``auth`` does."""

    def __init__(
        self,
        base_url: str,
        auth: tuple[str, str] | None,
        *,
        session: requests.Session | None = None,
        pool_maxsize: int = 4,
    ) -> None:
        self.base_url = base_url
        self._auth = auth
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = guard_adapter(HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._calls = CallRegistry()

    def abort(self) -> None:
        """Cut every call in flight, at once; each raises :class:`~stablenew.errors.WebUIUnavailable`."""
        self._calls.abort()

    def close(self) -> None:
        """Close the pooled connections (a session passed in by the caller is left open)."""
        if self._owns_session:
            self._session.close()

    def call(
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
