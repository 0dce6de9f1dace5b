"""The generation routes (txt2img, img2img with ADetailer, extras) as A1111 v1.10.1 answers them, and the
options (``opts.data``) a request's ``override_settings`` changes.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from typing import Any

from ._api import (
    A1111_OPTIONS,
    A1111_VERSION,
    ADETAILER_VERSION,
    LATENT_UPSCALE_MODES,
    a1111_error,
    http_exception,
    infotext,
    num,
    validation_error,
)
from ._catalog import NO_MODEL, Catalog
from ._checkpoints import LoadedCheckpoint
from ._images import Images
from ._jobs import JobRunner, Pass
from ._timesteps import refiner_switch_step

TXT2IMG, IMG2IMG, EXTRAS = "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image"


class Generation:
    """Answers generation requests: names resolved by ``catalog``, images from ``images``, each run by
    ``runner``. Like A1111 it keeps the options a request's ``override_settings`` set for the requests after it
    when ``override_settings_restore_afterwards`` is false. Thread-safe.
    """

    def __init__(
        self,
        catalog: Catalog,
        images: Images,
        runner: JobRunner,
        checkpoint: LoadedCheckpoint,
        *,
        default_steps: int,
        adetailer_installed: bool,
        adetailer_max_tabs: int = 4,
        adetailer_masks: int = 1,
    ) -> None:
        self._catalog, self._images, self._runner = catalog, images, runner
        self._checkpoint = checkpoint
        self._default_steps = default_steps
        self._adetailer_installed = adetailer_installed
        self._adetailer_max_tabs = adetailer_max_tabs
        self._adetailer_masks = adetailer_masks
        self._lock = threading.Lock()  # guards the options and problems
        # A1111's in-memory options that override_settings may change (opts.data).
        self._options: dict[str, Any] = {
            "sd_model_checkpoint": catalog.models[0]["title"],
            "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1,
            "hires_fix_refiner_pass": "second pass",
            "refiner_switch_by_sample_steps": False,  # shared_options.py, "Old behavior for refiner"
        }
        self._problems: list[str] = []

    @property
    def problems(self) -> list[str]:
        """ADetailer misuse the real extension would silently ignore, oldest first."""
        with self._lock:
            return list(self._problems)

    def options(self) -> dict[str, Any]:
        """The options in force (``GET /sdapi/v1/options``; A1111 answers many more)."""
        with self._lock:
            return dict(self._options)

    def clear_problems(self) -> None:
        with self._lock:
            self._problems.clear()

    def txt2img(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``POST /sdapi/v1/txt2img`` answer (hires fix and refiner as A1111 reports them)."""
        options = self.request_options(body)
        width, height = max(1, num(body, "width", 512, int)), max(1, num(body, "height", 512, int))
        out_w, out_h = width, height
        extra: dict[str, Any] = {}
        report: dict[str, Any] = {}  # the simulator's own info keys (what a real GPU run would show)
        if body.get("enable_hr"):
            if body.get("denoising_strength") is None:
                message = "unsupported operand type(s) for *: 'NoneType' and 'int'"
                raise a1111_error(500, "TypeError", message)
            hr_sampler = body.get("hr_sampler_name")
            if hr_sampler is not None and hr_sampler not in self._catalog.samplers:
                # The hires sampler is not resolved like sampler_name: "Use same sampler" or a name carrying a
                # scheduler ("DPM++ 2M Karras") fails create_sampler's assertion.
                raise a1111_error(500, "AssertionError", f"bad sampler name: {hr_sampler}")
            hr_scheduler = body.get("hr_scheduler")
            extra["Hires schedule type"] = (
                None if hr_scheduler is None else self._catalog.scheduler_label(str(hr_scheduler))
            )
            upscaler = body.get("hr_upscaler") or "Latent"
            if upscaler not in self._catalog.upscalers and upscaler not in LATENT_UPSCALE_MODES:
                # processing.py raises a plain Exception here; extras' postprocessing_upscale asserts
                raise a1111_error(500, "Exception", f"could not find upscaler named {upscaler}")
            resize_x, resize_y = num(body, "hr_resize_x", 0, int), num(body, "hr_resize_y", 0, int)
            if resize_x == 0 and resize_y == 0:
                scale = num(body, "hr_scale", 2.0, float)
                out_w, out_h, extra["Hires upscale"] = int(width * scale), int(height * scale), scale
            else:
                out_w = resize_x or resize_y * width // height
                out_h = resize_y or resize_x * height // width
                extra["Hires resize"] = f"{out_w}x{out_h}"
            extra["Hires steps"] = num(body, "hr_second_pass_steps", 0, int) or None
            extra["Hires upscaler"], extra["Hires sampler"] = upscaler, hr_sampler
        refiner = body.get("refiner_checkpoint")
        if refiner not in NO_MODEL:
            found = self._catalog.find_checkpoint(str(refiner), fuzzy=True)
            if found is None:
                raise a1111_error(500, "Exception", f"Could not find checkpoint with name {refiner}")
            extra["Refiner"] = f"{found['model_name']} [{found['hash']}]"
            extra["Refiner switch at"] = body.get("refiner_switch_at")
            refiner_in = options["hires_fix_refiner_pass"]  # which pass the refiner joins with hires on
            if body.get("enable_hr") and refiner_in != "second pass":
                extra["Hires refiner"] = refiner_in
            if not body.get("enable_hr") or refiner_in == "first pass":  # a txt2img first pass
                report["refiner_switch_step"] = self._refiner_step(body, options)
        return self._generate(
            TXT2IMG, "txt2img", body, (width, height), (out_w, out_h), extra, None, options, report
        )

    def _refiner_step(self, body: dict[str, Any], options: dict[str, Any]) -> int | None:
        """The 0-based step at which A1111 would load the refiner (``_timesteps``), None where not modelled."""
        steps = num(body, "steps", self._default_steps, int)
        sampler, scheduler = self._catalog.resolve_sampler(
            body.get("sampler_name") or "Euler", body.get("scheduler")
        )
        switch_at = body.get("refiner_switch_at")
        try:
            return refiner_switch_step(
                steps,
                scheduler or "Automatic",
                None if switch_at is None else num(body, "refiner_switch_at", 0.0, float),
                bool(options.get("refiner_switch_by_sample_steps")),
                sampler=sampler,
            )
        except ValueError:  # a scheduler or sampler the model of the schedule does not cover
            return None

    def img2img(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``POST /sdapi/v1/img2img`` answer (ADetailer read as the extension reads its args)."""
        options = self.request_options(body)
        init_images = body.get("init_images")
        if not init_images:
            raise http_exception(404, "Init image not found")
        if not isinstance(init_images, list):
            raise validation_error(["body", "init_images"], "value is not a valid list", "type_error.list")
        init = [self._images.decode(image) for image in init_images][0]  # noqa: RUF015 - A1111 decodes them all
        width, height = (
            max(1, num(body, "width", init.width, int)),
            max(1, num(body, "height", init.height, int)),
        )
        stage, out_size = "img2img", (width, height)
        extra: dict[str, Any] = {}
        passes: list[Pass] | None = None
        scripts = body.get("alwayson_scripts") or {}
        for name, script in scripts.items() if isinstance(scripts, dict) else ():
            if name.lower() != "adetailer":
                continue  # other always-on scripts are accepted and ignored
            if not self._adetailer_installed:
                raise http_exception(422, f"always on script {name} not found")
            args = script.get("args") if isinstance(script, dict) else None
            has_mask = body.get("mask") is not None
            read = self._catalog.read_adetailer_args(args, has_mask, self._adetailer_max_tabs)
            with self._lock:
                self._problems.extend(read.problems)
            if read.enabled:
                extra["ADetailer model"] = read.live[0]["ad_model"]
                extra["ADetailer version"] = ADETAILER_VERSION
                # ADetailer writes its pass's settings into the infotext, so they change the PNG.
                extra["ADetailer denoising strength"] = read.live[0].get("ad_denoising_strength")
                steps = num(body, "steps", self._default_steps, int)
                passes = [Pass(1, 1 if read.skip else steps)]  # skip img2img: a 1-step dummy pass
                for tab in read.live:  # each tab: detection adds its masks to job_count, one job per mask
                    tab_steps = int(tab.get("ad_steps", steps)) if tab.get("ad_use_steps") else steps
                    passes += [
                        Pass(self._adetailer_masks, tab_steps, lead=1) if i == 0 else Pass(0, tab_steps)
                        for i in range(self._adetailer_masks)
                    ]
                if read.skip:
                    stage, out_size = "adetailer", init.size
        return self._generate(
            IMG2IMG, stage, body, (width, height), out_size, extra, 0.75, options, passes=passes
        )

    def extras(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``POST /sdapi/v1/extra-single-image`` answer."""
        if body.get("image") is None:
            raise validation_error(["body", "image"], "field required", "value_error.missing")
        image = self._images.decode(body["image"])
        upscaler = body.get("upscaler_1")
        for name, key in ((upscaler, None), (body.get("upscaler_2"), "extras_upscaler_2_visibility")):
            active = key is None or num(body, key, 0.0, float) > 0
            if active and name not in (None, "None") and name not in self._catalog.upscalers:
                raise a1111_error(500, "AssertionError", f"could not find upscaler named {name}")
        size, note = image.size, ""
        if upscaler not in (None, "None"):
            if num(body, "resize_mode", 0, int) == 1:
                size = (
                    num(body, "upscaling_resize_w", 512, int),
                    num(body, "upscaling_resize_h", 512, int),
                )
                note = f"Postprocess upscale to: {size[0]}x{size[1]}, Postprocess upscaler: {upscaler}"
            else:
                factor = num(body, "upscaling_resize", 2.0, float)
                size = (int(image.width * factor) // 8 * 8, int(image.height * factor) // 8 * 8)
                note = f"Postprocess upscale by: {factor}, Postprocess upscaler: {upscaler}"
        text = {k: v for k, v in image.info.items() if k == "parameters" and isinstance(v, str)}
        with self._runner.run(EXTRAS, 0):
            png = self._images.encode("upscale", size[0], size[1], 0, {**text, "postprocessing": note})
        return {"image": png, "html_info": f"<p>{note}</p>"}

    def _generate(
        self,
        route: str,
        stage: str,
        body: dict[str, Any],
        size: tuple[int, int],
        out_size: tuple[int, int],
        extra: dict[str, Any],
        default_denoise: float | None,
        options: dict[str, Any],
        report: dict[str, Any] | None = None,
        *,
        passes: list[Pass] | None = None,
    ) -> dict[str, Any]:
        count = max(1, num(body, "batch_size", 1, int)) * max(1, num(body, "n_iter", 1, int))
        steps, cfg = num(body, "steps", self._default_steps, int), num(body, "cfg_scale", 7.0, float)
        seed, subseed = num(body, "seed", -1, int), num(body, "subseed", -1, int)
        seed = secrets.randbelow(2**32) if seed == -1 else seed
        subseed = secrets.randbelow(2**32) if subseed == -1 else subseed
        catalog = self._catalog
        sampler, scheduler = catalog.resolve_sampler(
            body.get("sampler_name") or "Euler", body.get("scheduler")
        )
        model = catalog.find_checkpoint(str(options["sd_model_checkpoint"]), fuzzy=False) or catalog.models[0]
        # An unknown VAE runs as none: A1111 logs "using None instead".
        vae = options["sd_vae"] if options["sd_vae"] in catalog.vaes else None
        clip_skip = num(options, "CLIP_stop_at_last_layers", 1, int)
        if body.get("override_settings_restore_afterwards") is False:  # A1111's default is to restore
            with self._lock:
                self._options = options
        denoise = default_denoise
        if body.get("denoising_strength") is not None:
            denoise = num(body, "denoising_strength", 0.0, float)
        prompt, negative = str(body.get("prompt") or ""), str(body.get("negative_prompt") or "")
        extra = {k: v for k, v in extra.items() if v is not None}
        params = {
            "Steps": steps, "Sampler": sampler, "Schedule type": scheduler, "CFG scale": cfg, "Seed": seed,
            "Size": f"{size[0]}x{size[1]}", "Model hash": model["hash"], "Model": model["model_name"], "VAE": vae,
            "Clip skip": clip_skip if clip_skip > 1 else None, "Denoising strength": denoise, **extra,
            "Version": A1111_VERSION,
        }  # fmt: skip
        infotexts = [infotext(prompt, negative, {**params, "Seed": seed + i}) for i in range(count)]
        # A1111 loads the checkpoint in force at the start of each generation: a request whose override is
        # restored afterwards (its default) leaves the next request to swap back.
        swap = functools.partial(self._checkpoint.load, model["title"])
        task = body.get("force_task_id")
        with self._runner.run(
            route, steps, swap, passes=passes, task_id=task if isinstance(task, str) else None
        ) as timestamp:
            images = [
                self._images.encode(stage, *out_size, seed + i, {"parameters": text})
                for i, text in enumerate(infotexts)
            ]
        info = {
            "prompt": prompt, "all_prompts": [prompt] * count, "negative_prompt": negative,
            "all_negative_prompts": [negative] * count, "seed": seed, "all_seeds": [seed + i for i in range(count)],
            "subseed": subseed, "all_subseeds": [subseed + i for i in range(count)],
            "subseed_strength": num(body, "subseed_strength", 0.0, float), "width": size[0], "height": size[1],
            "sampler_name": sampler, "cfg_scale": cfg, "steps": steps, "batch_size": num(body, "batch_size", 1, int),
            "restore_faces": False, "face_restoration_model": None, "sd_model_name": model["model_name"],
            "sd_model_hash": model["hash"], "sd_vae_name": vae, "sd_vae_hash": None,
            "seed_resize_from_w": num(body, "seed_resize_from_w", -1, int),
            "seed_resize_from_h": num(body, "seed_resize_from_h", -1, int), "denoising_strength": denoise,
            "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": infotexts,
            "styles": body.get("styles") or [], "job_timestamp": timestamp, "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": A1111_VERSION,
        }  # fmt: skip
        info |= report or {}
        if body.get("send_images") is False:
            images = []
        parameters = dict(body)
        if "init_images" in body and not body.get("include_init_images"):
            # A1111's img2imgapi echoes its request without the images unless asked for them.
            parameters["init_images"] = None
            parameters["mask"] = None
        return {"images": images, "parameters": parameters, "info": json.dumps(info)}

    def request_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """The options a request runs with: those in force, changed by its ``override_settings``."""
        with self._lock:
            options = dict(self._options)
        overrides = body.get("override_settings")
        for key, value in (overrides if isinstance(overrides, dict) else {}).items():
            if key not in A1111_OPTIONS and value is not None:
                # modules/options.py::Options.set looks the key up in data_labels: a KeyError, HTTP 500.
                raise a1111_error(500, "KeyError", repr(key))
            if key == "sd_model_checkpoint":
                found = self._catalog.find_checkpoint(value, fuzzy=False) if isinstance(value, str) else None
                if found is not None:  # an unknown checkpoint override is dropped
                    options[key] = found["title"]
            elif key in options:
                options[key] = value
        return options
