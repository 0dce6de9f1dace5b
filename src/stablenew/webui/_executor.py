"""WebUIExecutor: runs one plan stage on an AUTOMATIC1111 WebUI (the runner's StageExecutor).

- ``run_stage(stage_type, payload)`` maps the neutral payload to A1111 request bodies
  (:mod:`stablenew.webui._payloads`), one call per input image for the stages that take one, and
  returns ``{"images": [b64...], "meta": {...}}``. Images are passed through untouched.
- While a call runs, a poller reads ``/sdapi/v1/progress`` every ``progress_interval`` seconds,
  reports the stage's fraction to ``on_progress`` and asks ``should_cancel``. The fraction comes from
  A1111's ``state`` (``job_no`` / ``job_count`` and the sampling step), as it is: it rises within a job and
  may fall where A1111's own count grows (ADetailer adds a job per mask it found after its 1-step dummy
  pass, whose "1.0" is left out); an idle WebUI (between calls) reports nothing.
- ``POST /sdapi/v1/interrupt`` stops whatever the WebUI is generating, whoever asked for it. So a cancel
  interrupts only while our own request is the one generating: each txt2img/img2img request carries a
  ``force_task_id``, and ``POST /internal/progress`` must answer ``active`` for it. While ours waits
  behind another client's, or where the WebUI cannot tell (``--nowebui`` has no ``/internal/progress``;
  extras take no task id), the call runs to its end and the stage stops after it. Either way the stage's
  output is discarded and it raises :class:`~stablenew.errors.Canceled`.
  The interrupt of our own request also aborts our read of the call (:meth:`WebUIClient.abort`), so the
  stage ends within seconds even when the WebUI ignores the interrupt or drips its answer. Each call's
  answer is bounded by :func:`~stablenew.webui._bounded.answer_limit`.
- ``preflight(plan)`` checks, once per WebUI (cached), that every checkpoint, VAE, sampler, scheduler,
  upscaler and ADetailer model the plan names exists there, and that the WebUI takes as many ADetailer
  tabs as the plan has passes (``/sdapi/v1/script-info``), and remembers each name's exact
  spelling on that WebUI so requests carry names A1111 will not silently replace. A sampler name
  carrying a scheduler ("DPM++ 2M Karras") is checked as the two names the request will carry. The
  ADetailer tabs are built and checked here too, so a plan from the queue with a bad tab fails
  before any GPU work, not at its last stage.
- A stage call that returns no images (interrupted by someone else, ``send_images`` off) is a
  failure (:class:`~stablenew.errors.WebUIHTTPError` with status 200), not an empty success; so is
  one whose images do not all decode to their end (Pillow, bounded by ``MAX_OUTPUT_PIXELS``): both
  transient, the WebUI may do better next time.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stablenew.errors import Canceled, WebUIError, WebUIHTTPError, WebUIRejected
from stablenew.pipeline import MAX_OUTPUT_PIXELS, StageExecutionPlan, StageType, image_data_problem
from stablenew.webui._bounded import answer_limit
from stablenew.webui._client import GenerationResult, WebUIClient
from stablenew.webui._images import image_size
from stablenew.webui._payloads import (
    STAGE_ROUTES,
    USE_SAME_SCHEDULER,
    adetailer_body,
    adetailer_tab,
    hires_sampler_and_scheduler,
    img2img_body,
    sampler_and_scheduler,
    txt2img_body,
    upscale_body,
)

ProgressCallback = Callable[[StageType, float], None]
CancelCheck = Callable[[], bool]

_INVENTORY_TTL_S = 300.0
_BUILTIN_VAES = frozenset({"", "automatic", "none"})  # A1111's own sd_vae values, not files
_log = logging.getLogger("stablenew.webui.executor")  # the name log filters already use


@dataclass
class Inventory:
    """What one WebUI has: canonical names keyed by the lower-cased names a config may use."""

    checkpoints: dict[str, str] = field(default_factory=dict)
    vaes: dict[str, str] = field(default_factory=dict)
    samplers: dict[str, str] = field(default_factory=dict)
    schedulers: dict[str, str] = field(default_factory=dict)
    upscalers: dict[str, str] = field(default_factory=dict)
    hires_upscalers: dict[str, str] = field(default_factory=dict)
    adetailer_version: str | None = None
    adetailer_models: dict[str, str] = field(default_factory=dict)
    adetailer_max_tabs: int | None = None  # None: the WebUI did not say (no script-info entry)
    fetched_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "fetched_at"}


def _keyed(names: Iterable[str]) -> dict[str, str]:
    return {n.lower(): n for n in names if n}


def fetch_inventory(client: WebUIClient, *, need_adetailer: bool) -> Inventory:
    """Read the WebUI's models, samplers, schedulers, upscalers (and ADetailer's models)."""
    inv = Inventory(fetched_at=time.monotonic())
    for model in client.sd_models():
        title = str(model.get("title") or model.get("model_name") or "")
        base = title.split(" [", 1)[0]
        filename = str(model.get("filename") or "").replace("\\", "/").rsplit("/", 1)[-1]
        for alias in (title, base, str(model.get("model_name") or ""), filename):
            if alias:
                inv.checkpoints.setdefault(alias.lower(), title)
    for vae in client.sd_vae():
        name = str(vae.get("model_name") or "")
        filename = str(vae.get("filename") or "").replace("\\", "/").rsplit("/", 1)[-1]
        inv.vaes |= {alias.lower(): name for alias in (name, filename) if alias and name}
    for sampler in client.samplers():
        name = str(sampler.get("name") or "")
        inv.samplers |= _keyed([name]) | {a.lower(): name for a in sampler.get("aliases") or []}
    for scheduler in client.schedulers():
        name = str(scheduler.get("name") or "")
        inv.schedulers |= {k: name for k in _keyed([name, str(scheduler.get("label") or "")])}
    inv.upscalers = _keyed(str(u.get("name") or "") for u in client.upscalers())
    latent = _keyed(str(m.get("name") or "") for m in client.latent_upscale_modes())
    inv.hires_upscalers = inv.upscalers | latent
    if need_adetailer:
        inv.adetailer_version = client.adetailer_version()
        if inv.adetailer_version is not None:
            inv.adetailer_models = _keyed(client.adetailer_models())
            inv.adetailer_max_tabs = _adetailer_max_tabs(client)
    return inv


def _adetailer_max_tabs(client: WebUIClient) -> int | None:
    """How many ADetailer tabs the WebUI takes: its img2img script-info entry declares 2 + "Max tabs" args.

    A1111 copies no more than that many values into the script's arguments and drops the rest without a
    word (``Api.init_script_args``), so a tab beyond it would never run.
    """
    try:
        scripts = client.script_info()
    except WebUIRejected:  # a WebUI without the route: nothing to go by
        return None
    for script in scripts:
        if str(script.get("name") or "").lower() == "adetailer" and script.get("is_img2img"):
            args = script.get("args")
            return len(args) - 2 if isinstance(args, list) and len(args) > 2 else None
    return None


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
        self._inventory: Inventory | None = None
        self._names: dict[tuple[str, str], str] = {}
        self._last_task: str | None = None  # the force_task_id of the last request sent

    # ------------------------------------------------------------------ preflight
    @property
    def inventory(self) -> Inventory | None:
        """What preflight last read from the WebUI (None before the first preflight)."""
        return self._inventory

    def use_inventory(self, inventory: Inventory | None) -> None:
        """Preflight against ``inventory`` (e.g. cached by another job) instead of fetching one."""
        if inventory is not None:
            inventory.fetched_at = time.monotonic()
        self._inventory = inventory

    def preflight(self, plan: StageExecutionPlan) -> None:
        """Check that the WebUI has everything ``plan`` names, before any GPU work.

        Raises:
            WebUIRejected: naming the missing thing and listing what exists.
            ConfigError: a request the plan asks for cannot be built (a bad ADetailer tab, a sampler
                name whose scheduler disagrees with the scheduler given).
            WebUIUnavailable / WebUITimeout / WebUIHTTPError: the WebUI could not be asked.
        """
        need_ad = StageType.ADETAILER in plan.get_stage_types()
        inv = self._inventory
        stale = inv is None or time.monotonic() - inv.fetched_at > _INVENTORY_TTL_S
        if stale or (
            need_ad and inv is not None and not inv.adetailer_models and inv.adetailer_version is None
        ):
            inv = self._inventory = fetch_inventory(self.client, need_adetailer=need_ad)
        assert inv is not None
        for stage in plan:
            cfg = stage.config
            where = stage.stage_type.value
            require = functools.partial(self._require, stage=where)
            if stage.stage_type.is_generation:
                self._require_generation(cfg, inv, where, stage=where)
            if stage.refiner_enabled:
                require("checkpoint", stage.refiner_model_name, inv.checkpoints, "refiner.model_name")
            if stage.hires_enabled:
                require("upscaler", stage.hires_upscaler_name, inv.hires_upscalers, "hires.upscaler")
                hr_sampler, hr_scheduler = hires_sampler_and_scheduler(
                    {"sampler_name": stage.hires_sampler_name}
                )
                require("sampler", hr_sampler, inv.samplers, "hires.sampler_name")
                require("scheduler", hr_scheduler, inv.schedulers, "hires.sampler_name")
            if stage.stage_type is StageType.UPSCALE:
                require("upscaler", cfg.get("upscaler"), inv.upscalers, "upscale.upscaler")
                if cfg.get("upscaler_2"):
                    require("upscaler", cfg.get("upscaler_2"), inv.upscalers, "upscale.upscaler_2")
            if stage.stage_type is StageType.ADETAILER:
                self._preflight_adetailer(cfg, inv)

    def _preflight_adetailer(self, cfg: Mapping[str, Any], inv: Inventory) -> None:
        if inv.adetailer_version is None:
            raise WebUIRejected(
                "the plan has an ADetailer stage but ADetailer is not installed on this WebUI "
                "(GET /adetailer/v1/version answered 404)",
                url=self.client.base_url,
                stage="adetailer",
                field="adetailer",
            )
        require = functools.partial(self._require, stage="adetailer")
        self._require_generation(cfg.get("base") or {}, inv, "adetailer.base", stage="adetailer")
        passes = [name for name in ("face", "hands") if cfg.get(name)]
        if inv.adetailer_max_tabs is not None and len(passes) > inv.adetailer_max_tabs:
            beyond = passes[inv.adetailer_max_tabs]
            raise WebUIRejected(
                f"adetailer.{beyond}: the plan runs {len(passes)} ADetailer passes but this WebUI takes "
                f"{inv.adetailer_max_tabs} ADetailer tab(s) (its 'Max tabs' setting, ad_max_models); "
                f"A1111 would drop the {beyond} pass without a word. Raise 'Max tabs' in the WebUI's "
                "ADetailer settings and reload its UI",
                url=self.client.base_url,
                stage="adetailer",
                field=f"adetailer.{beyond}",
            )
        for name in passes:
            ad_pass = cfg[name]
            # Check the tab actually sent: ``ad_*`` pass-throughs override the mapped names there.
            tab = adetailer_tab(ad_pass, path=f"adetailer.{name}")
            args = ad_pass.get("ad_args") or {}
            fields = {
                key: f"adetailer.{name}.{key if key in args else mapped}"
                for key, mapped in (
                    ("ad_model", "model"),
                    ("ad_sampler", "sampler"),
                    ("ad_scheduler", "scheduler"),
                )
            }
            require("adetailer model", tab.get("ad_model"), inv.adetailer_models, fields["ad_model"])
            if tab.get("ad_use_sampler"):
                require("sampler", tab.get("ad_sampler"), inv.samplers, fields["ad_sampler"])
                if tab.get("ad_scheduler") != USE_SAME_SCHEDULER:
                    require("scheduler", tab.get("ad_scheduler"), inv.schedulers, fields["ad_scheduler"])

    def _require_generation(self, cfg: Mapping[str, Any], inv: Inventory, path: str, *, stage: str) -> None:
        """The checkpoint, VAE, sampler and scheduler of a generation request, as the payload sends them."""
        require = functools.partial(self._require, stage=stage)
        require("checkpoint", cfg.get("model"), inv.checkpoints, f"{path}.model")
        vae = cfg.get("vae")
        if str(vae or "").strip().lower() not in _BUILTIN_VAES:
            require("VAE", vae, inv.vaes, f"{path}.vae")
        sampler, scheduler = sampler_and_scheduler(cfg, path=path)
        require("sampler", sampler, inv.samplers, f"{path}.sampler_name")
        require("scheduler", scheduler, inv.schedulers, f"{path}.scheduler")

    def _require(
        self, kind: str, name: Any, known: Mapping[str, str], field_path: str, *, stage: str
    ) -> None:
        if not name:
            return
        canonical = known.get(str(name).lower())
        if canonical is None:
            listing = ", ".join(sorted(set(known.values()))[:25]) or "(none)"
            raise WebUIRejected(
                f"{field_path}: {kind} {name!r} does not exist on this WebUI; it has: {listing}",
                url=self.client.base_url,
                stage=stage,
                field=field_path,
                value=name,
            )
        self._names[(kind, str(name))] = canonical

    def _canonical(self, kind: str, name: Any) -> Any:
        return self._names.get((kind, str(name)), name) if name else name

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
        """Run one stage and return ``{"images": [...], "meta": {...}}``.

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
        seeds: list[int | None] = []
        requests_sent: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        # The input images are handed over: neither the payload nor this loop keeps one once it is sent,
        # so a multi-MB image is not held while the next answer downloads.
        payload["input_images"] = []
        calls: list[str | None] = [None] if stage_type is StageType.TXT2IMG else inputs
        del inputs
        total = len(calls)
        calls.reverse()
        poller = _ProgressPoller(self, stage_type) if self._polls else None
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
                _require_whole_images(
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
        return {"images": images, "meta": meta}

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
        calls: list[str | None] = [None] if stage_type is StageType.TXT2IMG else inputs
        return [self._body(stage_type, payload, image) for image in calls]

    def loaded_checkpoint(self) -> str | None:
        """The checkpoint the WebUI has loaded now (its title, with the hash A1111 shows)."""
        value = self.client.options().get("sd_model_checkpoint")
        return str(value) if value else None

    def _body(self, stage_type: StageType, payload: Mapping[str, Any], image: str | None) -> dict[str, Any]:
        if stage_type is StageType.TXT2IMG:
            body = txt2img_body(payload)
        elif stage_type is StageType.IMG2IMG:
            body = img2img_body(payload, image or "")
        elif stage_type is StageType.UPSCALE:
            body = upscale_body(payload, image or "")
        else:
            body = adetailer_body(payload, image or "")
        return self._apply_canonical_names(body)

    def _apply_canonical_names(self, body: dict[str, Any]) -> dict[str, Any]:
        overrides = body.get("override_settings") or {}
        for key, kind in (("sd_model_checkpoint", "checkpoint"), ("sd_vae", "VAE")):
            if overrides.get(key):
                overrides[key] = self._canonical(kind, overrides[key])
        for key, kind in (
            ("refiner_checkpoint", "checkpoint"),
            ("sampler_name", "sampler"),
            ("hr_sampler_name", "sampler"),
            ("scheduler", "scheduler"),
            ("hr_scheduler", "scheduler"),
            ("hr_upscaler", "upscaler"),
            ("upscaler_1", "upscaler"),
            ("upscaler_2", "upscaler"),
        ):
            if body.get(key):
                body[key] = self._canonical(kind, body[key])
        for tab in (body.get("alwayson_scripts") or {}).get("ADetailer", {}).get("args", [])[2:]:
            tab["ad_model"] = self._canonical("adetailer model", tab.get("ad_model"))
            for key, kind in (("ad_sampler", "sampler"), ("ad_scheduler", "scheduler")):
                if tab.get(key):
                    tab[key] = self._canonical(kind, tab[key])
        return body

    def _call(
        self, stage_type: StageType, body: dict[str, Any], poller: _ProgressPoller | None, limit: int
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


class _ProgressPoller:
    """Background thread: progress -> callback, cancel -> interrupt. Never raises into the stage."""

    def __init__(self, executor: WebUIExecutor, stage_type: StageType) -> None:
        self._executor = executor
        self._stage_type = stage_type
        self.part = (0, 1)  # (call number, calls in the stage): one poller serves the whole stage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stablenew-progress", daemon=True)
        self.task: str | None = None  # the force_task_id of the call running now
        self.canceled = False
        self._undecidable = False  # the WebUI cannot tell whose request runs: stop after the call

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        ex = self._executor
        warned = False
        while not self._stop.wait(ex.progress_interval):
            try:
                if not self.canceled and ex.should_cancel and ex.should_cancel():
                    self.canceled = True
                if self.canceled:
                    if self._interrupt_if_ours():
                        return
                    continue
                if ex.on_progress:
                    index, count = self.part
                    fraction = self.fraction(ex.client.progress())
                    if fraction is not None:
                        ex.on_progress(self._stage_type, (index + fraction) / count)
            except WebUIError:
                continue  # progress is best effort; the stage call itself reports real failures
            except Exception:
                # A failing callback (e.g. the state store is briefly down) must not end the thread:
                # it is also what turns a cancel request into an interrupt.
                if not warned:
                    _log.warning(
                        "progress/cancel check failed during %s", self._stage_type.value, exc_info=True
                    )
                    warned = True

    def _interrupt_if_ours(self) -> bool:
        """Interrupt if our request is the one generating; True once nothing is left to do here."""
        if self._undecidable or self._stage_type is StageType.UPSCALE:
            return True  # the call runs to its end; the stage raises Canceled after it
        if self.task is None:
            return False  # the first request is not sent yet
        answer = self._executor.client.task_progress(self.task)
        if answer is None:
            self._undecidable = True
            return True
        if answer.get("active"):
            self._executor.client.interrupt()
            self._executor.client.abort()  # our read ends now, whether or not the WebUI heeds the interrupt
            return True
        return False  # queued behind another client's request, or already done: ask again

    def fraction(self, answer: Mapping[str, Any]) -> float | None:
        """This call's share done, from A1111's ``state`` (``Api.progressapi`` reads the same numbers);
        None while nothing runs (``job_count`` 0: idle, or not begun)."""
        state = answer.get("state")
        if not isinstance(state, Mapping):
            progress = answer.get("progress")
            return float(progress) if isinstance(progress, int | float) and progress > 0 else None
        count, number = _int(state.get("job_count")), _int(state.get("job_no"))
        step, steps = _int(state.get("sampling_step")), _int(state.get("sampling_steps"))
        if count <= 0:
            return None
        within = min(1.0, step / steps) if steps > 0 else 0.0
        if self._stage_type is StageType.ADETAILER:
            # Job 1 is ADetailer's 1-step dummy pass; the jobs it adds per mask found are the real work.
            real = count - 1
            if real <= 0 or number < 1:
                return 0.0
            return max(0.0, min(1.0, (number - 1 + within) / real))
        return max(0.0, min(1.0, (number + within) / count))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _require_whole_images(images: list[str], url: str, stage_type: StageType) -> None:
    """Every returned image must decode to its end before the stage counts as done: a truncated PNG
    would otherwise be recorded (its sha256 matches what was written) and reused by a retry. A bad one
    fails the call as transient: the WebUI may send it whole next time, within the stage's retries."""
    for index, image in enumerate(images):
        problem = image_data_problem(image, max_pixels=MAX_OUTPUT_PIXELS)
        if problem is not None:
            raise WebUIHTTPError(
                200, f"image {index} {problem}", url=url, stage=stage_type.value, transient=True
            )


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
