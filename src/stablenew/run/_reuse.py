"""Stage reuse: a stage whose exact request another job already ran takes that job's files.

The *stage key* of a stage is the sha256 of everything that decides its pixels: the request bodies
the worker would send (each input image replaced by the sha256 of its bytes; ``send_images``,
``save_images`` and the other flags that only say where results go left out) and the WebUI's
identity of the checkpoint (its title, with the hash A1111 shows) and of the VAE. A stage has a key
only when it is deterministic: every request carries a resolved seed (never -1), or no seed at all
(an extras upscale). A stage that ran with seed -1 is remembered under the key of its *resolved*
seed, so a rerun that pins that seed (``stablenew rerun``) finds it; an identical submit with -1
never does.

:class:`ReusingExecutor` sits in front of the WebUI executor: before a stage it looks its key up in
a :class:`StageIndex` (the worker's lives in Redis, :mod:`stablenew.jobs.reuse_index`), and when the
stage recorded there still has every file intact it links them into the new job's folder
(:meth:`~stablenew.run.JobOutputs.take_stage`: sha256 checked) and returns them marked
``reused_from`` instead of calling the WebUI. The recorder remembers each stage it finished under
its key.

A reused stage hands its images on as :class:`~stablenew.run.StoredImage` (a checked file, not its
base64): the next stage's key needs only their sha256 and size. Only when a stage really runs are
its input images read and checked again, so of a run of reused stages only the last one's images
are ever read into memory; the request then sends them as base64 encoded a slice at a time
(:class:`~stablenew.webui.ImageBytes`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from stablenew.errors import Superseded
from stablenew.pipeline import StageExecutor, StageResult, StageType
from stablenew.webui import ImageBytes, WebUIExecutor

from ._outputs import JobOutputs, OutputFile, StoredImage

log = logging.getLogger("stablenew.reuse")

STAGE_KEY_VERSION = 1
# Request fields that say where results go or how the call behaves, never what is drawn.
_VOLATILE_FIELDS = frozenset(
    {"send_images", "save_images", "do_not_save_samples", "do_not_save_grid", "force_task_id"}
)
_IMAGE_FIELDS = ("init_images", "image", "mask")


@dataclass(frozen=True)
class ModelIdentity:
    """The WebUI's names for what a stage runs on: checkpoint title (with hash) and VAE."""

    checkpoint: str | None
    vae: str | None


ImageDigest = Callable[[Any], str]


def image_digest(image: Any) -> str:
    """``sha256:<hex>`` of an image's bytes (base64 or a data URL decoded, or :class:`ImageBytes`)."""
    if isinstance(image, ImageBytes):
        return "sha256:" + hashlib.sha256(image.data).hexdigest()
    if not isinstance(image, str):
        return f"<{type(image).__name__}>"
    try:
        data = base64.b64decode(
            image.split(",", 1)[1] if image.startswith("data:") else image, validate=False
        )
    except (binascii.Error, ValueError):
        data = image.encode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def request_identity(body: Mapping[str, Any], digest: ImageDigest = image_digest) -> dict[str, Any]:
    """A request body as the stage key sees it: images replaced by their sha256, flags dropped."""
    slim: dict[str, Any] = {}
    for key, value in body.items():
        if key in _VOLATILE_FIELDS:
            continue
        if key in _IMAGE_FIELDS and value is not None:
            value = [digest(v) for v in value] if isinstance(value, list) else digest(value)
        slim[key] = value
    return slim


def is_deterministic(bodies: Sequence[Mapping[str, Any]]) -> bool:
    """Every request has a resolved seed, or no seed at all (an extras upscale)."""
    for body in bodies:
        seed = body.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            return False
    return True


