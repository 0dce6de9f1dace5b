"""What one WebUI has: its checkpoints, VAEs, samplers, schedulers, upscalers and ADetailer models.

:func:`fetch_inventory` reads them (one GET per list); an :class:`Inventory` keeps each name as the WebUI
spells it, keyed by the lower-cased names a config may use for it. Preflight checks plans against it
(:mod:`~stablenew.webui._preflight`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stablenew.errors import WebUIRejected

from ._client import WebUIClient


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
