"""The names a simulated WebUI offers (checkpoints, VAEs, samplers, schedulers, upscalers, ADetailer models)
and how A1111 v1.10.1 resolves the names a request gives, silent substitutions included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ._api import (
    ADETAILER_ARG_KEYS,
    DEFAULT_ADETAILER_MODELS,
    DEFAULT_MODELS,
    DEFAULT_SAMPLERS,
    DEFAULT_SCHEDULERS,
    DEFAULT_UPSCALERS,
    DEFAULT_VAES,
    SCHEDULERS,
)

NO_MODEL = (None, "", "None", "none")


@dataclass
class AdetailerArgs:
    """What ADetailer makes of a request's args: whether it runs, skip img2img, its live tabs, misuse seen."""

    enabled: bool
    skip: bool
    live: list[dict[str, Any]]
    problems: list[str]


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


class Catalog:
    """The name lists a simulator serves (None picks the default list) and A1111's lookups in them.

    Raises:
        ValueError: no model is given.
    """

    def __init__(
        self,
        models: list[str] | None = None,
        samplers: list[str] | None = None,
        schedulers: list[str] | None = None,
        upscalers: list[str] | None = None,
        adetailer_models: list[str] | None = None,
        vaes: list[str] | None = None,
    ) -> None:
        self.models = [_checkpoint(m) for m in (DEFAULT_MODELS if models is None else models)]
        if not self.models:
            raise ValueError("the simulator needs at least one model")
        self.samplers = list(DEFAULT_SAMPLERS if samplers is None else samplers)
        self.schedulers = list(DEFAULT_SCHEDULERS if schedulers is None else schedulers)
        self.upscalers = list(DEFAULT_UPSCALERS if upscalers is None else upscalers)
        self.ad_models = list(DEFAULT_ADETAILER_MODELS if adetailer_models is None else adetailer_models)
        self.vaes = list(DEFAULT_VAES if vaes is None else vaes)
        self._aliases: dict[str, dict[str, Any]] = {}
        for model in self.models:
            names = (model["title"], model["model_name"], model["filename"].rsplit("/", 1)[1], model["hash"])
            for alias in (*names, model["sha256"]):
                self._aliases.setdefault(alias, model)

    def find_checkpoint(self, name: str, *, fuzzy: bool) -> dict[str, Any] | None:
        """A1111's alias lookup (title, file name, model name, hash); ``fuzzy`` adds its substring fallback."""
        found = self._aliases.get(name)
        if found is not None or not fuzzy:
            return found
        return min(
            (m for m in self.models if name in m["title"]), key=lambda m: len(m["title"]), default=None
        )

    def resolve_sampler(self, name: str, scheduler: Any) -> tuple[str, str | None]:
        """The sampler and scheduler label A1111 v1.10 runs (``get_sampler_and_scheduler`` and the API).

        A trailing scheduler label, name or alias is cut off the sampler name (case-sensitive, in A1111's
        scheduler order, so "X SGM Uniform" loses " Uniform"); an explicit ``scheduler`` still wins. An unknown
        sampler silently becomes the first one, an unknown scheduler Automatic (reported as none).
        """
        named: str | None = None
        for known in self.schedulers:
            known_label, aliases = SCHEDULERS.get(known, (known, ()))
            for spelling in (known_label, known, *aliases):
                if name.endswith(" " + spelling):
                    named, name = known_label, name[: -len(spelling) - 1]
                    break
        sampler = name if name in self.samplers else (self.samplers or ["DPM++ 2M"])[0]
        label = self.scheduler_label(str(scheduler)) if scheduler else named
        return sampler, None if label == "Automatic" else label

    def scheduler_label(self, name: str) -> str:
        """The label A1111 reports for a scheduler given by name or label; unknown ones become Automatic."""
        for known in self.schedulers:
            label, _ = SCHEDULERS.get(known, (known, ()))
            if name in (known, label):
                return label
        return "Automatic"

    def scheduler_entry(self, name: str) -> dict[str, Any]:
        """One item of ``GET /sdapi/v1/schedulers``."""
        label = self.scheduler_label(name)
        return {"name": name, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}

    @staticmethod
    def upscaler_entry(name: str) -> dict[str, Any]:
        """One item of ``GET /sdapi/v1/upscalers``."""
        builtin = name in ("None", "Lanczos", "Nearest")
        path = None if builtin else f"/models/ESRGAN/{name}.pth"
        return {
            "name": name,
            "model_name": None if builtin else name,
            "model_path": path,
            "model_url": None,
            "scale": 4,
        }

    def read_adetailer_args(self, args: Any, has_mask: bool, max_tabs: int) -> AdetailerArgs:
        """ADetailer's arguments as the extension reads them, and the misuse it ignores.

        A1111 copies at most 2 + ``max_tabs`` values (``Api.init_script_args``); ``is_ad_enabled`` needs the
        enable flag and a tab that passes validation and is not skipped (``ad_model`` "None" or
        ``ad_tab_enable`` false); with a mask and skip img2img ADetailer disables itself.
        """
        problems = []
        if not isinstance(args, list) or not args:
            problems.append(f"ADetailer args must be a non-empty list, got {args!r}")
            args = []
        elif len(args) < 2 or not isinstance(args[0], bool) or not isinstance(args[1], bool):
            problems.append("ADetailer args must start with two booleans [ad_enable, skip_img2img]")
        if len(args) > 2 + max_tabs:
            dropped = len(args) - 2 - max_tabs
            problems.append(
                f"ADetailer args hold {dropped} value(s) beyond its {max_tabs} tab(s) (Max tabs): "
                "A1111 drops them without a word"
            )
            args = args[: 2 + max_tabs]
        flag = args[0] if args and isinstance(args[0], bool) else True
        skip = len(args) > 1 and args[1] is True
        tabs = [arg for arg in args if isinstance(arg, dict)]
        if not tabs:
            problems.append("ADetailer args hold no tab dict: the default face tab runs")
            tabs = [{"ad_model": DEFAULT_ADETAILER_MODELS[0]}]
        live = []
        for index, tab in enumerate(tabs):
            unknown = sorted(set(tab) - ADETAILER_ARG_KEYS)
            if unknown:
                problems.append(f"ADetailer tab {index} has unknown keys {unknown}: the tab is disabled")
            model = tab.get("ad_model", "None")
            if not isinstance(model, str):
                problems.append(
                    f"ADetailer tab {index} has a non-string ad_model {model!r}: the tab is disabled"
                )
                continue
            if model != "None" and model not in self.ad_models:
                problems.append(f"ADetailer tab {index} names unknown ad_model {model!r}")
            if not unknown and model != "None" and tab.get("ad_tab_enable", True) is not False:
                live.append(tab)
        if flag and not live:
            problems.append("no ADetailer tab is live: ADetailer disables itself, a plain img2img runs")
        if skip and has_mask:
            problems.append("mask sent with skip_img2img: ADetailer disables itself")
        enabled = flag and bool(live) and not (skip and has_mask)
        return AdetailerArgs(enabled, skip, live, problems)
