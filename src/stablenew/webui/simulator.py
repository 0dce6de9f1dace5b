"""A simulated AUTOMATIC1111 WebUI (v1.10.1 API, with ADetailer 25.3.0) for the demo and for tests.

:class:`SimulatedWebUI` serves the routes StableNew uses with the same request and response shapes, error
shapes and silent behaviours as the real server (see ``docs/A1111_API.md``), renders small real PNGs whose
colour tells the stage apart, and lets tests inject faults (:class:`Fault`), add latency, interrupt, and read
back every request it received. :func:`serve` runs one in the foreground for ``stablenew simulator``.

This module is the import path for all of it (see ``__all__``); the parts live beside it:
:mod:`~stablenew.webui.sim_api` (names, response and error shapes), :mod:`~stablenew.webui.sim_catalog`
(name lookups), :mod:`~stablenew.webui.sim_faults` (fault injection), :mod:`~stablenew.webui.sim_images`
(PNGs) and :mod:`~stablenew.webui.sim_server` (HTTP plumbing).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stablenew.webui.sim_api import (
    _MEMORY,
    A1111_VERSION,
    ADETAILER_ARG_KEYS,
    ADETAILER_VERSION,
    DEFAULT_ADETAILER_MODELS,
    DEFAULT_MODELS,
    DEFAULT_SAMPLERS,
    DEFAULT_SCHEDULERS,
    DEFAULT_UPSCALERS,
    DEFAULT_VAES,
    GENERATION_ROUTES,
    LATENT_UPSCALE_MODES,
    _a1111_error,
    _Dropped,
    _HTTPError,
    _infotext,
    _num,
    _validation_error,
)
from stablenew.webui.sim_api import _http_exception as _http_exception
from stablenew.webui.sim_api import _json as _json
from stablenew.webui.sim_api import _Response as _Response
from stablenew.webui.sim_catalog import _NO_MODEL, Catalog
from stablenew.webui.sim_faults import Fault, FaultKind, FaultSchedule
from stablenew.webui.sim_images import _CACHE_LIMIT, _SEED_VARIANTS, _render_png
from stablenew.webui.sim_images import _decode_image as _decode_image
from stablenew.webui.sim_images import _with_text_chunks as _with_text_chunks
from stablenew.webui.sim_server import _Server

# SimulatedWebUI calls _json, _decode_image and _with_text_chunks through this module's names, so a process
# may replace them here for all its simulators (bench/environment.py does). Error answers come from sim_api.


@dataclass
class RecordedRequest:
    """One request as the simulator received it (``body`` is the parsed JSON, or None; ``query`` the raw query)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    time: float
    query: str = ""
    status: int | None = None  # the HTTP status answered; 0 when the connection was dropped


@dataclass
class _Job:
    started: float
    latency: float
    steps: int


