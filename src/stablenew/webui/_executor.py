"""WebUIExecutor: runs one plan stage on an AUTOMATIC1111 WebUI (the runner's StageExecutor).

- ``run_stage(stage_type, payload)`` maps the neutral payload to A1111 request bodies
  (:mod:`stablenew.webui._payloads`), one call per input image for the stages that take one, and
  returns ``{"images": [b64...], "meta": {...}}``. Images are passed through untouched.
- While a call runs, a poller (:mod:`~stablenew.webui._progress`) reads ``/sdapi/v1/progress`` every
  ``progress_interval`` seconds, reports the stage's fraction to ``on_progress`` and asks ``should_cancel``.
- ``POST /sdapi/v1/interrupt`` stops whatever the WebUI is generating, whoever asked for it. So a cancel
  interrupts only while our own request is the one generating: each txt2img/img2img request carries a
  ``force_task_id``, and ``POST /internal/progress`` must answer ``active`` for it. While ours waits
  behind another client's, or where the WebUI cannot tell (``--nowebui`` has no ``/internal/progress``;
  extras take no task id), the call runs to its end and the stage stops after it. Either way the stage's
  output is discarded and it raises :class:`~stablenew.errors.Canceled`.
  The interrupt of our own request also aborts our read of the call (:meth:`WebUIClient.abort`), so the
  stage ends within seconds even when the WebUI ignores the interrupt or drips its answer. Each call's
  answer is bounded by :func:`~stablenew.webui._bounded.answer_limit`.
- ``preflight(plan)`` checks, once per WebUI (cached), that the WebUI has everything the plan names
  (its :class:`~stablenew.webui._inventory.Inventory`), and remembers each name's exact spelling there
  so requests carry names A1111 will not silently replace (:mod:`~stablenew.webui._preflight`).
- A stage call that returns no images (interrupted by someone else, ``send_images`` off) is a
  failure (:class:`~stablenew.errors.WebUIHTTPError` with status 200), not an empty success; so is
  one whose images do not all decode to their end (Pillow, bounded by ``MAX_OUTPUT_PIXELS``): both
  transient, the WebUI may do better next time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from stablenew.errors import Canceled, WebUIError, WebUIHTTPError
from stablenew.pipeline import MAX_OUTPUT_PIXELS, StageExecutionPlan, StageType, checked_image_data

from ._bounded import answer_limit
from ._client import GenerationResult, WebUIClient
from ._fields import STAGE_ROUTES
from ._images import ImageBytes, image_size
from ._inventory import Inventory
from ._payloads import adetailer_body, img2img_body, txt2img_body, upscale_body
from ._preflight import Preflight
from ._progress import ProgressPoller

ProgressCallback = Callable[[StageType, float], None]
CancelCheck = Callable[[], bool]


class WebUIExecutor:
    """Runs stages on one WebUI through a :class:`WebUIClient`."""

    def __init__(
        self,
        client: WebUIClient,
        *,
        progress_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        self.client = client
        self.progress_interval = progress_interval
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self._checks = Preflight(client)  # the inventory read last, and each name's spelling there
        self._last_task: str | None = None  # the force_task_id of the last request sent

    # ------------------------------------------------------------------ preflight
    @property
    def inventory(self) -> Inventory | None:
        """What preflight last read from the WebUI (None before the first preflight)."""
        return self._checks.inventory

    def use_inventory(self, inventory: Inventory | None) -> None:
        """Preflight against ``inventory`` (e.g. cached by another job) instead of fetching one."""
        self._checks.use_inventory(inventory)

    def preflight(self, plan: StageExecutionPlan) -> None:
        """Check that the WebUI has everything ``plan`` names, before any GPU work.

        Raises:
            WebUIRejected: naming the missing thing and listing what exists.
            ConfigError: a request the plan asks for cannot be built (a bad ADetailer tab, a sampler
                name whose scheduler disagrees with the scheduler given).
            WebUIUnavailable / WebUITimeout / WebUIHTTPError: the WebUI could not be asked.
        """
        self._checks.check(plan)

    # ------------------------------------------------------------------ running
    def interrupt(self) -> None:
        """Ask the WebUI to stop whatever it is generating, whoever sent it."""
        self.client.interrupt()

    def interrupt_own(self) -> bool:
        """Interrupt the WebUI if our last request is the one generating, or if the WebUI cannot tell
        (no ``/internal/progress``, or a request without a task id); never while ours waits behind
        another client's or is done. Returns whether an interrupt was sent."""
        task = self._last_task
        answer = None if task is None else self.client.task_progress(task)
        if answer is not None and not answer.get("active"):
            return False
        self.client.interrupt()
        return True

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one stage and return ``{"images": [...], "meta": {...}, "decoded": [...]}``: the images
        as the WebUI sent them (base64) and, in ``decoded``, their bytes as checked (see the runner).

        Raises:
            WebUIError: from the client, with ``.stage`` set.
            Canceled: a cancel was requested while the stage ran.
        """
        started = time.time()
        clock = time.perf_counter()
        inputs = list(payload.get("input_images") or [])
        if stage_type is StageType.IMG2IMG and not inputs:
            inputs = list(payload["config"].get("init_images") or [])
        if stage_type is not StageType.TXT2IMG and not inputs:
            raise ValueError(f"stage {stage_type.value} has no input image")

        images: list[str] = []
        decoded: list[bytes] = []
        seeds: list[int | None] = []
        requests_sent: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        # The input images are handed over: neither the payload nor this loop keeps one once it is sent,
        # so a multi-MB image is not held while the next answer downloads.
        payload["input_images"] = []
        calls: list[str | ImageBytes | None] = [None] if stage_type is StageType.TXT2IMG else inputs
        del inputs
        total = len(calls)
        calls.reverse()
        poller = ProgressPoller(self, stage_type) if self._polls else None
        if poller:
            poller.start()
        try:
            for number in range(total):
                image = calls.pop()
                body = self._body(stage_type, payload, image)
                limit = answer_limit(body, image)
                del image
                self._last_task = None
                if stage_type is not StageType.UPSCALE:  # extras take no task id
                    body["force_task_id"] = self._last_task = f"task(stablenew-{uuid.uuid4().hex[:16]})"
                requests_sent.append(_without_images(body))
                if poller:
                    poller.part = (number, total)
                    poller.task = body.get("force_task_id")
                result = self._call(stage_type, body, poller, limit)
                if not result.images:
                    route = STAGE_ROUTES[stage_type.value]
                    raise WebUIHTTPError(
                        200,
                        f"{route} returned no images (interrupted on the WebUI, or send_images off)",
                        url=self.client.base_url + route,
                        stage=stage_type.value,
                        transient=True,
                    )
                decoded += _require_whole_images(
                    result.images, self.client.base_url + STAGE_ROUTES[stage_type.value], stage_type
                )
                images.extend(result.images)
                info = result.info or info
                seeds.extend(self._seeds(stage_type, body, result, payload.get("input_seed")))
                del body, result
        finally:
            if poller:
                poller.stop()

        ended = time.time()
        width, height = image_size(images[0]) if images else (None, None)
        meta: dict[str, Any] = {
            "stage": stage_type.value,
            "endpoint": STAGE_ROUTES[stage_type.value],
            "seed": next((s for s in seeds if s is not None), payload.get("input_seed")),
            "seeds": seeds,
            "width": width,
            "height": height,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "ended_at": datetime.fromtimestamp(ended, UTC).isoformat(),
            "duration_s": round(time.perf_counter() - clock, 4),
            "requests": requests_sent,
            "info": _info_subset(info) if stage_type is not StageType.ADETAILER else {},
        }
        return {"images": images, "meta": meta, "decoded": decoded}

    def stage_requests(self, stage_type: StageType, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The request bodies :meth:`run_stage` would send for ``payload`` (one per input image), built
        but not sent, with the names preflight made canonical. The payload is left as it is.

        Raises:
            ValueError / ConfigError: as :meth:`run_stage` would, before its first call.
        """
        inputs = list(payload.get("input_images") or [])
        if stage_type is StageType.IMG2IMG and not inputs:
            inputs = list(payload["config"].get("init_images") or [])
        if stage_type is not StageType.TXT2IMG and not inputs:
            raise ValueError(f"stage {stage_type.value} has no input image")
        calls: list[str | ImageBytes | None] = [None] if stage_type is StageType.TXT2IMG else inputs
        return [self._body(stage_type, payload, image) for image in calls]

    def loaded_checkpoint(self) -> str | None:
        """The checkpoint the WebUI has loaded now (its title, with the hash A1111 shows)."""
        value = self.client.options().get("sd_model_checkpoint")
        return str(value) if value else None

    def _body(
        self, stage_type: StageType, payload: Mapping[str, Any], image: str | ImageBytes | None
    ) -> dict[str, Any]:
        if stage_type is StageType.TXT2IMG:
            body = txt2img_body(payload)
        elif stage_type is StageType.IMG2IMG:
            body = img2img_body(payload, image or "")
        elif stage_type is StageType.UPSCALE:
            body = upscale_body(payload, image or "")
        else:
            body = adetailer_body(payload, image or "")
        return self._checks.apply_canonical_names(body)

    def _call(
        self, stage_type: StageType, body: dict[str, Any], poller: ProgressPoller | None, limit: int
    ) -> GenerationResult:
        try:
            if stage_type is StageType.TXT2IMG:
                result = self.client.txt2img(body, release_images=True, max_answer_bytes=limit)
            elif stage_type is StageType.UPSCALE:
                result = self.client.extra_single_image(body, release_images=True, max_answer_bytes=limit)
            else:
                result = self.client.img2img(body, release_images=True, max_answer_bytes=limit)
        except WebUIError as exc:
            exc.stage = stage_type.value
            if poller and poller.canceled:
                raise Canceled(f"canceled during {stage_type.value}") from exc
            raise
        if (poller and poller.canceled) or (self.should_cancel and self.should_cancel()):
            raise Canceled(f"canceled during {stage_type.value}; its partial output was discarded")
        return result

    @property
    def _polls(self) -> bool:
        return self.on_progress is not None or self.should_cancel is not None

    @staticmethod
    def _seeds(
        stage_type: StageType, body: Mapping[str, Any], result: GenerationResult, input_seed: Any
    ) -> list[int | None]:
        if stage_type in (StageType.TXT2IMG, StageType.IMG2IMG):
            all_seeds = result.info.get("all_seeds")
            if isinstance(all_seeds, list) and all_seeds:
                return [int(s) for s in all_seeds][: len(result.images)] + [None] * max(
                    0, len(result.images) - len(all_seeds)
                )
            seed = result.info.get("seed")
            return [int(seed) if isinstance(seed, int) else None] * len(result.images)
        # ADetailer's info describes its dummy pass, so the seed we sent is the truth; an upscale
        # has no seed of its own and carries its input's forward.
        seed = body.get("seed", input_seed)
        return [int(seed) if isinstance(seed, int) and seed >= 0 else None] * len(result.images)


