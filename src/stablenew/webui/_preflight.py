"""Preflight: a plan checked against what one WebUI has, before any GPU work.

Once per WebUI (the :class:`~stablenew.webui._inventory.Inventory` is read again after
``_INVENTORY_TTL_S``), every checkpoint, VAE, sampler, scheduler, upscaler and ADetailer model the plan
names must exist there, and the WebUI must take as many ADetailer tabs as the plan has passes
(``/sdapi/v1/script-info``). Each name's exact spelling on that WebUI is remembered, so requests carry
names A1111 will not silently replace (:meth:`Preflight.apply_canonical_names`). A sampler name carrying a
scheduler ("DPM++ 2M Karras") is checked as the two names the request will carry. The ADetailer tabs are
built and checked here too, so a plan from the queue with a bad tab fails before any GPU work, not at its
last stage.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from stablenew.errors import WebUIRejected
from stablenew.pipeline import StageExecutionPlan, StageType

from ._adetailer_tab import adetailer_tab
from ._client import WebUIClient
from ._fields import USE_SAME_SCHEDULER, hires_sampler_and_scheduler, sampler_and_scheduler
from ._inventory import Inventory, fetch_inventory

_INVENTORY_TTL_S = 300.0
_BUILTIN_VAES = frozenset({"", "automatic", "none"})  # A1111's own sd_vae values, not files


class Preflight:
    """The preflight of :class:`~stablenew.webui._executor.WebUIExecutor` on one WebUI: the inventory it
    read last and the spelling there of each name a plan used."""

    def __init__(self, client: WebUIClient) -> None:
        self.client = client
        self._inventory: Inventory | None = None
        self._names: dict[tuple[str, str], str] = {}

    @property
    def inventory(self) -> Inventory | None:
        """What preflight last read from the WebUI (None before the first preflight)."""
        return self._inventory

    def use_inventory(self, inventory: Inventory | None) -> None:
        """Preflight against ``inventory`` (e.g. cached by another job) instead of fetching one."""
        if inventory is not None:
            inventory.fetched_at = time.monotonic()
        self._inventory = inventory

    def check(self, plan: StageExecutionPlan) -> None:
        """Check that the WebUI has everything ``plan`` names (:meth:`WebUIExecutor.preflight
        <stablenew.webui._executor.WebUIExecutor.preflight>` says what it raises)."""
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

    def apply_canonical_names(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with each name preflight checked spelled as the WebUI spells it."""
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
