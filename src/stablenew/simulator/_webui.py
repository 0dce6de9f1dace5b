"""The simulated WebUI itself: its routes, lifecycle, test controls and request log, and :func:`serve`."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._api import (
    ADETAILER_ARG_KEYS,
    ADETAILER_VERSION,
    GENERATION_ROUTES,
    LATENT_UPSCALE_MODES,
    MEMORY,
    HTTPError,
    Response,
    json_response,
    script_info,
    validation_error,
)
from ._catalog import Catalog
from ._checkpoints import LoadedCheckpoint
from ._faults import Fault, FaultSchedule
from ._generation import EXTRAS, IMG2IMG, TXT2IMG, Generation
from ._images import Images
from ._jobs import JobRunner
from ._server import Server


@dataclass
class RecordedRequest:
    """One request as the simulator received it (``body`` is the parsed JSON, or None; ``query`` the raw query).

    ``answer`` is the JSON payload of a 200 answer; only the copy given to a ``recorder`` carries it (the
    ``requests`` log keeps None, so that it does not hold every image answered).
    """

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    time: float
    query: str = ""
    status: int | None = None  # the HTTP status answered; 0 when the connection was dropped
    answer: Any = None


class SimulatedWebUI:
    """An A1111-compatible HTTP server on a daemon thread; use as a context manager or start()/stop().

    ``latency`` is slept per generation (interruptible); ``step_count_hint`` is the ``steps`` used when a
    request omits it (A1111's API default is 50); ``auth`` is ``(user, password)`` for ``/sdapi/*``; the name
    lists replace the defaults; ``image_cache`` reuses encoded PNGs per (stage, size, seed % 8).

    The public seams for tests and benchmarks: ``recorder`` is called with each :class:`RecordedRequest` once
    it is answered (``status`` and ``answer`` set), from the request's thread; ``images`` (an :class:`Images`)
    decodes input images and encodes answer images and JSON (``image_cache`` is then ignored); with
    ``keep_requests`` false the ``requests`` log stays empty (a recorder keeps what it needs).

    ADetailer takes ``adetailer_max_tabs`` tabs (its "Max tabs" setting: ``GET /sdapi/v1/script-info`` declares
    2 + that many args, and args beyond are dropped without a word) and finds ``adetailer_masks`` masks per live
    tab, each a job of its own that raises ``job_count`` after the 1-step dummy pass. With ``nowebui`` the
    server runs as A1111's ``--nowebui`` does: no ``/internal/progress`` (which, in UI mode, tells a task given
    by its ``force_task_id`` is ``active``, ``queued`` or ``completed``).

    It holds one checkpoint loaded, as A1111 does: a generation that runs with another one (its
    ``override_settings.sd_model_checkpoint``, named as A1111 names one, or the one in force) first waits
    ``swap_seconds`` (per checkpoint: ``swap_seconds_by_model``, keyed by any such name; cut short by stop()).
    ``swaps`` and ``loaded_checkpoints`` tell what it loaded.

    Like A1111, it keeps the options a request's ``override_settings`` set (checkpoint, VAE, clip skip,
    ``hires_fix_refiner_pass``, ``refiner_switch_by_sample_steps``) for the requests after it when
    ``override_settings_restore_afterwards`` is false, and reports the ones in force in ``info``
    (``sd_model_name``, ``sd_vae_name``, ``clip_skip``); an unknown option key fails the request (500
    ``KeyError``). A txt2img with a refiner reports in ``info["refiner_switch_step"]`` (a key of the simulator
    only) the 0-based step at which A1111 would have loaded the refiner.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        step_count_hint: int | None = None,
        auth: tuple[str, str] | None = None,
        models: list[str] | None = None,
        samplers: list[str] | None = None,
        schedulers: list[str] | None = None,
        upscalers: list[str] | None = None,
        adetailer_models: list[str] | None = None,
        adetailer_installed: bool = True,
        image_cache: bool = False,
        vaes: list[str] | None = None,
        fault_rate: float = 0.0,
        fault_seed: int | None = None,
        images: Images | None = None,
        recorder: Callable[[RecordedRequest], None] | None = None,
        keep_requests: bool = True,
        swap_seconds: float = 0.0,
        swap_seconds_by_model: Mapping[str, float] | None = None,
        adetailer_max_tabs: int = 4,
        adetailer_masks: int = 1,
        nowebui: bool = False,
    ) -> None:
        if not 1 <= adetailer_max_tabs <= 15:  # ADetailer's "Max tabs" slider (ad_max_models)
            raise ValueError(f"adetailer_max_tabs must be within 1..15, got {adetailer_max_tabs}")
        if adetailer_masks < 0:
            raise ValueError(f"adetailer_masks must not be negative, got {adetailer_masks}")
        self._host, self._port = host, port
        self._auth = auth
        catalog = Catalog(models, samplers, schedulers, upscalers, adetailer_models, vaes)
        self._images = Images(cache=image_cache) if images is None else images
        self._runner = JobRunner(latency)
        self._checkpoint = LoadedCheckpoint(
            catalog, self._runner.stopping, swap_seconds, swap_seconds_by_model
        )
        self._generation = generation = Generation(
            catalog,
            self._images,
            self._runner,
            self._checkpoint,
            default_steps=50 if step_count_hint is None else step_count_hint,
            adetailer_installed=adetailer_installed,
            adetailer_max_tabs=adetailer_max_tabs,
            adetailer_masks=adetailer_masks,
        )
        self._faults = FaultSchedule(fault_seed)
        self.set_fault_rate(fault_rate)
        self._recorder, self._keep_requests = recorder, keep_requests
        self._lock = threading.Lock()  # guards the request log
        self._requests: list[RecordedRequest] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("GET", "/sdapi/v1/progress"): lambda _: self._runner.progress(),
            ("GET", "/sdapi/v1/sd-models"): lambda _: catalog.models,
            ("GET", "/sdapi/v1/options"): lambda _: generation.options(),
            ("GET", "/sdapi/v1/sd-vae"): lambda _: [
                {"model_name": name, "filename": f"/models/VAE/{name}"} for name in catalog.vaes
            ],
            ("GET", "/sdapi/v1/samplers"): lambda _: [
                {"name": name, "aliases": [], "options": {}} for name in catalog.samplers
            ],
            ("GET", "/sdapi/v1/schedulers"): lambda _: [
                catalog.scheduler_entry(n) for n in catalog.schedulers
            ],
            ("GET", "/sdapi/v1/upscalers"): lambda _: [catalog.upscaler_entry(n) for n in catalog.upscalers],
            ("GET", "/sdapi/v1/latent-upscale-modes"): lambda _: [{"name": n} for n in LATENT_UPSCALE_MODES],
            ("GET", "/sdapi/v1/memory"): lambda _: MEMORY,
            ("GET", "/internal/ping"): lambda _: None,
            ("POST", TXT2IMG): generation.txt2img,
            ("POST", IMG2IMG): generation.img2img,
            ("POST", EXTRAS): generation.extras,
            ("POST", "/sdapi/v1/interrupt"): lambda _: self._runner.interrupt(),
            ("GET", "/sdapi/v1/script-info"): lambda _: (
                script_info(adetailer_max_tabs) if adetailer_installed else []
            ),
        }
        if not nowebui:  # modules/progress.py's routes exist only when the UI runs
            self._routes[("POST", "/internal/progress")] = self._runner.task_progress
        if adetailer_installed:
            schema = {"title": "ADetailerArgs", "type": "object", "additionalProperties": False}
            schema["properties"] = {key: {"title": key} for key in sorted(ADETAILER_ARG_KEYS)}
            self._routes[("GET", "/adetailer/v1/version")] = lambda _: {"version": ADETAILER_VERSION}
            self._routes[("GET", "/adetailer/v1/ad_model")] = lambda _: {"ad_model": catalog.ad_models}
            self._routes[("GET", "/adetailer/v1/schema")] = lambda _: schema

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (the port is known once started)."""
        return f"http://{self._host}:{self._port}"

    def start(self) -> SimulatedWebUI:
        """Bind and serve on a daemon thread; a restart after stop() reuses the same port."""
        if self._server is None:
            self._runner.start()
            self._server = Server((self._host, self._port), self._handle)
            self._port = self._server.server_address[1]
            serve_forever = functools.partial(self._server.serve_forever, poll_interval=0.02)
            self._thread = threading.Thread(target=serve_forever, name=f"webui-sim:{self._port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving promptly, cutting short any hang or latency and closing open connections."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        self._runner.stop()
        server.shutdown()
        server.server_close()
        with server.lock:
            connections = list(server.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=2)

    def __enter__(self) -> SimulatedWebUI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault (a copy is kept) for the next matching request(s)."""
        self._faults.inject(fault)

    def set_fault_rate(self, rate: float) -> None:
        """Fail this fraction of generation requests at random with a transient fault (half HTTP 500 in
        A1111's error shape, half a dropped connection), before any work is done. ``fault_seed`` fixes
        the sequence."""
        self._faults.set_rate(rate)

    def set_outage(self, fault: Fault | None) -> None:
        """Fail every request, on every route (``/internal/ping`` included), with ``fault`` until
        ``set_outage(None)``: a WebUI that is out of memory (kind "status") or gone (kind "close")."""
        self._faults.set_outage(fault)

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Seconds each generation takes from now on; with ``route`` (e.g. ``"/sdapi/v1/img2img"``) only
        that route's, which then no longer follows the others."""
        self._runner.set_latency(seconds, route)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first (none when ``keep_requests`` is false)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests and ADetailer problems."""
        with self._lock:
            self._requests.clear()
        self._generation.clear_problems()

    @property
    def swaps(self) -> int:
        """How many times a generation swapped the loaded checkpoint for another."""
        return len(self._checkpoint.history) - 1

    @property
    def loaded_checkpoints(self) -> list[str]:
        """The title of every checkpoint loaded, in order: the one loaded at start, then one per swap."""
        return self._checkpoint.history

    @property
    def interrupted_count(self) -> int:
        """How many ``/sdapi/v1/interrupt`` calls were received."""
        return self._runner.interrupted_count

    @property
    def adetailer_problems(self) -> list[str]:
        """ADetailer misuse the real extension would silently ignore (bad args, unknown keys or models)."""
        return self._generation.problems

    # -- request handling ----------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Response:
        split = urlsplit(target)
        path, query = split.path, split.query
        body: Any = None
        parse_error: HTTPError | None = None
        if not raw.strip():
            parse_error = validation_error(["body"], "field required", "value_error.missing")
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                pos = getattr(exc, "pos", 0)
                parse_error = validation_error(["body", pos], "Expecting value", "value_error.jsondecode")
        if parse_error is None and not isinstance(body, dict):
            parse_error = validation_error(["body"], "value is not a valid dict", "type_error.dict")
        record = RecordedRequest(method, path, body, headers, time.time(), query)
        if self._keep_requests:
            with self._lock:
                self._requests.append(record)
        answered: list[Any] = []
        response: Response | None = None
        try:
            response = self._answer(method, path, headers, body, parse_error, answered)
            return response
        finally:
            record.status = response.status if response is not None else 0
            if self._recorder is not None:
                self._recorder(dataclasses.replace(record, answer=answered[0] if answered else None))

    def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        parse_error: HTTPError | None,
        answered: list[Any],
    ) -> Response:
        try:
            if path.startswith("/sdapi/") and not self._authorized(headers):
                detail = "Incorrect username or password"
                error = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"401: {detail}"}
                raise HTTPError(401, error, {"WWW-Authenticate": "Basic"})
            route = self._routes.get((method, path))
            if route is None:
                if any(known == path for _, known in self._routes):
                    return json_response(405, {"detail": "Method Not Allowed"})
                return json_response(404, {"detail": "Not Found"})
            fault = self._faults.take(method, path, self._runner.stopping)
            if fault is not None and fault.kind == "malformed_json":
                return Response(200, b'{"images": [', {})
            if method == "POST" and path in GENERATION_ROUTES and parse_error is not None:
                raise parse_error
            result = route(body)
            if fault is not None and fault.kind == "bad_base64" and isinstance(result, dict):
                result.update(
                    {"image": "not base64!!"} if "image" in result else {"images": ["not base64!!"]}
                )
            if fault is not None and fault.kind == "no_images" and isinstance(result, dict):
                result["image" if "image" in result else "images"] = "" if "image" in result else []
            answered.append(result)
            return Response(200, self._images.to_json(result), {})
        except HTTPError as exc:
            return exc.response

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._auth is None:
            return True
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, encoded = value.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return scheme.lower() == "basic" and all(
            secrets.compare_digest(given.encode(), expected.encode())
            for given, expected in zip((user, password), self._auth, strict=True)
        )


def serve(
    host: str,
    port: int,
    latency: float = 0.0,
    auth: tuple[str, str] | None = None,
    *,
    models: list[str] | None = None,
    swap_seconds: float = 0.0,
    swap_seconds_by_model: Mapping[str, float] | None = None,
) -> None:
    """Run a simulator in the foreground (``stablenew simulator``): print its URL, stop on Ctrl-C.

    Raises:
        ValueError: no model, a negative swap time, or a swap time for a checkpoint not in ``models``.
    """
    sim = SimulatedWebUI(
        host,
        port,
        latency=latency,
        auth=auth,
        image_cache=True,
        models=models,
        swap_seconds=swap_seconds,
        swap_seconds_by_model=swap_seconds_by_model,
    ).start()
    print(f"Simulated A1111 WebUI listening on {sim.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