def _require_whole_images(images: list[str], url: str, stage_type: StageType) -> list[bytes]:
    """Every returned image must decode to its end before the stage counts as done: a truncated PNG
    would otherwise be recorded (its sha256 matches what was written) and reused by a retry. A bad one
    fails the call as transient: the WebUI may send it whole next time, within the stage's retries.
    Returns the images' bytes as decoded for the check (written as they are, not decoded again)."""
    decoded = []
    for index, image in enumerate(images):
        data, problem = checked_image_data(image, max_pixels=MAX_OUTPUT_PIXELS)
        if data is None:
            raise WebUIHTTPError(
                200, f"image {index} {problem}", url=url, stage=stage_type.value, transient=True
            )
        decoded.append(data)
    return decoded


def _without_images(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as recorded in meta and the manifest: image data replaced by a marker."""
    slim = dict(body)
    if "init_images" in slim:
        slim["init_images"] = [f"<image {i}>" for i in range(len(slim["init_images"]))]
    if "image" in slim:
        slim["image"] = "<image>"
    return slim


_INFO_KEYS = (
    "seed",
    "all_seeds",
    "subseed",
    "sd_model_name",
    "sd_model_hash",
    "sampler_name",
    "steps",
    "cfg_scale",
    "clip_skip",
    "sd_vae_name",
    "width",
    "height",
    "infotexts",
    "extra_generation_params",
    "version",
)


def _info_subset(info: Mapping[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in _INFO_KEYS if k in info}
