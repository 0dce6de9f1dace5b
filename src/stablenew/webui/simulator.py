"""A simulated AUTOMATIC1111 WebUI (v1.10.1 API, with ADetailer 25.3.0) for the demo and for tests.

:class:`SimulatedWebUI` serves the routes StableNew uses with the same request and response shapes, error
shapes and silent behaviours as the real server (see ``docs/A1111_API.md``), renders small real PNGs whose
colour tells the stage apart, and lets tests inject faults (:class:`Fault`), add latency, interrupt, and read
back every request it received. :func:`serve` runs one in the foreground for ``stablenew simulator``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import random
import secrets
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

A1111_VERSION = "v1.10.1"
ADETAILER_VERSION = "25.3.0"
DEFAULT_MODELS = (
    "sd_xl_base_1.0.safetensors [31e35c80fc]",
    "sd_xl_refiner_1.0.safetensors [7440042bbd]",
    "v1-5-pruned-emaonly.safetensors [6ce0161689]",
)
# A1111 v1.10.1's samplers, in its order (the first is what an unknown name silently becomes). Since v1.9 no name
# carries a scheduler ("DPM++ 2M Karras" is "DPM++ 2M" + scheduler "Karras"); see _resolve_sampler.
DEFAULT_SAMPLERS = (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC",
    "LCM",
)  # fmt: skip
# A1111 v1.10.1's schedulers (modules/sd_schedulers.py), in its order: name -> (label, aliases).
_SCHEDULERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "automatic": ("Automatic", ()), "uniform": ("Uniform", ()), "karras": ("Karras", ()),
    "exponential": ("Exponential", ()), "polyexponential": ("Polyexponential", ()),
    "sgm_uniform": ("SGM Uniform", ("SGMUniform",)), "kl_optimal": ("KL Optimal", ()),
    "align_your_steps": ("Align Your Steps", ()), "simple": ("Simple", ()), "normal": ("Normal", ()),
    "ddim": ("DDIM", ()), "beta": ("Beta", ()),
}  # fmt: skip
DEFAULT_SCHEDULERS = tuple(_SCHEDULERS)
DEFAULT_VAES = ("sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors")
DEFAULT_UPSCALERS = (
    "None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "ESRGAN_4x", "4x-UltraSharp", "SwinIR 4x",
)  # fmt: skip
LATENT_UPSCALE_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (nearest-exact)")
DEFAULT_ADETAILER_MODELS = (
    "face_yolov8n.pt", "face_yolov8s.pt", "hand_yolov8n.pt", "person_yolov8n-seg.pt", "person_yolov8s-seg.pt",
    "mediapipe_face_full", "mediapipe_face_short", "mediapipe_face_mesh", "mediapipe_face_mesh_eyes_only",
)  # fmt: skip
# fmt: off
ADETAILER_ARG_KEYS = frozenset((
    "ad_model", "ad_model_classes", "ad_tab_enable", "ad_prompt", "ad_negative_prompt", "ad_confidence",
    "ad_mask_filter_method", "ad_mask_k", "ad_mask_min_ratio", "ad_mask_max_ratio", "ad_dilate_erode",
    "ad_x_offset", "ad_y_offset", "ad_mask_merge_invert", "ad_mask_blur", "ad_denoising_strength",
    "ad_inpaint_only_masked", "ad_inpaint_only_masked_padding", "ad_use_inpaint_width_height", "ad_inpaint_width",
    "ad_inpaint_height", "ad_use_steps", "ad_steps", "ad_use_cfg_scale", "ad_cfg_scale", "ad_use_checkpoint",
    "ad_checkpoint", "ad_use_vae", "ad_vae", "ad_use_sampler", "ad_sampler", "ad_scheduler",
    "ad_use_noise_multiplier", "ad_noise_multiplier", "ad_use_clip_skip", "ad_clip_skip", "ad_restore_face",
    "ad_controlnet_model", "ad_controlnet_module", "ad_controlnet_weight", "ad_controlnet_guidance_start",
    "ad_controlnet_guidance_end",
))
_MEMORY = {
    "ram": {"free": 48e9, "used": 16e9, "total": 64e9},
    "cuda": {"system": {"free": 20e9, "used": 4e9, "total": 24e9}, "events": {"retries": 0, "oom": 0}},
}
# fmt: on
GENERATION_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image")
FaultKind = Literal["status", "hang", "malformed_json", "bad_base64", "close", "no_images"]

_STAGE_COLOURS = {
    "txt2img": (40, 80, 200),  # blue
    "img2img": (40, 160, 70),  # green
    "upscale": (230, 130, 30),  # orange
    "adetailer": (140, 60, 190),  # purple
}
_SEED_VARIANTS = 8
_CACHE_LIMIT = 64
_NO_MODEL = (None, "", "None", "none")
_T = TypeVar("_T", int, float)


@dataclass
class Fault:
    """One injected fault, consumed in order by the next ``count`` matching requests.

    ``route`` None matches any POST generation route; a path matches that route for any method.
    ``status`` is the HTTP status for kind "status"; ``seconds`` how long a "hang" waits (``stop()`` cuts it).
    "no_images" answers 200 with an empty ``images`` list, as A1111 does for ``send_images: false``.
    """

    kind: FaultKind
    route: str | None = None
    status: int = 500
    count: int = 1
    seconds: float = 30.0


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
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class _Job:
    started: float
    latency: float
    steps: int


class _HTTPError(Exception):
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.response = _json(status, payload, headers)


class _Dropped(Exception):
    """Close the connection without writing a response."""


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers or {})


def _a1111_error(status: int, error: str, errors: str, detail: str = "") -> _HTTPError:
    """The shape of A1111's catch-all exception handler."""
    return _HTTPError(status, {"error": error, "detail": detail, "body": "", "errors": errors})