class SimulatedWebUI:
    """An A1111-compatible HTTP server on a daemon thread; use as a context manager or start()/stop().

    ``latency`` is slept per generation (interruptible); ``step_count_hint`` is the ``steps`` used when a
    request omits it (A1111's API default is 50); ``auth`` is ``(user, password)`` for ``/sdapi/*``; the name
    lists replace the defaults; ``image_cache`` reuses encoded PNGs per (stage, size, seed % 8).

    Like A1111, it keeps the options a request's ``override_settings`` set (checkpoint, VAE, clip skip,
    ``hires_fix_refiner_pass``) for the requests after it when ``override_settings_restore_afterwards`` is
    false, and reports the ones in force in ``info`` (``sd_model_name``, ``sd_vae_name``, ``clip_skip``).
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
    ) -> None:
        self._host, self._port = host, port
        self._catalog = catalog = Catalog(models, samplers, schedulers, upscalers, adetailer_models, vaes)
        # A1111's in-memory options that override_settings may change (opts.data).
        self._options: dict[str, Any] = {
            "sd_model_checkpoint": catalog.models[0]["title"],
            "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1,
            "hires_fix_refiner_pass": "second pass",
        }
        self._default_steps = 50 if step_count_hint is None else step_count_hint
        self._auth = auth
        self._adetailer_installed = adetailer_installed
        self._image_cache = image_cache
        self._cache: dict[tuple[str, int, int, int], bytes] = {}
        self._lock = threading.Lock()  # guards the mutable state below
        self._generation_lock = threading.Lock()  # A1111's queue lock: one generation at a time
        self._stopping = threading.Event()
        self._interrupt = threading.Event()
        self._latency = 0.0
        self.set_latency(latency)
        self._faults = FaultSchedule(fault_seed)
        self.set_fault_rate(fault_rate)
        self._requests: list[RecordedRequest] = []
        self._problems: list[str] = []
        self._job: _Job | None = None
        self._interrupted = False
        self._interrupted_count = 0
        self._job_timestamp = "0"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("GET", "/sdapi/v1/progress"): lambda _: self._progress(),
            ("GET", "/sdapi/v1/sd-models"): lambda _: catalog.models,
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
            ("GET", "/sdapi/v1/memory"): lambda _: _MEMORY,
            ("GET", "/internal/ping"): lambda _: None,
            ("POST", "/sdapi/v1/txt2img"): self._txt2img,
            ("POST", "/sdapi/v1/img2img"): self._img2img,
            ("POST", "/sdapi/v1/extra-single-image"): self._extras,
            ("POST", "/sdapi/v1/interrupt"): lambda _: self._on_interrupt(),
        }
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
            self._stopping.clear()
            self._server = _Server((self._host, self._port), self)
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
        self._stopping.set()
        self._interrupt.set()
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

    def set_latency(self, seconds: float) -> None:
        """Seconds each generation takes from now on."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency = float(seconds)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests and ADetailer problems."""
        with self._lock:
            self._requests.clear()
            self._problems.clear()

    @property
    def interrupted_count(self) -> int:
        """How many ``/sdapi/v1/interrupt`` calls were received."""
        with self._lock:
            return self._interrupted_count

    @property
    def adetailer_problems(self) -> list[str]:
        """ADetailer misuse the real extension would silently ignore (bad args, unknown keys or models)."""
        with self._lock:
            return list(self._problems)

    # -- request handling ----------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Response:
        split = urlsplit(target)
        path, query = split.path, split.query
        body: Any = None
        parse_error: _HTTPError | None = None
        if not raw.strip():
            parse_error = _validation_error(["body"], "field required", "value_error.missing")
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                pos = getattr(exc, "pos", 0)
                parse_error = _validation_error(["body", pos], "Expecting value", "value_error.jsondecode")
        if parse_error is None and not isinstance(body, dict):
            parse_error = _validation_error(["body"], "value is not a valid dict", "type_error.dict")
        record = RecordedRequest(method, path, body, headers, time.time(), query)
        with self._lock:
            self._requests.append(record)
        response: _Response | None = None
        try:
            response = self._answer(method, path, headers, body, parse_error)
            return response
        finally:
            record.status = response.status if response is not None else 0

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: Any, parse_error: _HTTPError | None
    ) -> _Response:
        try:
            if path.startswith("/sdapi/") and not self._authorized(headers):
                detail = "Incorrect username or password"
                error = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"401: {detail}"}
                raise _HTTPError(401, error, {"WWW-Authenticate": "Basic"})
            route = self._routes.get((method, path))
            if route is None:
                if any(known == path for _, known in self._routes):
                    return _json(405, {"detail": "Method Not Allowed"})
                return _json(404, {"detail": "Not Found"})
            fault = self._faults.take(method, path, self._stopping)
            if fault is not None and fault.kind == "malformed_json":
                return _Response(200, b'{"images": [', {})
            if method == "POST" and path in GENERATION_ROUTES and parse_error is not None:
                raise parse_error
            result = route(body)
            if fault is not None and fault.kind == "bad_base64" and isinstance(result, dict):
                result.update(
                    {"image": "not base64!!"} if "image" in result else {"images": ["not base64!!"]}
                )
            if fault is not None and fault.kind == "no_images" and isinstance(result, dict):
                result["image" if "image" in result else "images"] = "" if "image" in result else []
            return _json(200, result)
        except _HTTPError as exc:
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

    @contextlib.contextmanager
    def _run_job(self, steps: int) -> Iterator[None]:
        """Hold the generation lock for one job and sleep its latency (cut short by interrupt or stop)."""
        while not self._generation_lock.acquire(timeout=0.05):
            if self._stopping.is_set():
                raise _Dropped
        try:
            with self._lock:
                self._interrupt.clear()
                self._interrupted = False
                self._job = job = _Job(time.monotonic(), self._latency, steps)
                self._job_timestamp = time.strftime("%Y%m%d%H%M%S")
            if job.latency > 0:
                self._interrupt.wait(job.latency)
            if self._stopping.is_set():
                raise _Dropped
            yield
        finally:
            with self._lock:
                self._job = None
            self._generation_lock.release()

    def _progress(self) -> dict[str, Any]:
        with self._lock:
            job, interrupted, stamp = self._job, self._interrupted, self._job_timestamp
        progress = eta = 0.0
        step = steps = 0
        if job is not None:
            elapsed = time.monotonic() - job.started
            progress = 1.0 if job.latency <= 0 or interrupted else min(elapsed / job.latency, 1.0)
            eta, steps = max(job.latency - elapsed, 0.0), job.steps
            step = min(steps, int(progress * steps))
        state = {
            "skipped": False, "interrupted": interrupted, "stopping_generation": False, "job": "",
            "job_count": int(job is not None), "job_timestamp": stamp, "job_no": 0,
            "sampling_step": step, "sampling_steps": steps,
        }  # fmt: skip
        return {
            "progress": progress,
            "eta_relative": eta,
            "state": state,
            "current_image": None,
            "textinfo": None,
        }

    def _on_interrupt(self) -> dict[str, Any]:
        with self._lock:
            self._interrupted_count += 1
            self._interrupted = True
        self._interrupt.set()
        return {}

    # -- generation routes ---------------------------------------------------------------------------------

    def _txt2img(self, body: dict[str, Any]) -> dict[str, Any]:
        options = self._request_options(body)
        width, height = max(1, _num(body, "width", 512, int)), max(1, _num(body, "height", 512, int))
        out_w, out_h = width, height
        extra: dict[str, Any] = {}
        if body.get("enable_hr"):
            if body.get("denoising_strength") is None:
                message = "unsupported operand type(s) for *: 'NoneType' and 'int'"
                raise _a1111_error(500, "TypeError", message)
            hr_sampler = body.get("hr_sampler_name")
            if hr_sampler is not None and hr_sampler not in self._catalog.samplers:
                # The hires sampler is not resolved like sampler_name: "Use same sampler" or a name carrying a
                # scheduler ("DPM++ 2M Karras") fails create_sampler's assertion.
                raise _a1111_error(500, "AssertionError", f"bad sampler name: {hr_sampler}")
            hr_scheduler = body.get("hr_scheduler")
            extra["Hires schedule type"] = (
                None if hr_scheduler is None else self._catalog.scheduler_label(str(hr_scheduler))
            )
            upscaler = body.get("hr_upscaler") or "Latent"
            if upscaler not in self._catalog.upscalers and upscaler not in LATENT_UPSCALE_MODES:
                raise _a1111_error(500, "AssertionError", f"could not find upscaler named {upscaler}")
            resize_x, resize_y = _num(body, "hr_resize_x", 0, int), _num(body, "hr_resize_y", 0, int)
            if resize_x == 0 and resize_y == 0:
                scale = _num(body, "hr_scale", 2.0, float)
                out_w, out_h, extra["Hires upscale"] = int(width * scale), int(height * scale), scale
            else:
                out_w = resize_x or resize_y * width // height
                out_h = resize_y or resize_x * height // width
                extra["Hires resize"] = f"{out_w}x{out_h}"
            extra["Hires steps"] = _num(body, "hr_second_pass_steps", 0, int) or None
            extra["Hires upscaler"], extra["Hires sampler"] = upscaler, hr_sampler
        refiner = body.get("refiner_checkpoint")
        if refiner not in _NO_MODEL:
            found = self._catalog.find_checkpoint(str(refiner), fuzzy=True)
            if found is None:
                raise _a1111_error(500, "Exception", f"Could not find checkpoint with name {refiner}")
            extra["Refiner"] = f"{found['model_name']} [{found['hash']}]"
            extra["Refiner switch at"] = body.get("refiner_switch_at")
            refiner_in = options["hires_fix_refiner_pass"]  # which pass the refiner joins with hires on
            if body.get("enable_hr") and refiner_in != "second pass":
                extra["Hires refiner"] = refiner_in
        return self._generate("txt2img", body, (width, height), (out_w, out_h), extra, None, options)

    def _img2img(self, body: dict[str, Any]) -> dict[str, Any]:
        options = self._request_options(body)
        init_images = body.get("init_images")
        if not init_images:
            raise _http_exception(404, "Init image not found")
        if not isinstance(init_images, list):
            raise _validation_error(["body", "init_images"], "value is not a valid list", "type_error.list")
        init = [_decode_image(image) for image in init_images][0]  # noqa: RUF015 - A1111 decodes them all
        width, height = (
            max(1, _num(body, "width", init.width, int)),
            max(1, _num(body, "height", init.height, int)),
        )
        stage, out_size = "img2img", (width, height)
        extra: dict[str, Any] = {}
        scripts = body.get("alwayson_scripts") or {}
        for name, script in scripts.items() if isinstance(scripts, dict) else ():
            if name.lower() != "adetailer":
                continue  # other always-on scripts are accepted and ignored
            if not self._adetailer_installed:
                raise _http_exception(422, f"always on script {name} not found")
            args = script.get("args") if isinstance(script, dict) else None
            has_mask = body.get("mask") is not None
            enabled, skip, model, problems = self._catalog.read_adetailer_args(args, has_mask)
            with self._lock:
                self._problems.extend(problems)
            if enabled:
                extra["ADetailer model"], extra["ADetailer version"] = model, ADETAILER_VERSION
                if skip:
                    stage, out_size = "adetailer", init.size
        return self._generate(stage, body, (width, height), out_size, extra, 0.75, options)

    def _extras(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("image") is None:
            raise _validation_error(["body", "image"], "field required", "value_error.missing")
        image = _decode_image(body["image"])
        upscaler = body.get("upscaler_1")
        for name, key in ((upscaler, None), (body.get("upscaler_2"), "extras_upscaler_2_visibility")):
            active = key is None or _num(body, key, 0.0, float) > 0
            if active and name not in (None, "None") and name not in self._catalog.upscalers:
                raise _a1111_error(500, "AssertionError", f"could not find upscaler named {name}")
        size, note = image.size, ""
        if upscaler not in (None, "None"):
            if _num(body, "resize_mode", 0, int) == 1:
                size = (
                    _num(body, "upscaling_resize_w", 512, int),
                    _num(body, "upscaling_resize_h", 512, int),
                )
                note = f"Postprocess upscale to: {size[0]}x{size[1]}, Postprocess upscaler: {upscaler}"
            else:
                factor = _num(body, "upscaling_resize", 2.0, float)
                size = (int(image.width * factor) // 8 * 8, int(image.height * factor) // 8 * 8)
                note = f"Postprocess upscale by: {factor}, Postprocess upscaler: {upscaler}"
        text = {k: v for k, v in image.info.items() if k == "parameters" and isinstance(v, str)}
        with self._run_job(0):
            png = self._png("upscale", size[0], size[1], 0, {**text, "postprocessing": note})
        return {"image": png, "html_info": f"<p>{note}</p>"}

    def _generate(
        self,
        stage: str,
        body: dict[str, Any],
        size: tuple[int, int],
        out_size: tuple[int, int],
        extra: dict[str, Any],
        default_denoise: float | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        count = max(1, _num(body, "batch_size", 1, int)) * max(1, _num(body, "n_iter", 1, int))
        steps, cfg = _num(body, "steps", self._default_steps, int), _num(body, "cfg_scale", 7.0, float)
        seed, subseed = _num(body, "seed", -1, int), _num(body, "subseed", -1, int)
        seed = secrets.randbelow(2**32) if seed == -1 else seed
        subseed = secrets.randbelow(2**32) if subseed == -1 else subseed
        catalog = self._catalog
        sampler, scheduler = catalog.resolve_sampler(
            body.get("sampler_name") or "Euler", body.get("scheduler")
        )
        model = catalog.find_checkpoint(str(options["sd_model_checkpoint"]), fuzzy=False) or catalog.models[0]
        # An unknown VAE runs as none: A1111 logs "using None instead".
        vae = options["sd_vae"] if options["sd_vae"] in catalog.vaes else None
        clip_skip = _num(options, "CLIP_stop_at_last_layers", 1, int)
        if body.get("override_settings_restore_afterwards") is False:  # A1111's default is to restore
            with self._lock:
                self._options = options
        denoise = default_denoise
        if body.get("denoising_strength") is not None:
            denoise = _num(body, "denoising_strength", 0.0, float)
        prompt, negative = str(body.get("prompt") or ""), str(body.get("negative_prompt") or "")
        extra = {k: v for k, v in extra.items() if v is not None}
        params = {
            "Steps": steps, "Sampler": sampler, "Schedule type": scheduler, "CFG scale": cfg, "Seed": seed,
            "Size": f"{size[0]}x{size[1]}", "Model hash": model["hash"], "Model": model["model_name"], "VAE": vae,
            "Clip skip": clip_skip if clip_skip > 1 else None, "Denoising strength": denoise, **extra,
            "Version": A1111_VERSION,
        }  # fmt: skip
        infotexts = [_infotext(prompt, negative, {**params, "Seed": seed + i}) for i in range(count)]
        with self._run_job(steps):
            images = [
                self._png(stage, *out_size, seed + i, {"parameters": text})
                for i, text in enumerate(infotexts)
            ]
            timestamp = self._job_timestamp
        info = {
            "prompt": prompt, "all_prompts": [prompt] * count, "negative_prompt": negative,
            "all_negative_prompts": [negative] * count, "seed": seed, "all_seeds": [seed + i for i in range(count)],
            "subseed": subseed, "all_subseeds": [subseed + i for i in range(count)],
            "subseed_strength": _num(body, "subseed_strength", 0.0, float), "width": size[0], "height": size[1],
            "sampler_name": sampler, "cfg_scale": cfg, "steps": steps, "batch_size": _num(body, "batch_size", 1, int),
            "restore_faces": False, "face_restoration_model": None, "sd_model_name": model["model_name"],
            "sd_model_hash": model["hash"], "sd_vae_name": vae, "sd_vae_hash": None,
            "seed_resize_from_w": _num(body, "seed_resize_from_w", -1, int),
            "seed_resize_from_h": _num(body, "seed_resize_from_h", -1, int), "denoising_strength": denoise,
            "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": infotexts,
            "styles": body.get("styles") or [], "job_timestamp": timestamp, "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": A1111_VERSION,
        }  # fmt: skip
        if body.get("send_images") is False:
            images = []
        parameters = dict(body)
        if "init_images" in body and not body.get("include_init_images"):
            # A1111's img2imgapi echoes its request without the images unless asked for them.
            parameters["init_images"] = None
            parameters["mask"] = None
        return {"images": images, "parameters": parameters, "info": json.dumps(info)}

    # -- helpers -------------------------------------------------------------------------------------------

    def _png(self, stage: str, width: int, height: int, seed: int, text: dict[str, str]) -> str:
        key = (stage, max(1, width), max(1, height), seed % _SEED_VARIANTS)
        with self._lock:
            png = self._cache.get(key) if self._image_cache else None
        if png is None:
            png = _render_png(*key)
            if self._image_cache:
                with self._lock:
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[key] = png
        return base64.b64encode(_with_text_chunks(png, text)).decode("ascii")

    def _request_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """The options a request runs with: those in force, changed by its ``override_settings``."""
        with self._lock:
            options = dict(self._options)
        overrides = body.get("override_settings")
        for key, value in (overrides if isinstance(overrides, dict) else {}).items():
            if key == "sd_model_checkpoint":
                found = self._catalog.find_checkpoint(value, fuzzy=False) if isinstance(value, str) else None
                if found is not None:  # an unknown checkpoint override is dropped
                    options[key] = found["title"]
            elif key in options:
                options[key] = value
        return options


def serve(host: str, port: int, latency: float = 0.0, auth: tuple[str, str] | None = None) -> None:
    """Run a simulator in the foreground (``stablenew simulator``): print its URL, stop on Ctrl-C."""
    sim = SimulatedWebUI(host, port, latency=latency, auth=auth, image_cache=True).start()
    print(f"Simulated A1111 WebUI listening on {sim.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


__all__ = [
    "A1111_VERSION",
    "ADETAILER_ARG_KEYS",
    "ADETAILER_VERSION",
    "DEFAULT_ADETAILER_MODELS",
    "DEFAULT_MODELS",
    "DEFAULT_SAMPLERS",
    "DEFAULT_SCHEDULERS",
    "DEFAULT_UPSCALERS",
    "DEFAULT_VAES",
    "GENERATION_ROUTES",
    "LATENT_UPSCALE_MODES",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "SimulatedWebUI",
    "serve",
]
