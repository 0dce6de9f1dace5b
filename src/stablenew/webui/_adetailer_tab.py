"""One ADetailer tab from a StableNew pass, checked as ADetailer would check it.

ADetailer's schema is ``extra=forbid`` upstream, and a tab that fails it is silently disabled there: here
it is an error naming the field (:func:`validate_adetailer_tab`), as is a tab ADetailer would skip
(``ad_tab_enable: false``, ``ad_model: "None"``), plus our own upper bounds (steps, sizes, prompt lengths)
that ADetailer does not have. A sampler name carrying a scheduler is sent split, as ``ad_sampler`` +
``ad_scheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stablenew.errors import ConfigError, FieldProblem
from stablenew.pipeline import ADETAILER_ARGS, SamplerSchedulerConflict, resolve_sampler

_NULLABLE_ARGS = frozenset({"ad_checkpoint", "ad_vae"})
_ARG_CHOICES = {
    "ad_mask_filter_method": ("Area", "Confidence"),
    "ad_mask_merge_invert": ("None", "Merge", "Merge and Invert"),
}


def adetailer_tab(ad_pass: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """One ADetailer tab from a StableNew pass (``adetailer_*`` names) plus ``ad_*`` pass-throughs.

    With ``ad_inpaint_only_masked: false`` (inpaint the whole picture), ADetailer with skip img2img
    stretches the whole image to the inpaint size and returns it at that size (``docs/webui-api.md``): the
    tab then leaves ``ad_use_inpaint_width_height`` off, so the inpaint size is the request's own width and
    height, which :func:`~stablenew.webui._payloads.adetailer_body` sets to the input image's size. The
    image keeps its size.

    Raises:
        ConfigError: the tab would be silently disabled by ADetailer (unknown key, null string,
            out-of-range value, wrong type), or asks for something that breaks skip-img2img.
    """
    tab: dict[str, Any] = {
        "ad_model": ad_pass["model"],
        "ad_confidence": ad_pass["confidence"],
        "ad_prompt": ad_pass.get("prompt") or "",
        "ad_negative_prompt": ad_pass.get("negative_prompt") or "",
        "ad_denoising_strength": ad_pass["denoise"],
        "ad_mask_blur": ad_pass["mask_feather"],
        "ad_inpaint_only_masked": True,
        "ad_inpaint_only_masked_padding": ad_pass["padding"],
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": ad_pass["inpaint_width"],
        "ad_inpaint_height": ad_pass["inpaint_height"],
    }
    if ad_pass.get("steps") is not None:
        tab |= {"ad_use_steps": True, "ad_steps": ad_pass["steps"]}
    if ad_pass.get("cfg") is not None:
        tab |= {"ad_use_cfg_scale": True, "ad_cfg_scale": ad_pass["cfg"]}
    if ad_pass.get("sampler"):
        tab |= {"ad_use_sampler": True, "ad_sampler": ad_pass["sampler"]}
        if ad_pass.get("scheduler"):
            tab["ad_scheduler"] = ad_pass["scheduler"]
    tab |= dict(ad_pass.get("ad_args") or {})
    if tab.get("ad_inpaint_only_masked") is False:
        # the request's width x height (the image's) is the inpaint size; any other would resize the image
        tab["ad_use_inpaint_width_height"] = False
        for key in ("ad_inpaint_width", "ad_inpaint_height"):
            tab.pop(key, None)
    problems = _split_ad_sampler(tab, path=path) + validate_adetailer_tab(tab, path=path)
    if problems:
        raise ConfigError(problems)
    return tab


def _split_ad_sampler(tab: dict[str, Any], *, path: str) -> list[FieldProblem]:
    """``ad_sampler: "DPM++ 2M Karras"`` -> ``ad_sampler: "DPM++ 2M"`` + ``ad_scheduler: "Karras"``.

    ADetailer (25.x) hands ``ad_sampler`` and ``ad_scheduler`` to A1111's processing as they are; its own
    default ``ad_sampler`` is the joined "DPM++ 2M Karras". Split, the names can be checked by preflight and
    the request says what runs. An ``ad_scheduler`` other than "Use same scheduler" must agree.
    """
    sampler, given = tab.get("ad_sampler"), tab.get("ad_scheduler")
    if not isinstance(sampler, str) or not (given is None or isinstance(given, str)):
        return []  # the type check reports it
    try:
        base, scheduler = resolve_sampler(sampler, given)
    except SamplerSchedulerConflict as exc:
        return [FieldProblem(f"{path}.ad_scheduler", str(exc), given)]
    tab["ad_sampler"] = base
    if scheduler is not None:
        tab["ad_scheduler"] = scheduler
    return []


def validate_adetailer_tab(tab: Mapping[str, Any], *, path: str) -> list[FieldProblem]:
    """Every reason ADetailer would silently drop this tab (its schema is ``extra=forbid``)."""
    problems: list[FieldProblem] = []
    for key, value in tab.items():
        where = f"{path}.{key}"
        spec = ADETAILER_ARGS.get(key)
        if spec is None:
            hint = " (renamed upstream to ad_mask_k)" if key == "ad_mask_k_largest" else ""
            problems.append(FieldProblem(where, f"is not an ADetailer argument{hint}", value))
            continue
        kind, low, high = spec
        if value is None:
            if key not in _NULLABLE_ARGS:
                problems.append(FieldProblem(where, "must not be null", value))
            continue
        if not _is_kind(value, kind):
            problems.append(FieldProblem(where, f"must be of type {kind.__name__}", value))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(FieldProblem(where, "must be a finite number", value))
            continue
        if isinstance(value, str):
            if high is not None and len(value) > high:
                message = f"must be at most {high:g} characters (got {len(value)})"
                problems.append(FieldProblem(where, message, has_value=False))
        elif not isinstance(value, bool):
            if low is not None and value < low:
                problems.append(FieldProblem(where, f"must be >= {low}", value))
            if high is not None and value > high:
                problems.append(FieldProblem(where, f"must be <= {high}", value))
        if key in _ARG_CHOICES and value not in _ARG_CHOICES[key]:
            problems.append(FieldProblem(where, f"must be one of {list(_ARG_CHOICES[key])}", value))
    if tab.get("ad_inpaint_only_masked") is False and tab.get("ad_use_inpaint_width_height") is not False:
        problems.append(
            FieldProblem(
                f"{path}.ad_use_inpaint_width_height",
                "must be false with ad_inpaint_only_masked false (else the image is resized to the inpaint size)",
                tab.get("ad_use_inpaint_width_height"),
            )
        )
    if tab.get("ad_tab_enable") is False:
        problems.append(
            FieldProblem(f"{path}.ad_tab_enable", "switches the pass off, so ADetailer would skip it", False)
        )
    if tab.get("ad_model") in (None, "None"):
        problems.append(
            FieldProblem(f"{path}.ad_model", "names no detector, so the pass would do nothing", "None")
        )
    return problems


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)
