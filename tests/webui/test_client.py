"""WebUIClient against a real local HTTP server; only the requests edge is faked, to inject its errors."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from ports import free_port
from stablenew.errors import (
    WebUIError,
    WebUIHTTPError,
    WebUIRejected,
    WebUITimeout,
    WebUIUnavailable,
    is_permanent,
)
from stablenew.settings import Settings
from stablenew.webui import GenerationResult, ImageBytes, WebUIClient

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
BIG_IMAGE = base64.b64encode(os.urandom(300_000)).decode()  # far longer than the prefix the client checks


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> sent as is
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class FakeWebUI:
    """A real HTTP/1.1 keep-alive server; each test sets the reply of each route."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()  # wakes delayed handlers at teardown
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, route: str, status: int = 200, body: Any = None, **kwargs: Any) -> None:
        self.replies[route] = Reply(status, body, **kwargs)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeWebUI

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (read timeout) makes the late write fail: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def do_GET(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fake.seen.append(Seen(self.command, self.path, dict(self.headers), body, self.client_address[1]))
        reply = fake.replies.get(f"{self.command} {self.path}", Reply(404, {"detail": "Not Found"}))
        if reply.delay:
            fake.release.wait(reply.delay)
        content = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webui() -> Iterator[FakeWebUI]:
    fake = FakeWebUI()
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def client(webui: FakeWebUI) -> Iterator[WebUIClient]:
    with WebUIClient(webui.url, connect_timeout=1.0, read_timeout=2.0) as c:
        yield c


def a1111_generation(images: list[str], info: Any = '{"seed": 1234, "all_seeds": [1234]}') -> dict[str, Any]:
    return {"images": images, "parameters": {"prompt": "a cat"}, "info": info}


# -- routes, auth, pooling ----------------------------------------------------------------------------------


def test_base_url_with_or_without_trailing_slash_hits_the_same_route(webui: FakeWebUI) -> None:
    webui.reply("GET /sdapi/v1/samplers", body=[{"name": "Euler"}])
    for base in (webui.url, webui.url + "/", webui.url + "//"):
        with WebUIClient(base) as c:
            assert c.base_url == webui.url
            assert c.samplers() == [{"name": "Euler"}]
    assert [s.path for s in webui.seen] == ["/sdapi/v1/samplers"] * 3


def test_basic_auth_and_accept_json_headers_are_sent(webui: FakeWebUI) -> None:
    webui.reply("GET /sdapi/v1/memory", body={"ram": {}})
    with WebUIClient(webui.url, auth=("alice", "s3cret")) as c:
        c.ping()
    headers = webui.seen[0].headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert headers["Accept"] == "application/json"


def test_from_settings_uses_the_url_auth_and_read_timeout_of_the_settings(webui: FakeWebUI) -> None:
    webui.reply("GET /sdapi/v1/memory", body={})
    webui.reply("POST /sdapi/v1/txt2img", body=a1111_generation([PNG_1X1]), delay=0.6)
    settings = Settings(webui_url=webui.url, webui_auth="alice:s3cret", webui_read_timeout=0.2)
    with WebUIClient.from_settings(settings) as c:
        c.ping()
        with pytest.raises(WebUITimeout):
            c.txt2img({"prompt": "a cat"})
    assert webui.seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_from_settings_read_timeout_caps_the_configured_one(webui: FakeWebUI) -> None:
    webui.reply("POST /sdapi/v1/txt2img", body=a1111_generation([PNG_1X1]), delay=0.6)
    settings = Settings(webui_url=webui.url, webui_read_timeout=1800.0)
    with WebUIClient.from_settings(settings, read_timeout=0.2) as c, pytest.raises(WebUITimeout):
        c.txt2img({"prompt": "a cat"})
    with (
        WebUIClient.from_settings(
            settings.model_copy(update={"webui_read_timeout": 0.2}), read_timeout=60
        ) as c,
        pytest.raises(WebUITimeout),
    ):
        c.txt2img({"prompt": "a cat"})


def test_credentials_in_the_url_become_auth_and_never_show(webui: FakeWebUI) -> None:
    webui.reply("GET /sdapi/v1/memory", body={})
    port = webui.url.rsplit(":", 1)[1]
    with WebUIClient(f"http://alice:s3cret@127.0.0.1:{port}/") as c:
        c.ping()
        assert c.base_url == webui.url
        assert "s3cret" not in repr(c)
    assert webui.seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_two_calls_reuse_one_pooled_connection(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("GET /sdapi/v1/samplers", body=[])
    webui.reply("GET /sdapi/v1/progress?skip_current_image=true", body={"progress": 0.5})
    client.samplers()
    client.progress()
    assert len({s.client_port for s in webui.seen}) == 1


def test_payload_is_sent_as_json_and_images_come_back_byte_identical(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    sent = [PNG_1X1, BIG_IMAGE, "data:image/png;base64," + PNG_1X1]
    webui.reply("POST /sdapi/v1/txt2img", body=a1111_generation(sent))
    payload = {"prompt": "a cat", "steps": 20, "sampler_name": "Euler"}

    result = client.txt2img(payload)

    assert result.images == sent
    assert json.loads(webui.seen[0].body) == payload
    assert webui.seen[0].headers["Content-Type"] == "application/json"
    assert result.parameters == {"prompt": "a cat"}
    assert str(len(BIG_IMAGE)) in repr(result) and BIG_IMAGE[:50] not in repr(result)


def test_image_bytes_are_sent_as_their_base64_encoded_a_slice_at_a_time(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    # Given an input image held as its bytes (3 MB: several slices, and a length that is no multiple of 3)
    data = os.urandom(3_000_001)
    webui.reply("POST /sdapi/v1/img2img", body=a1111_generation([PNG_1X1]))
    payload = {"prompt": "a cat", "init_images": [ImageBytes(data), PNG_1X1]}

    client.img2img(payload, release_images=True)

    # Then the WebUI received it as base64, exactly, in a body as long as announced
    received = json.loads(webui.seen[0].body)
    assert received == {"prompt": "a cat", "init_images": [base64.b64encode(data).decode(), PNG_1X1]}
    assert int(webui.seen[0].headers["Content-Length"]) == len(webui.seen[0].body)
    assert payload["init_images"] == []  # handed over: the caller holds no copy while the answer downloads
    # and the base64 was made a slice at a time, never whole
    slices = list(ImageBytes(data).base64_slices())
    assert b"".join(slices).decode() == base64.b64encode(data).decode()
    assert len(slices) > 1 and max(len(part) for part in slices) <= 1 << 20


def test_info_json_string_is_parsed_into_a_dict(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("POST /sdapi/v1/img2img", body=a1111_generation([PNG_1X1]))
    assert client.img2img({"init_images": [PNG_1X1]}).info == {"seed": 1234, "all_seeds": [1234]}


def test_unparsable_info_is_kept_raw_instead_of_failing(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("POST /sdapi/v1/txt2img", body=a1111_generation([PNG_1X1], info="seed: 12"))
    assert client.txt2img({}).info == {"raw": "seed: 12"}


def test_extras_returns_its_single_image_and_html_info(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("POST /sdapi/v1/extra-single-image", body={"image": BIG_IMAGE, "html_info": "<p>x2</p>"})
    assert client.extra_single_image({"image": PNG_1X1}) == GenerationResult([BIG_IMAGE], {}, {}, "<p>x2</p>")


def test_progress_skips_the_current_image_and_uses_the_short_timeout(webui: FakeWebUI) -> None:
    webui.reply("GET /sdapi/v1/progress?skip_current_image=true", body={}, delay=2.0)
    with WebUIClient(webui.url, connect_timeout=0.2, read_timeout=60) as c:
        started = time.monotonic()
        with pytest.raises(WebUITimeout):
            c.progress()
        assert time.monotonic() - started < 1.0


def test_interrupt_posts_to_the_interrupt_route(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("POST /sdapi/v1/interrupt", body={})
    client.interrupt()
    assert [(s.method, s.path) for s in webui.seen] == [("POST", "/sdapi/v1/interrupt")]


def test_lookup_lists_are_returned_as_sent(webui: FakeWebUI, client: WebUIClient) -> None:
    for route in ("sd-models", "samplers", "schedulers", "upscalers", "latent-upscale-modes"):
        webui.reply(f"GET /sdapi/v1/{route}", body=[{"name": route}])
    assert client.sd_models() == [{"name": "sd-models"}]
    assert client.samplers() == [{"name": "samplers"}]
    assert client.schedulers() == [{"name": "schedulers"}]
    assert client.upscalers() == [{"name": "upscalers"}]
    assert client.latent_upscale_modes() == [{"name": "latent-upscale-modes"}]


def test_sd_vae_returns_the_vae_list_as_sent(webui: FakeWebUI, client: WebUIClient) -> None:
    vaes = [{"model_name": "sdxl_vae.safetensors", "filename": "/models/VAE/sdxl_vae.safetensors"}]
    webui.reply("GET /sdapi/v1/sd-vae", body=vaes)

    assert client.sd_vae() == vaes
    assert [(s.method, s.path) for s in webui.seen] == [("GET", "/sdapi/v1/sd-vae")]


def test_an_sd_vae_answer_that_is_not_a_list_is_an_http_error(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("GET /sdapi/v1/sd-vae", body={"detail": "Not Found"})

    with pytest.raises(WebUIHTTPError, match="not a JSON list"):
        client.sd_vae()


def test_adetailer_version_and_models_when_installed(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("GET /adetailer/v1/version", body={"version": "25.3.0"})
    webui.reply("GET /adetailer/v1/ad_model", body={"ad_model": ["face_yolov8n.pt", "hand_yolov8n.pt"]})
    assert client.adetailer_version() == "25.3.0"
    assert client.adetailer_models() == ["face_yolov8n.pt", "hand_yolov8n.pt"]


def test_adetailer_version_is_none_and_models_rejected_when_not_installed(client: WebUIClient) -> None:
    assert client.adetailer_version() is None
    with pytest.raises(WebUIRejected, match="ADetailer is not installed") as caught:
        client.adetailer_models()
    assert caught.value.status == 404


def test_unserialisable_payload_is_a_programming_error_not_a_webui_error(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    with pytest.raises(TypeError):
        client.txt2img({"prompt": object()})
    assert webui.seen == []


# -- transport errors ---------------------------------------------------------------------------------------


def test_refused_connection_is_webui_unavailable() -> None:
    port = free_port()
    with (
        WebUIClient(f"http://127.0.0.1:{port}", connect_timeout=1.0) as c,
        pytest.raises(WebUIUnavailable) as e,
    ):
        c.ping()
    assert e.value.url == f"http://127.0.0.1:{port}/sdapi/v1/memory"
    assert e.value.transient


def test_url_without_a_scheme_is_webui_unavailable_with_a_hint() -> None:
    with WebUIClient("127.0.0.1:7860") as c, pytest.raises(WebUIUnavailable, match="STABLENEW_WEBUI_URL"):
        c.ping()


def test_server_slower_than_read_timeout_is_webui_timeout(webui: FakeWebUI) -> None:
    webui.reply("POST /sdapi/v1/txt2img", body=a1111_generation([PNG_1X1]), delay=2.0)
    with WebUIClient(webui.url, read_timeout=0.2) as c, pytest.raises(WebUITimeout) as caught:
        c.txt2img({"prompt": "slow"})
    assert caught.value.url == webui.url + "/sdapi/v1/txt2img"


# -- HTTP status errors -------------------------------------------------------------------------------------


def test_validation_error_422_is_rejected_with_the_field_problems(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    problems = [
        {"loc": ["body", "image"], "msg": "field required", "type": "value_error.missing"},
        {
            "loc": ["body", "upscaling_resize"],
            "msg": "value is not a valid float",
            "type": "type_error.float",
        },
    ]
    webui.reply("POST /sdapi/v1/extra-single-image", 422, {"detail": problems})
    with pytest.raises(WebUIRejected) as caught:
        client.extra_single_image({})
    assert caught.value.status == 422
    assert (
        caught.value.detail == "body.image: field required; body.upscaling_resize: value is not a valid float"
    )
    assert not caught.value.transient


def test_a1111_500_error_is_http_error_with_the_errors_text(webui: FakeWebUI, client: WebUIClient) -> None:
    body = {"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory"}
    webui.reply("POST /sdapi/v1/txt2img", 500, body)
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.status == 500
    assert caught.value.detail == "OutOfMemoryError: CUDA out of memory"
    assert caught.value.url == webui.url + "/sdapi/v1/txt2img"
    assert caught.value.transient


PERMANENT_500S = {
    "bad image": ("HTTPException", "Invalid encoded image", "500: Invalid encoded image"),
    "refiner gone": ("Exception", "", "Could not find checkpoint with name gone.safetensors"),
    "hires upscaler": ("Exception", "", "could not find upscaler named 4x-Missing"),
    "extras upscaler": ("AssertionError", "", "could not find upscaler named 4x-Missing"),
    "hires sampler": ("AssertionError", "", "bad sampler name: Use same sampler"),
    "unknown option": ("KeyError", "", "'no_such_option'"),
}


@pytest.mark.parametrize(("error", "detail", "errors"), PERMANENT_500S.values(), ids=list(PERMANENT_500S))
def test_an_a1111_500_no_retry_can_fix_is_permanent_with_the_webuis_words(
    webui: FakeWebUI, client: WebUIClient, error: str, detail: str, errors: str
) -> None:
    webui.reply(
        "POST /sdapi/v1/txt2img", 500, {"error": error, "detail": detail, "body": "", "errors": errors}
    )
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.status == 500
    assert errors in str(caught.value)
    assert not caught.value.transient
    assert is_permanent(caught.value)


def test_a_keyerror_500_about_something_else_than_an_option_stays_transient(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    body = {"error": "RuntimeError", "detail": "", "body": "", "errors": "'cuda' device lost"}
    webui.reply("POST /sdapi/v1/txt2img", 500, body)
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.transient


def test_404_is_rejected_with_the_detail(webui: FakeWebUI, client: WebUIClient) -> None:
    body = {
        "error": "HTTPException",
        "detail": "Init image not found",
        "body": "",
        "errors": "404: Init image not found",
    }
    webui.reply("POST /sdapi/v1/img2img", 404, body)
    with pytest.raises(WebUIRejected) as caught:
        client.img2img({})
    assert (caught.value.status, caught.value.detail) == (404, "404: Init image not found")
    with pytest.raises(WebUIRejected, match="Not Found"):
        client.sd_models()  # an unknown route: {"detail": "Not Found"}


def test_401_is_rejected_with_an_auth_hint_and_without_the_password(webui: FakeWebUI) -> None:
    webui.reply("POST /sdapi/v1/txt2img", 401, {"detail": "Incorrect username or password"})
    with WebUIClient(webui.url, auth=("alice", "s3cret")) as c, pytest.raises(WebUIRejected) as caught:
        c.txt2img({})
    err = caught.value
    assert err.status == 401
    assert "STABLENEW_WEBUI_AUTH" in str(err)
    assert all("s3cret" not in text for text in (str(err), repr(err), str(err.url)))


def test_non_json_error_body_is_reported_by_its_first_300_characters(
    webui: FakeWebUI, client: WebUIClient
) -> None:
    webui.reply("POST /sdapi/v1/txt2img", 502, b"Bad Gateway: upstream closed" + b"x" * 5000)
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.detail.startswith("Bad Gateway: upstream closed")
    assert len(caught.value.detail) <= 300


GRADIO_PAGE = (
    b"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
    b"<title>Stable Diffusion &amp; friends</title><script>" + b"x" * 20_000 + b"</script></head></html>"
)


@pytest.mark.parametrize(
    ("status", "error"), [(200, WebUIHTTPError), (404, WebUIRejected), (502, WebUIHTTPError)]
)
def test_a_web_page_instead_of_the_json_api_says_what_answered_and_what_was_expected(
    webui: FakeWebUI, client: WebUIClient, status: int, error: type[WebUIError]
) -> None:
    # Given the URL of the Gradio UI or a proxy, which answers with an HTML page
    webui.reply("GET /sdapi/v1/sd-models", status, GRADIO_PAGE, headers={"Content-Type": "text/html"})

    with pytest.raises(error) as caught:
        client.sd_models()

    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert 'page title "Stable Diffusion & friends"' in message
    assert "--api" in message and "JSON API" in message
    assert "<script>" not in message and "xxxx" not in message


def test_redirect_is_not_followed_and_is_an_http_error(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply(
        "POST /sdapi/v1/txt2img", 307, b"", headers={"Location": "https://elsewhere/sdapi/v1/txt2img"}
    )
    with pytest.raises(WebUIHTTPError, match="elsewhere") as caught:
        client.txt2img({})
    assert caught.value.status == 307
    assert len(webui.seen) == 1


# -- unusable 200 bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>ok</html>", id="HTML instead of JSON"),
        pytest.param({"parameters": {}, "info": "{}"}, id="missing images"),
        pytest.param({"images": "iVBORw0KGgo="}, id="images not a list"),
        pytest.param({"images": [None]}, id="image not a string"),
        pytest.param(a1111_generation(["not base64!"]), id="invalid base64"),
        pytest.param(a1111_generation([PNG_1X1[:-1]]), id="truncated base64"),
        pytest.param(a1111_generation(["/outputs/txt2img/00001.png"]), id="a path instead of an image"),
        pytest.param(a1111_generation([""]), id="empty image"),
    ],
)
def test_unusable_200_body_is_an_http_error(webui: FakeWebUI, client: WebUIClient, body: Any) -> None:
    """A 200 of the wrong shape comes back the same on every try: not worth a retry."""
    webui.reply("POST /sdapi/v1/txt2img", body=body)
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.status == 200
    assert not caught.value.transient


@pytest.mark.parametrize("body", [b'{"images": ["iVBOR', b'  [{"images"'])
def test_a_200_whose_json_breaks_off_is_a_transient_http_error(
    webui: FakeWebUI, client: WebUIClient, body: bytes
) -> None:
    """JSON cut short on the way (a dropped proxy connection) may come whole on the next try."""
    webui.reply("POST /sdapi/v1/txt2img", body=body)
    with pytest.raises(WebUIHTTPError) as caught:
        client.txt2img({})
    assert caught.value.status == 200
    assert caught.value.transient


def test_extras_without_an_image_string_is_an_http_error(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("POST /sdapi/v1/extra-single-image", body={"images": [PNG_1X1]})
    with pytest.raises(WebUIHTTPError, match="'image'"):
        client.extra_single_image({})


def test_lookup_that_is_not_a_list_is_an_http_error(webui: FakeWebUI, client: WebUIClient) -> None:
    webui.reply("GET /sdapi/v1/samplers", body={"samplers": []})
    with pytest.raises(WebUIHTTPError):
        client.samplers()


# -- every requests exception, injected at the edge we do not own -------------------------------------------


class _RaisingAdapter(HTTPAdapter):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise self.exc


def _client_raising(exc: BaseException) -> WebUIClient:
    session = requests.Session()
    session.mount("http://", _RaisingAdapter(exc))
    return WebUIClient("http://webui.test:7860", auth=("alice", "s3cret"), session=session)


MAPPED = [
    (requests.ConnectionError, WebUIUnavailable),
    (requests.ConnectTimeout, WebUIUnavailable),  # also a Timeout, but the host never accepted us
    (requests.ReadTimeout, WebUITimeout),
    (requests.Timeout, WebUITimeout),
    (requests.exceptions.ChunkedEncodingError, WebUIUnavailable),
    (requests.exceptions.ContentDecodingError, WebUIUnavailable),
    (requests.TooManyRedirects, WebUIUnavailable),
    (requests.exceptions.InvalidURL, WebUIUnavailable),
    (requests.exceptions.MissingSchema, WebUIUnavailable),
    (requests.exceptions.InvalidSchema, WebUIUnavailable),
    (requests.exceptions.SSLError, WebUIUnavailable),
    (requests.exceptions.ProxyError, WebUIUnavailable),
    (requests.RequestException, WebUIUnavailable),
]


@pytest.mark.parametrize(("raised", "expected"), MAPPED, ids=[raised.__name__ for raised, _ in MAPPED])
def test_each_requests_exception_becomes_its_documented_webui_error(
    raised: type[Exception], expected: type[WebUIError]
) -> None:
    exc = raised("boom")
    with _client_raising(exc) as c, pytest.raises(WebUIError) as caught:
        c.samplers()
    assert type(caught.value) is expected
    assert caught.value.url == "http://webui.test:7860/sdapi/v1/samplers"
    assert caught.value.__cause__ is exc
    assert "s3cret" not in str(caught.value)


def test_body_read_timeout_wrapped_in_a_connection_error_is_a_timeout() -> None:
    timed_out = urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out.")  # type: ignore[arg-type]
    exc = requests.ConnectionError(timed_out)
    with _client_raising(exc) as c, pytest.raises(WebUITimeout):
        c.txt2img({})


def test_urllib3_error_that_escapes_requests_is_still_translated() -> None:
    with _client_raising(urllib3.exceptions.ProtocolError("boom")) as c, pytest.raises(WebUIUnavailable):
        c.progress()


def _all_request_exceptions() -> list[type[requests.RequestException]]:
    found = {
        value
        for value in vars(requests.exceptions).values()
        if isinstance(value, type) and issubclass(value, requests.RequestException)
    }
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("raised", _all_request_exceptions(), ids=lambda cls: cls.__name__)
def test_no_requests_exception_escapes_untranslated(raised: type[Exception]) -> None:
    try:
        exc = raised("boom")
    except TypeError:  # JSONDecodeError wants (msg, doc, pos)
        exc = raised("boom", "", 0)
    with _client_raising(exc) as c, pytest.raises(WebUIError):
        c.ping()
