"""What every benchmark runs against: real Redis, a simulated WebUI with realistic images, real processes.

- Redis: ``STABLENEW_REDIS_URL`` if set (it must point at an *empty* database, which the bench
  empties again between runs and at the end), else a throw-away embedded server.
- WebUI: :class:`BenchWebUI`, the package's :class:`SimulatedWebUI` at zero latency with three
  changes for benchmarking, made through its public seams (an :class:`Images` strategy and a
  ``recorder``):

  1. Realistic image sizes. The simulator's own PNGs are flat colour (33 KB at 1024x1024), far
     from what a real WebUI sends (SDXL PNGs are 1.5-1.9 MB at 1024x1024). Here every image is
     noise of 3 bits per channel, encoded once per size: 1.67 bytes/pixel, 1.75 MB at 1024x1024,
     7 MB at 2048x2048, 28 MB at 4096x4096 (still with the ``parameters`` text chunk).
  2. Of an input image only the header is decoded (size and text chunks), each answer's base64
     is encoded once and reused, and answers are serialized with the base64 spliced in rather
     than scanned by ``json.dumps`` (base64 needs no escaping). Zero latency stands for "the
     WebUI's own work takes no time": decoding a 2048x2048 PNG to pixels and escaping 9 MB
     strings on every call were two thirds of the simulator's CPU and only diluted every ratio.
     The JSON on the wire means the same.
  3. The request log keeps method, path and time but drops bodies, which would otherwise hold
     every multi-MB image of a 200-plan run in memory.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from stablenew.embedded import embedded_redis
from stablenew.simulator import Images, RecordedRequest, SimulatedWebUI, with_text_chunks

if TYPE_CHECKING:
    from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "producer" / "examples" / "full_pipeline.json"
STABLENEW = str(Path(sys.executable).with_name("stablenew"))
NOISE_BITS = 3  # per channel: 1.67 bytes/pixel after PNG compression, like SDXL output
_STAGE_BASE = {"txt2img": 60, "img2img": 80, "upscale": 100, "adetailer": 120}


# ---------------------------------------------------------------------------------------------- Redis
@contextmanager
def redis_url() -> Iterator[str]:
    """The Redis the bench uses: ``STABLENEW_REDIS_URL`` (must be an empty database) or an embedded one."""
    url = os.environ.get("STABLENEW_REDIS_URL")
    if not url:
        with embedded_redis() as embedded:
            yield embedded
        return
    conn = redis.Redis.from_url(url)
    if conn.dbsize():
        raise SystemExit(
            "bench: STABLENEW_REDIS_URL points at a database that is not empty; the bench empties its "
            "database between runs, so point it at an empty one (e.g. redis://host:6379/15)"
        )
    try:
        yield url
    finally:
        conn.flushdb()
        conn.close()


def reset(conn: redis.Redis) -> None:
    """Empty the bench's database between runs (it is ours: see :func:`redis_url`)."""
    conn.flushdb()


# ---------------------------------------------------------------------------------------------- images
def noisy_png(width: int, height: int, *, base: int = 90, seed: int = 0) -> bytes:
    """A PNG of ``NOISE_BITS`` bits of noise per channel: realistic size, deterministic, Pillow-decodable."""
    from PIL import Image

    mask = (1 << NOISE_BITS) - 1
    table = bytes(base + (value & mask) for value in range(256))
    pixels = random.Random(seed).randbytes(width * height * 3).translate(table)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


_HEADER_CHARS = 64 * 1024  # base64 characters: PNG signature, IHDR and the text chunks before IDAT