def _http_exception(status: int, detail: str) -> _HTTPError:
    return _a1111_error(status, "HTTPException", f"{status}: {detail}", detail)


def _validation_error(loc: list[Any], msg: str, kind: str) -> _HTTPError:
    """FastAPI's request validation shape (422)."""
    return _HTTPError(422, {"detail": [{"loc": loc, "msg": msg, "type": kind}]})


def _num(body: dict[str, Any], key: str, default: _T, kind: type[_T]) -> _T:
    value = body.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, bool | int | float | str):
            return kind(value)
    except ValueError:
        pass
    name = kind.__name__
    raise _validation_error(["body", key], f"value is not a valid {name}", f"type_error.{name}")


def _quote(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, str) and any(c in value for c in ",\n:") else value


def _infotext(prompt: str, negative: str, params: dict[str, Any]) -> str:
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value is not None)
    return prompt + (f"\nNegative prompt: {negative}" if negative else "") + "\n" + line


def _checkpoint(spec: str) -> dict[str, Any]:
    name, _, given_hash = spec.partition(" [")
    if not name.endswith((".safetensors", ".ckpt")):
        name += ".safetensors"
    digest = hashlib.sha256(name.encode()).hexdigest()
    short = given_hash.rstrip("]") or digest[:10]
    return {
        "title": f"{name} [{short}]", "model_name": name.rsplit(".", 1)[0], "hash": short,
        "sha256": short + digest[len(short) :], "filename": f"/models/Stable-diffusion/{name}", "config": None,
    }  # fmt: skip


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _render_png(stage: str, width: int, height: int, variant: int) -> bytes:
    """A flat PNG in the stage's colour (shaded by ``variant``) with the stage name and size drawn on it."""
    shade = variant * 10 - 35
    colour = tuple(min(255, max(0, c + shade)) for c in _STAGE_COLOURS[stage])
    image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    edge = max(1, min(width, height) // 64)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(255, 255, 255), width=edge)
    font = _font(max(10, min(width, height) // 12))
    draw.text((edge * 3, edge * 3), f"{stage}\n{width}x{height}", fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _with_text_chunks(png: bytes, text: dict[str, str]) -> bytes:
    """Insert tEXt (or iTXt for non-Latin-1) chunks right after IHDR, as Pillow's PngInfo would write them."""
    chunks = []
    for key, value in text.items():
        try:
            kind, data = b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")
        except UnicodeEncodeError:
            kind, data = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    return png[:33] + b"".join(chunks) + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def _decode_image(encoded: Any) -> Image.Image:
    """Decode like A1111's ``decode_base64_to_image``: raw base64 or a ``data:image/...;base64,`` URL."""
    try:
        if encoded.startswith("data:image/"):
            encoded = encoded.split(";")[1].split(",")[1]
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        image.load()  # a truncated image fails here, not later
        return image
    except Exception as exc:
        raise _http_exception(500, "Invalid encoded image") from exc


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
        self._models = [_checkpoint(m) for m in (DEFAULT_MODELS if models is None else models)]
        if not self._models:
            raise ValueError("the simulator needs at least one model")
        self._samplers = list(DEFAULT_SAMPLERS if samplers is None else samplers)
        self._schedulers = list(DEFAULT_SCHEDULERS if schedulers is None else schedulers)
        self._upscalers = list(DEFAULT_UPSCALERS if upscalers is None else upscalers)
        self._ad_models = list(DEFAULT_ADETAILER_MODELS if adetailer_models is None else adetailer_models)
        self._vaes = list(DEFAULT_VAES if vaes is None else vaes)
        # A1111's in-memory options that override_settings may change (opts.data).
        self._options: dict[str, Any] = {
            "sd_model_checkpoint": self._models[0]["title"],
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
        self._faults: list[Fault] = []
        self._fault_rate = 0.0
        self._random = random.Random(fault_seed)  # noqa: S311 (fault injection, not security)
        self.set_fault_rate(fault_rate)
        self._outage: Fault | None = None
        self._requests: list[RecordedRequest] = []
        self._problems: list[str] = []
        self._job: _Job | None = None
        self._interrupted = False
        self._interrupted_count = 0
        self._job_timestamp = "0"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._aliases: dict[str, dict[str, Any]] = {}
        for model in self._models:
            names = (model["title"], model["model_name"], model["filename"].rsplit("/", 1)[1], model["hash"])
            for alias in (*names, model["sha256"]):
                self._aliases.setdefault(alias, model)
        self._routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("GET", "/sdapi/v1/progress"): lambda _: self._progress(),
            ("GET", "/sdapi/v1/sd-models"): lambda _: self._models,
            ("GET", "/sdapi/v1/sd-vae"): lambda _: [
                {"model_name": name, "filename": f"/models/VAE/{name}"} for name in self._vaes
            ],
            ("GET", "/sdapi/v1/samplers"): lambda _: [
                {"name": name, "aliases": [], "options": {}} for name in self._samplers
            ],
            ("GET", "/sdapi/v1/schedulers"): lambda _: [self._scheduler_entry(n) for n in self._schedulers],
            ("GET", "/sdapi/v1/upscalers"): lambda _: [self._upscaler_entry(n) for n in self._upscalers],
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
            self._routes[("GET", "/adetailer/v1/ad_model")] = lambda _: {"ad_model": self._ad_models}
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
        if fault.kind not in get_args(FaultKind) or fault.count < 1:
            raise ValueError(
                f"invalid fault {fault!r}: kind must be one of {get_args(FaultKind)}, count >= 1"
            )
        with self._lock:
            self._faults.append(replace(fault))

    def set_fault_rate(self, rate: float) -> None:
        """Fail this fraction of generation requests at random with a transient fault (half HTTP 500 in
        A1111's error shape, half a dropped connection), before any work is done. ``fault_seed`` fixes
        the sequence."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {rate!r}")
        with self._lock:
            self._fault_rate = rate

    def set_outage(self, fault: Fault | None) -> None:
        """Fail every request, on every route (``/internal/ping`` included), with ``fault`` until
        ``set_outage(None)``: a WebUI that is out of memory (kind "status") or gone (kind "close")."""
        if fault is not None and fault.kind not in ("status", "close", "hang"):
            raise ValueError(
                f"an outage fails requests: kind must be status, close or hang, got {fault.kind!r}"
            )
        with self._lock:
            self._outage = None if fault is None else replace(fault)

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
            fault = self._take_fault(method, path)
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

    def _take_fault(self, method: str, path: str) -> Fault | None:
        generation = method == "POST" and path in GENERATION_ROUTES
        with self._lock:
            fault = self._outage or next(
                (f for f in self._faults if f.route == path or (f.route is None and generation)), None
            )
            if fault is not None and fault is not self._outage:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            elif fault is None and generation and self._random.random() < self._fault_rate:
                fault = Fault("status") if self._random.random() < 0.5 else Fault("close")
            if fault is None:
                return None
        if fault.kind == "status":
            if fault.status == 422:
                raise _validation_error(["body"], "simulated validation failure", "value_error")
            raise _a1111_error(fault.status, "RuntimeError", f"simulated failure (HTTP {fault.status})")
        if fault.kind == "close" or (fault.kind == "hang" and self._stopping.wait(fault.seconds)):
            raise _Dropped
        return fault

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
            if hr_sampler is not None and hr_sampler not in self._samplers:
                # The hires sampler is not resolved like sampler_name: "Use same sampler" or a name carrying a
                # scheduler ("DPM++ 2M Karras") fails create_sampler's assertion.
                raise _a1111_error(500, "AssertionError", f"bad sampler name: {hr_sampler}")
            hr_scheduler = body.get("hr_scheduler")
            extra["Hires schedule type"] = (
                None if hr_scheduler is None else self._scheduler_label(str(hr_scheduler))
            )
            upscaler = body.get("hr_upscaler") or "Latent"
            if upscaler not in self._upscalers and upscaler not in LATENT_UPSCALE_MODES:
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
            found = self._find_checkpoint(str(refiner), fuzzy=True)
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
            enabled, skip, model = self._check_adetailer(args, body.get("mask") is not None)
            if enabled:
                extra["ADetailer model"], extra["ADetailer version"] = model, ADETAILER_VERSION
                if skip:
                    stage, out_size = "adetailer", init.size
        return self._generate(stage, body, (width, height), out_size, extra, 0.75, options)

    def _check_adetailer(self, args: Any, has_mask: bool) -> tuple[bool, bool, str]:
        """Return (enabled, skip_img2img, first model) as ADetailer reads them; record misuse it ignores."""
        problems = []
        if not isinstance(args, list) or not args:
            problems.append(f"ADetailer args must be a non-empty list, got {args!r}")
            args = []
        elif len(args) < 2 or not isinstance(args[0], bool) or not isinstance(args[1], bool):
            problems.append("ADetailer args must start with two booleans [ad_enable, skip_img2img]")
        enabled = args[0] if args and isinstance(args[0], bool) else True
        skip = len(args) > 1 and args[1] is True
        tabs = [arg for arg in args if isinstance(arg, dict)]
        if not tabs:
            problems.append("ADetailer args hold no tab dict: the default face tab runs")
        for index, tab in enumerate(tabs):
            unknown = sorted(set(tab) - ADETAILER_ARG_KEYS)
            if unknown:
                problems.append(f"ADetailer tab {index} has unknown keys {unknown}: the tab is disabled")
            model = tab.get("ad_model", "None")
            if model != "None" and model not in self._ad_models:
                problems.append(f"ADetailer tab {index} names unknown ad_model {model!r}")
        if skip and has_mask:
            problems.append("mask sent with skip_img2img: ADetailer disables itself")
        with self._lock:
            self._problems.extend(problems)
        return enabled, skip, str(tabs[0].get("ad_model", "None")) if tabs else "face_yolov8n.pt"

    def _extras(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("image") is None:
            raise _validation_error(["body", "image"], "field required", "value_error.missing")
        image = _decode_image(body["image"])
        upscaler = body.get("upscaler_1")
        for name, key in ((upscaler, None), (body.get("upscaler_2"), "extras_upscaler_2_visibility")):
            active = key is None or _num(body, key, 0.0, float) > 0
            if active and name not in (None, "None") and name not in self._upscalers:
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
        sampler, scheduler = self._resolve_sampler(body.get("sampler_name") or "Euler", body.get("scheduler"))
        model = self._find_checkpoint(str(options["sd_model_checkpoint"]), fuzzy=False) or self._models[0]
        vae = options["sd_vae"] if options["sd_vae"] in self._vaes else None  # unknown: "using None instead"
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

    def _find_checkpoint(self, name: str, *, fuzzy: bool) -> dict[str, Any] | None:
        """A1111's alias lookup (title, file name, model name, hash); ``fuzzy`` adds its substring fallback."""
        found = self._aliases.get(name)
        if found is not None or not fuzzy:
            return found
        return min(
            (m for m in self._models if name in m["title"]), key=lambda m: len(m["title"]), default=None
        )

    def _request_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """The options a request runs with: those in force, changed by its ``override_settings``."""
        with self._lock:
            options = dict(self._options)
        overrides = body.get("override_settings")
        for key, value in (overrides if isinstance(overrides, dict) else {}).items():
            if key == "sd_model_checkpoint":
                found = self._find_checkpoint(value, fuzzy=False) if isinstance(value, str) else None
                if found is not None:  # an unknown checkpoint override is dropped
                    options[key] = found["title"]
            elif key in options:
                options[key] = value
        return options

    def _resolve_sampler(self, name: str, scheduler: Any) -> tuple[str, str | None]:
        """The sampler and scheduler label A1111 v1.10 runs (``get_sampler_and_scheduler`` and the API).

        A trailing scheduler label, name or alias is cut off the sampler name (case-sensitive, in A1111's
        scheduler order, so "X SGM Uniform" loses " Uniform"); an explicit ``scheduler`` still wins. An unknown
        sampler silently becomes the first one, an unknown scheduler Automatic (reported as none).
        """
        named: str | None = None
        for known in self._schedulers:
            known_label, aliases = _SCHEDULERS.get(known, (known, ()))
            for spelling in (known_label, known, *aliases):
                if name.endswith(" " + spelling):
                    named, name = known_label, name[: -len(spelling) - 1]
                    break
        sampler = name if name in self._samplers else (self._samplers or ["DPM++ 2M"])[0]
        label = self._scheduler_label(str(scheduler)) if scheduler else named
        return sampler, None if label == "Automatic" else label

    def _scheduler_label(self, name: str) -> str:
        """The label A1111 reports for a scheduler given by name or label; unknown ones become Automatic."""
        for known in self._schedulers:
            label, _ = _SCHEDULERS.get(known, (known, ()))
            if name in (known, label):
                return label
        return "Automatic"

    def _scheduler_entry(self, name: str) -> dict[str, Any]:
        label = self._scheduler_label(name)
        return {"name": name, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}

    @staticmethod
    def _upscaler_entry(name: str) -> dict[str, Any]:
        builtin = name in ("None", "Lanczos", "Nearest")
        path = None if builtin else f"/models/ESRGAN/{name}.pth"
        return {
            "name": name,
            "model_name": None if builtin else name,
            "model_path": path,
            "model_url": None,
            "scale": 4,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not block stop()

    def __init__(self, address: tuple[str, int], sim: SimulatedWebUI) -> None:
        self.sim = sim
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which can stall on reverse DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away is not an error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: don't wait for delayed ACKs
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            response = self.server.sim._handle(method, self.path, dict(self.headers.items()), raw)
        except _Dropped:
            self.close_connection = True
            return
        except Exception as exc:  # a simulator bug still answers in A1111's error shape
            response = _a1111_error(500, type(exc).__name__, str(exc)).response
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: no per-request line on stderr."""


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
    "DEFAULT_ADETAILER_MODELS",
    "DEFAULT_MODELS",
    "DEFAULT_SAMPLERS",
    "DEFAULT_SCHEDULERS",
    "DEFAULT_UPSCALERS",
    "DEFAULT_VAES",
    "LATENT_UPSCALE_MODES",
    "Fault",
    "RecordedRequest",
    "SimulatedWebUI",
    "serve",
]