def stage_key(
    stage_type: StageType | str,
    bodies: Sequence[Mapping[str, Any]],
    models: ModelIdentity,
    *,
    digest: ImageDigest = image_digest,
) -> str | None:
    """The stage key of a stage that sends ``bodies`` to a WebUI running ``models``; None when the
    stage is not deterministic (a seed of -1), so it must run. ``digest`` gives an input image's
    sha256 (the recorder already knows those of the images it wrote)."""
    if not bodies or not is_deterministic(bodies):
        return None
    doc = {
        "v": STAGE_KEY_VERSION,
        "stage": stage_type.value if isinstance(stage_type, StageType) else stage_type,
        "requests": [request_identity(body, digest) for body in bodies],
        "checkpoint": models.checkpoint,
        "vae": models.vae,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_seed(bodies: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """``bodies`` as they would be with ``seed`` pinned (what a seed -1 request really ran with)."""
    return [{**body, "seed": seed} if "seed" in body else dict(body) for body in bodies]


@dataclass(frozen=True)
class ReusableStage:
    """What the index records of a finished stage: whose it is and its files (paths relative to the
    output root, with their sha256), the seed it ran with and the kept meta."""

    job_id: str
    index: int
    type: str
    outputs: list[OutputFile]
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ReusableStage:
        """Raises ValueError / TypeError / KeyError for a record that is not one."""
        doc = json.loads(text)
        outputs = [OutputFile(**item) for item in doc["outputs"]]
        return cls(
            job_id=str(doc["job_id"]),
            index=int(doc["index"]),
            type=str(doc["type"]),
            outputs=outputs,
            seed=doc.get("seed"),
            meta=dict(doc.get("meta") or {}),
        )


class StageIndex(Protocol):
    """Where finished stages are found by their key (the worker's: Redis, with the results' TTL)."""

    def find(self, key: str) -> ReusableStage | None:
        """The stage recorded under ``key`` if its job still holds it as finished, else None.

        Raises:
            Superseded: the run looking no longer owns its job (it must stop, taking nothing).
        """

    def remember(self, stages: Mapping[str, ReusableStage]) -> None:
        """Record stages that have just finished, each under its key (their state is already saved)."""


class ReusingExecutor:
    """Runs stages through ``inner`` unless one recorded in ``index`` made the same request.

    ``lookup=False`` (``--no-reuse``) never takes a recorded stage but still reports each stage's key,
    so what it runs can be reused by later jobs. ``on_run`` is called right before a stage is handed
    to ``inner`` (the recorder then records it running), never for a stage taken from another job.
    """

    def __init__(
        self,
        inner: StageExecutor,
        webui: WebUIExecutor,
        index: StageIndex,
        outputs: JobOutputs,
        *,
        lookup: bool = True,
        input_digests: Callable[[int], Sequence[str]] | None = None,
        on_run: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.webui = webui
        self.index = index
        self.outputs = outputs
        self.lookup = lookup
        # The sha256 of the images stage N-1 left (what stage N gets): known, so not hashed again.
        self.input_digests = input_digests
        self.on_run = on_run
        self._loaded: str | None = None

    def run_stage(self, stage_type: StageType, payload: dict[str, Any]) -> StageResult:
        inputs = list(payload.get("input_images") or [])
        stored = any(isinstance(image, StoredImage) for image in inputs)
        # Of a stored input image the key needs only its sha256 and its size (from its first bytes).
        probe = {**payload, "input_images": _heads(inputs)} if stored else payload
        bodies, models = self._requests(stage_type, probe)
        if bodies is None and stored:  # its first bytes did not tell its size: read it whole
            payload["input_images"] = inputs = read_images(inputs)
            stored, probe = False, payload
            bodies, models = self._requests(stage_type, probe)
        digest = self._digests(probe, payload)
        key = stage_key(stage_type, bodies, models, digest=digest) if bodies is not None else None
        if key is not None and self.lookup:
            reused = self._reuse(key, stage_type, int(payload.get("index") or 0))
            if reused is not None:
                return reused
        if self.on_run is not None:
            self.on_run()
        if stored:
            payload["input_images"] = read_images(inputs)
        del inputs, probe
        result = self.inner.run_stage(stage_type, payload)
        meta = result.setdefault("meta", {})
        if key is None and bodies is not None and isinstance(meta.get("seed"), int):
            key = stage_key(stage_type, with_seed(bodies, meta["seed"]), models, digest=digest)
        if key is not None:
            meta["stage_key"] = key
        return result

    def _digests(self, probe: Mapping[str, Any], payload: Mapping[str, Any]) -> ImageDigest:
        """How the key sees the input images of ``probe``: a stored image (in ``payload`` at the same
        place) by the sha256 it was checked with, one the stage before wrote by the sha256 recorded."""
        inputs = probe.get("input_images") or []
        originals = payload.get("input_images") or []
        known = {
            id(image): f"sha256:{original.sha256}"
            for image, original in zip(inputs, originals, strict=False)
            if isinstance(original, StoredImage)
        }
        if len(known) < len(inputs):
            known = {**self._recorded(inputs, payload.get("index")), **known}
        if not known:
            return image_digest

        def digest(image: Any) -> str:
            return known.get(id(image)) or image_digest(image)

        return digest

    def _recorded(self, inputs: Sequence[Any], index: Any) -> dict[int, str]:
        """The sha256 stage ``index - 1`` recorded of the images it wrote (what stage ``index`` gets)."""
        if self.input_digests is None or not isinstance(index, int) or index < 1:
            return {}
        recorded = list(self.input_digests(index))
        if len(recorded) != len(inputs):
            return {}
        return {id(image): f"sha256:{sha}" for image, sha in zip(inputs, recorded, strict=True)}

    def _requests(
        self, stage_type: StageType, payload: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]] | None, ModelIdentity]:
        """The bodies the stage would send, and the models they run on; None when they cannot be
        built (the stage then runs, and fails as it would have)."""
        try:
            bodies = self.webui.stage_requests(stage_type, payload)
        except Exception:  # the real run raises the same error, with its full context
            return None, ModelIdentity(None, None)
        if stage_type is StageType.UPSCALE:
            return bodies, ModelIdentity(None, None)
        overrides = bodies[0].get("override_settings") or {}
        checkpoint = overrides.get("sd_model_checkpoint")
        if checkpoint:
            self._loaded = None  # the request loads it, and leaves it loaded (no restore afterwards)
        else:
            try:
                # Asked once per run: only a request that names a checkpoint changes it.
                self._loaded = checkpoint = self._loaded or self.webui.loaded_checkpoint()
            except Exception:
                return None, ModelIdentity(None, None)
            if not checkpoint:
                return None, ModelIdentity(None, None)
        return bodies, ModelIdentity(str(checkpoint), overrides.get("sd_vae"))

    def _reuse(self, key: str, stage_type: StageType, index: int) -> StageResult | None:
        try:
            found = self.index.find(key)
        except Superseded:
            raise
        except Exception:  # an index that cannot be read is a miss, never a failed stage
            log.warning(
                "job %s: stage index unreadable; running the stage", self.outputs.job_id, exc_info=True
            )
            return None
        if found is None or found.job_id == self.outputs.job_id or found.type != stage_type.value:
            return None
        try:
            taken = self.outputs.take_stage(index, stage_type.value, found.outputs)
        except (OSError, ValueError) as exc:
            log.info(
                "job %s: %s of job %s not taken (%s); running the stage",
                self.outputs.job_id,
                stage_type.value,
                found.job_id,
                exc,
            )
            return None
        log.info(
            "job %s: %s reused from job %s stage %d",
            self.outputs.job_id,
            stage_type.value,
            found.job_id,
            found.index,
        )
        meta = {
            **found.meta,
            "stage": stage_type.value,
            "seed": found.seed,
            "seeds": [o.seed for o in found.outputs],
            "stage_key": key,
            "reused_from": {"job_id": found.job_id, "index": found.index, "outputs": taken},
        }
        return {"images": self.outputs.stored_images(taken), "meta": meta}


def read_images(images: Sequence[Any]) -> list[Any]:
    """``images`` with each :class:`~stablenew.run.StoredImage` read into its bytes (checked again),
    which the WebUI client sends as base64 (:class:`~stablenew.webui.ImageBytes`).

    Raises:
        OSError: a stored image is gone, or no longer has the sha256 it was taken with (the run
            fails; the next run of the job finds that stage's file changed and runs it again).
    """
    read = []
    for image in images:
        if isinstance(image, StoredImage):
            try:
                image = image.read()
            except (OSError, ValueError) as exc:
                raise OSError(f"an input image taken from another job cannot be used: {exc}") from exc
        read.append(image)
    return read


def _heads(images: Sequence[Any]) -> list[Any]:
    """``images`` with each stored one replaced by the base64 of its first bytes."""
    try:
        return [image.head() if isinstance(image, StoredImage) else image for image in images]
    except OSError as exc:
        raise OSError(f"an input image taken from another job cannot be read: {exc}") from exc