class BenchImages(Images):
    """Noise PNGs of realistic size, header-only decoding, answers encoded once and spliced into the JSON."""

    def __init__(self) -> None:
        super().__init__(cache=True)
        self._pngs: dict[tuple[str, int, int], bytes] = {}
        self._answers: dict[tuple[str, int, int, str], str] = {}
        self._png_lock = threading.Lock()

    def decode(self, encoded: Any) -> Image.Image:
        """Read only the image's header (size and text chunks)."""
        from PIL import Image

        try:
            if encoded.startswith("data:image/"):
                encoded = encoded.split(";")[1].split(",")[1]
            head = encoded[:_HEADER_CHARS]
            return Image.open(io.BytesIO(base64.b64decode(head[: len(head) // 4 * 4])))
        except Exception:
            return super().decode(encoded)  # answers A1111's error for an image it cannot read

    def encode(self, stage: str, width: int, height: int, seed: int, text: dict[str, str]) -> str:
        key = (stage, max(1, width), max(1, height))
        answer_key = (*key, json.dumps(text, sort_keys=True))
        with self._png_lock:  # rendered once per size, like image_cache, outside any measured run
            answer = self._answers.get(answer_key)
            if answer is None:
                png = self._pngs.get(key)
                if png is None:
                    png = self._pngs[key] = noisy_png(key[1], key[2], base=_STAGE_BASE.get(stage, 90))
                if len(self._answers) >= 64:
                    self._answers.clear()
                answer = base64.b64encode(with_text_chunks(png, text)).decode("ascii")
                self._answers[answer_key] = answer
        return answer

    def to_json(self, payload: Any) -> bytes:
        """Image strings copied in instead of escaped by ``json.dumps`` (base64 needs no escaping)."""
        images = payload.get("images") if isinstance(payload, dict) else None
        image = payload.get("image") if isinstance(payload, dict) else None
        strings = images if isinstance(images, list) else [image] if isinstance(image, str) else []
        plain = (isinstance(s, str) and s.isascii() and '"' not in s and "\\" not in s for s in strings)
        if not strings or not all(plain):
            return super().to_json(payload)
        key = "images" if isinstance(images, list) else "image"
        rest = json.dumps({k: v for k, v in payload.items() if k != key})
        quoted = b", ".join(b'"' + s.encode("ascii") + b'"' for s in strings)
        value = b"[" + quoted + b"]" if key == "images" else quoted
        return b'{"' + key.encode() + b'": ' + value + (b", " + rest[1:].encode() if len(rest) > 2 else b"}")


class BenchWebUI(SimulatedWebUI):
    """The simulator with realistic PNG sizes and a request log without bodies (see the module doc).

    ``keep_bodies`` (off by default) keeps the next requests' bodies, to capture what a worker sent.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            latency=0.0, images=BenchImages(), recorder=self._record, keep_requests=False, **kwargs
        )
        self.keep_bodies = False
        self._log: list[RecordedRequest] = []
        self._log_lock = threading.Lock()

    def _record(self, request: RecordedRequest) -> None:
        request.answer = None
        if not self.keep_bodies:
            request.body = None
        with self._log_lock:
            self._log.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, by arrival (bodies only while ``keep_bodies`` was on)."""
        with self._log_lock:
            return sorted(self._log, key=lambda r: r.time)

    def clear_requests(self) -> None:
        super().clear_requests()
        with self._log_lock:
            self._log.clear()

    def times(self, method: str, path: str) -> list[float]:
        """``time.time()`` of every recorded request to ``path`` (the simulator's clock)."""
        return [r.time for r in self.requests if r.method == method and r.path == path]


GENERATION_POSTS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image")


def bodies_from(requests: list[RecordedRequest], stages: int = 4) -> list[dict[str, Any]]:
    """The first plan's generation calls as templates: images blanked, for the baselines to fill in."""
    posts = [r for r in requests if r.method == "POST" and r.path in GENERATION_POSTS]
    bodies = []
    for request in posts[:stages]:
        body = dict(request.body)
        if "init_images" in body:
            body["init_images"] = [None]
        if "image" in body:
            body["image"] = None
        bodies.append(body)
    if len(bodies) != stages:
        raise RuntimeError(f"captured {len(bodies)} generation calls, expected {stages}")
    return bodies


# ---------------------------------------------------------------------------------------------- configs
def four_stage_config(*, upscale: float = 2.0, prompt_suffix: str = "") -> dict[str, Any]:
    """The example's four stages without hires: txt2img 1024x1024 -> img2img -> upscale -> ADetailer.

    With ``upscale`` 2 the last two stages work on 2048x2048 images, with 4 on 4096x4096.
    """
    config: dict[str, Any] = json.loads(EXAMPLE_CONFIG.read_text())
    config["hires_enabled"] = False
    for key in ("hires_upscaler_name", "hires_denoise_strength", "hires_scale_factor"):
        config.pop(key, None)
    config["upscale_config"]["upscaling_resize"] = upscale
    # No checkpoint named: the plans go on the band queue ("default") that the plain-RQ baselines
    # listen on, not on a checkpoint's queue (model-aware dispatch; the fleet scenario measures that).
    config["txt2img_config"].pop("model", None)
    if prompt_suffix:
        config["txt2img_config"]["prompt"] += prompt_suffix
    return config


def distinct_configs(count: int) -> list[dict[str, Any]]:
    """``count`` full configs that differ (prompt and seed), as a GUI batch would."""
    template = four_stage_config()
    configs = []
    for index in range(count):
        config = copy.deepcopy(template)
        config["txt2img_config"]["prompt"] += f", variation {index}"
        config["txt2img_config"]["seed"] = 1000 + index
        configs.append(config)
    return configs


# ---------------------------------------------------------------------------------------------- processes
def process_env(redis: str, webui: str, output_dir: str | Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process: our settings, short TTLs so nothing lingers, the repo on path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLENEW_")}
    env.update(
        STABLENEW_REDIS_URL=redis,
        STABLENEW_WEBUI_URL=webui,
        STABLENEW_OUTPUT_DIR=str(output_dir),
        STABLENEW_RESULT_TTL="3600",
        STABLENEW_FAILURE_TTL="3600",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    env.update(extra)
    return env


def run_process(argv: list[str], env: Mapping[str, str], *, timeout: float, what: str) -> str:
    """Run a process to its end from the repo root; return its stdout; raise with its stderr if it fails."""
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(
            argv, cwd=REPO, env=dict(env), stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False
        )
        if done.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited {done.returncode}:\n{tail}")
    return done.stdout.decode()


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder on the real file system (outputs go to disk, as in production)."""
    path = Path(tempfile.mkdtemp(prefix=f"stablenew-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def empty_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def tree_bytes(path: Path, pattern: str = "*.png") -> tuple[int, int]:
    """(number of files, total bytes) matching ``pattern`` under ``path``."""
    files = list(path.rglob(pattern))
    return len(files), sum(f.stat().st_size for f in files)
