"""Normalisation: every accepted config shape -> the canonical layout, then validation.

:func:`parse_config` maps the flat PR-107 shape, StableNew's nested preset and its v2.6 wrapper (with
StableNew's aliases) onto :class:`~stablenew.pipeline._config.PipelineConfig`'s layout, remembering
where each value came from, so that every validation problem names the field as the user wrote it.

A document nested deeper than :data:`MAX_DEPTH` is refused before anything else looks at it (no config shape
needs more than a few levels; a deep one would only exhaust the stack of whatever walks it later).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from stablenew.errors import ConfigError, FieldProblem

from ._adetailer_args import ADETAILER_ARGS
from ._config import SUPPORTED_WRAPPER_SCHEMAS, PipelineConfig
from ._keys import (
    AD_HANDS_ARGS,
    AD_HANDS_PREFIX,
    AD_PASS_KEYS,
    AD_PASS_SPELLINGS,
    AD_RENAMED,
    AD_SWITCHES,
    GEN_ALIASES,
    HIRES_ALIASES,
    HIRES_FIX_KEYS,
    NESTED_SECTIONS,
    REFINER_ALIASES,
    STAGES,
    UPSCALE_ALIASES,
    unknown_key_problems,
    wrapper_problems,
)
from ._samplers import UNSET_NAMES

_log = logging.getLogger("stablenew.config")

MAX_DEPTH = 32  # objects and lists within objects and lists; StableNew's presets use 4

# Keys StableNew carries in the txt2img/img2img sections that we map elsewhere (not extras).
_REMAPPED_GEN_KEYS = {n for names in GEN_ALIASES.values() for n in names}


class _Normaliser:
    """Builds the canonical dict and remembers each canonical path's source path."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.origin: dict[tuple[str, ...], str] = {}
        self.problems: list[FieldProblem] = []
        # How to name a canonical field the user did not write, in the shape they used.
        self.unwritten: dict[tuple[str, ...], str] = {}

    def put(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        self.origin[path] = source

    def pick(self, section: Mapping[str, Any], names: tuple[str, ...], prefix: str) -> tuple[str, Any] | None:
        for name in names:
            if name in section and section[name] is not None:
                return (f"{prefix}{name}", section[name])
        return None

    def source_of(self, loc: tuple[str | int, ...]) -> str:
        parts = tuple(str(p) for p in loc)
        for cut in range(len(parts), 0, -1):
            if parts[:cut] in self.origin:
                rest = parts[cut:]
                return ".".join((self.origin[parts[:cut]], *rest))
        written = self.unwritten.get(parts)
        return written if written else ".".join(parts)


def _as_mapping(value: Any, path: str, norm: _Normaliser) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        norm.problems.append(FieldProblem(path, "must be an object", value))
        return {}
    return value


def _generation(norm: _Normaliser, stage: str, section: Mapping[str, Any], prefix: str) -> None:
    for canonical, names in GEN_ALIASES.items():
        found = norm.pick(section, names, prefix)
        if found:
            norm.put((stage, canonical), found[1], found[0])
    hires_keys = {n for names in HIRES_ALIASES.values() for n in names}
    refiner_keys = {n for names in REFINER_ALIASES.values() for n in names}
    for key, value in section.items():
        if key in _REMAPPED_GEN_KEYS or key in ("enabled",):
            continue
        if stage == "txt2img" and (key in hires_keys or key in refiner_keys):
            continue  # hires/refiner metadata, collected separately
        # Declared fields are validated; anything else is kept as an extra and never sent.
        norm.put((stage, key), value, f"{prefix}{key}")


def _hires(norm: _Normaliser, sources: list[tuple[Mapping[str, Any], str]]) -> None:
    """Hires fields from txt2img/top-level aliases (``sources`` in precedence order)."""
    for canonical, names in HIRES_ALIASES.items():
        for section, prefix in sources:
            found = norm.pick(section, names, prefix)
            if found:
                norm.put(("hires", canonical), found[1], found[0])
                break


def _refiner(norm: _Normaliser, sources: list[tuple[Mapping[str, Any], str]]) -> None:
    for canonical, names in REFINER_ALIASES.items():
        for section, prefix in sources:
            found = norm.pick(section, names, prefix)
            if found:
                norm.put(("refiner", canonical), found[1], found[0])
                break
    ref = norm.out.get("refiner", {})
    if "enabled" not in ref:
        # Neither flag given: an A1111-style config enables the refiner by naming a checkpoint.
        name = ref.get("model_name")
        enabled = isinstance(name, str) and name.strip().lower() not in UNSET_NAMES
        norm.put(("refiner", "enabled"), enabled, norm.origin.get(("refiner", "model_name"), "refiner"))
    name = ref.get("model_name")
    if isinstance(name, str) and name.strip().lower() in UNSET_NAMES:
        ref["model_name"] = None
    if ref.get("enabled") is False:
        # StableNew ignores the switch of a refiner that is off; its v2.6 packs write it as a percentage (80.0).
        for field in ("switch_at", "switch_step"):
            ref.pop(field, None)


def _upscale(norm: _Normaliser, section: Mapping[str, Any], prefix: str) -> None:
    used: set[str] = set()
    for canonical, names in UPSCALE_ALIASES.items():
        used.update(names)
        found = norm.pick(section, names, prefix)
        if found:
            norm.put(("upscale", canonical), found[1], found[0])
    for key, value in section.items():
        if key not in used and key not in ("enabled",):
            norm.put(("upscale", key), value, f"{prefix}{key}")


def _adetailer(norm: _Normaliser, section: Mapping[str, Any], prefix: str) -> None:
    """``adetailer_*`` / ``adetailer_hands_*`` / ``ad_*`` / ``ad_hands_*`` keys -> face and hands passes.

    A pass field is taken from StableNew's ``adetailer_<key>`` first, then its ``ad_`` spelling
    (``ad_mask_feather``), then the bare key; ADetailer's own ``ad_*`` names go to the pass's ``ad_args`` as
    they are (``ad_hands_<x>`` to the hands pass's ``ad_<x>``). Keys the project does not know stay in the
    section (only a lenient parse gets that far) and are never sent.
    """
    hands_on = any(bool(section.get(k)) for k in ("enable_hands_pass", "ad_hands_enabled"))
    if section.get("enable_face_pass") is False:
        norm.problems.append(
            FieldProblem(
                f"{prefix}enable_face_pass",
                "a face pass always runs here; turn ADetailer off instead (adetailer_enabled: false)",
                False,
            )
        )
    spellings = {field: key for key, field in AD_PASS_SPELLINGS.items()}
    for name, field in AD_PASS_KEYS.items():
        face = [f"adetailer_{name}", spellings.get(name, ""), name]
        found = norm.pick(section, tuple(k for k in face if k), prefix)
        if found:
            norm.put(("adetailer", "face", field), found[1], found[0])
        hands = [f"adetailer_hands_{name}", _hands_name(spellings.get(name, ""))]
        found = norm.pick(section, tuple(k for k in hands if k), prefix)
        if found and hands_on:
            norm.put(("adetailer", "hands", field), found[1], found[0])
    args: dict[str, dict[str, Any]] = {"face": {}, "hands": {}}
    for key, value in section.items():
        if key in AD_SWITCHES or _is_pass_key(key, spellings):
            continue
        target: tuple[str, str] | None = None
        if key in AD_HANDS_ARGS:
            target = ("hands", AD_HANDS_ARGS[key])
        elif key.startswith(AD_HANDS_PREFIX):
            arg = "ad_" + key.removeprefix(AD_HANDS_PREFIX)
            if arg in ADETAILER_ARGS or arg in AD_RENAMED:
                target = ("hands", AD_RENAMED.get(arg, arg))
        elif key in ADETAILER_ARGS or key in AD_RENAMED:
            target = ("face", AD_RENAMED.get(key, key))
        if target is None:
            norm.put(("adetailer", key), value, f"{prefix}{key}")  # not sent
        elif target[0] == "face" or hands_on:
            args[target[0]][target[1]] = value
            for where in (("ad_args", target[1]), (target[1],)):  # the pass's own checks name it bare
                norm.origin[("adetailer", target[0], *where)] = f"{prefix}{key}"
    for tab, given in args.items():
        if given:
            norm.put(("adetailer", tab, "ad_args"), given, f"{prefix}ad_*")
    if hands_on:
        hands = norm.out.setdefault("adetailer", {}).setdefault("hands", {})
        hands.setdefault("model", "hand_yolov8n.pt")


def _hands_name(key: str) -> str:
    return AD_HANDS_PREFIX + key.removeprefix("ad_") if key else ""


def _is_pass_key(key: str, spellings: Mapping[str, str]) -> bool:
    for name in AD_PASS_KEYS:
        spelled = spellings.get(name, "")
        if key in (f"adetailer_{name}", f"adetailer_hands_{name}", name, spelled, _hands_name(spelled)):
            return True
    return False


def _flag(value: Any, path: str, norm: _Normaliser) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    norm.problems.append(FieldProblem(path, "must be true or false", value))
    return None


def _normalise_flat(raw: Mapping[str, Any], norm: _Normaliser) -> None:
    norm.unwritten = {
        ("refiner", "model_name"): "refiner_model_name",
        ("refiner", "switch_at"): "refiner_switch_at",
        ("refiner", "switch_step"): "refiner_switch_step",
        ("img2img", "init_images"): "img2img_config.init_images",
    }
    for stage in STAGES:
        flag = _flag(raw.get(f"{stage}_enabled"), f"{stage}_enabled", norm)
        norm.put((f"{stage}_enabled",), bool(flag), f"{stage}_enabled")
    txt = _as_mapping(raw.get("txt2img_config"), "txt2img_config", norm)
    _generation(norm, "txt2img", txt, "txt2img_config.")
    _generation(
        norm, "img2img", _as_mapping(raw.get("img2img_config"), "img2img_config", norm), "img2img_config."
    )
    _upscale(norm, _as_mapping(raw.get("upscale_config"), "upscale_config", norm), "upscale_config.")
    _adetailer(norm, _as_mapping(raw.get("adetailer_config"), "adetailer_config", norm), "adetailer_config.")
    _hires(norm, [(raw, ""), (txt, "txt2img_config.")])
    _refiner(norm, [(raw, ""), (txt, "txt2img_config.")])
    used = {f"{s}_{suffix}" for s in STAGES for suffix in ("enabled", "config")}
    used |= {n for names in (*HIRES_ALIASES.values(), *REFINER_ALIASES.values()) for n in names}
    used.add("callback_url")
    _extras(raw, used, norm)


def _normalise_nested(raw: Mapping[str, Any], norm: _Normaliser) -> None:
    norm.unwritten = {
        ("refiner", "model_name"): "txt2img.refiner_checkpoint",
        ("refiner", "switch_at"): "txt2img.refiner_switch_at",
        ("refiner", "switch_step"): "txt2img.refiner_switch_steps",
        ("img2img", "init_images"): "img2img.init_images",
    }
    pipeline = _as_mapping(raw.get("pipeline"), "pipeline", norm)
    sections = {s: _as_mapping(raw.get(s), s, norm) for s in STAGES}
    for stage in STAGES:
        candidates = [
            (pipeline.get(f"{stage}_enabled"), f"pipeline.{stage}_enabled"),
            (sections[stage].get("enabled"), f"{stage}.enabled"),
            (sections[stage].get(f"{stage}_enabled"), f"{stage}.{stage}_enabled"),
            (raw.get(f"{stage}_enabled"), f"{stage}_enabled"),
        ]
        value: bool | None = None
        where = f"pipeline.{stage}_enabled"
        for candidate, path in candidates:
            value = _flag(candidate, path, norm)
            if value is not None:
                where = path
                break
        if value is None:
            value = stage == "txt2img"  # StableNew: txt2img is on unless something says otherwise
        norm.put((f"{stage}_enabled",), value, where)
    _generation(norm, "txt2img", sections["txt2img"], "txt2img.")
    _generation(norm, "img2img", sections["img2img"], "img2img.")
    _upscale(norm, sections["upscale"], "upscale.")
    _adetailer(norm, sections["adetailer"], "adetailer.")
    hires_fix = _as_mapping(raw.get("hires_fix"), "hires_fix", norm)
    _hires(norm, [(sections["txt2img"], "txt2img."), (raw, "")])
    for canonical, key in HIRES_FIX_KEYS.items():  # hires_fix fills what txt2img left unsaid
        if canonical not in norm.out.get("hires", {}) and key in hires_fix:
            norm.put(("hires", canonical), hires_fix[key], f"hires_fix.{key}")
    _refiner(norm, [(sections["txt2img"], "txt2img."), (raw, "")])
    _extras(raw, set(NESTED_SECTIONS) | {"callback_url"}, norm)


def _extras(raw: Mapping[str, Any], used: set[str], norm: _Normaliser) -> None:
    if "callback_url" in raw and raw["callback_url"] is not None:
        norm.put(("callback_url",), raw["callback_url"], "callback_url")
    extras = {k: v for k, v in raw.items() if k not in used}
    if extras:
        norm.put(("extras",), extras, "extras")


def _unwrap(raw: Mapping[str, Any], norm: _Normaliser) -> Mapping[str, Any]:
    if "schema" not in raw and "execution_config" not in raw:
        return raw
    schema = raw.get("schema")
    if schema not in SUPPORTED_WRAPPER_SCHEMAS:
        supported = ", ".join(sorted(SUPPORTED_WRAPPER_SCHEMAS))
        norm.problems.append(
            FieldProblem("schema", f"unknown config schema (supported: {supported})", schema)
        )
        return {}
    return _as_mapping(raw.get("execution_config"), "execution_config", norm)


def detect_shape(raw: Mapping[str, Any]) -> Literal["flat", "nested"]:
    """``nested`` when any StableNew preset section is present, else ``flat``."""
    if any(s in raw for s in NESTED_SECTIONS):
        return "nested"
    return "flat"


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must not be empty",
    "string_unicode": "must be valid Unicode text (it holds a lone surrogate)",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "list_type": "must be a list",
    "string_pattern_mismatch": "must be an http(s) URL",
    "extra_forbidden": "is not a known field",
    "too_long": "must have at most {max_length} items",
}


def _problem_from_error(err: Mapping[str, Any], norm: _Normaliser) -> FieldProblem:
    loc: tuple[str | int, ...] = tuple(err.get("loc", ()))
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    template = _MESSAGES.get(kind)
    if template is not None:
        message = template.format(**ctx) if ctx else template
        if kind == "string_too_long":
            return FieldProblem(
                norm.source_of(loc), message + f" (got {len(str(err.get('input')))})", has_value=False
            )
        return FieldProblem(norm.source_of(loc), message, err.get("input"))
    text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    # Model-level messages carry their own "field: message (got x)" text.
    field, sep, rest = text.partition(": ")
    if sep and "." in field and " " not in field:
        return FieldProblem(norm.source_of(tuple(field.split("."))), rest, has_value=False)
    if sep and kind == "value_error" and field.isidentifier():  # a section-level check naming its field
        return FieldProblem(norm.source_of((*loc, field)), rest, has_value=False)
    if " (got " in text:
        return FieldProblem(norm.source_of(loc), text, has_value=False)
    return FieldProblem(norm.source_of(loc), text, err.get("input"))


def structure_problem(raw: Any, *, max_depth: int = MAX_DEPTH) -> FieldProblem | None:
    """The first place where ``raw`` nests objects or lists deeper than ``max_depth``, or has a key that is
    not a string; None when it has neither. Iterative: it cannot itself run out of stack."""
    todo: list[tuple[Any, tuple[str, ...]]] = [(raw, ())]
    while todo:
        node, path = todo.pop()
        if isinstance(node, Mapping):
            items: Any = node.items()
        elif isinstance(node, list | tuple):
            items = enumerate(node)
        else:
            continue
        if len(path) >= max_depth:
            return FieldProblem(
                ".".join(path), f"is nested more than {max_depth} levels deep", has_value=False
            )
        for key, value in items:
            if isinstance(node, Mapping) and not isinstance(key, str):
                return FieldProblem(".".join(path), "has a key that is not a string", key)
            if isinstance(value, Mapping | list | tuple):
                todo.append((value, (*path, str(key))))
    return None


def parse_config(
    raw: Mapping[str, Any] | PipelineConfig, *, source: str | None = None, lenient: bool = False
) -> PipelineConfig:
    """Validate a config of any accepted shape into a :class:`PipelineConfig`.

    Every key must be known (:mod:`stablenew.pipeline._keys`): mapped, or listed as accepted and not sent.
    With ``lenient`` (presets from a newer StableNew), unknown keys are not errors: they are logged, kept
    out of every request, and listed in the result's :attr:`~PipelineConfig.ignored_keys`.

    Raises:
        ConfigError: listing every problem, each with the field path as written and the bad value; an
            unknown key is named as written, with the closest known key of its section.
    """
    if isinstance(raw, PipelineConfig):
        return raw
    norm = _Normaliser()
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [FieldProblem("", "a pipeline config must be a JSON object", type(raw).__name__)], source=source
        )
    problem = structure_problem(raw)
    if problem is not None:
        raise ConfigError([problem], source=source)
    body = _unwrap(raw, norm)
    wrapped = body is not raw
    shape = detect_shape(body)
    unknown = [*wrapper_problems(raw)] if wrapped else []
    unknown += unknown_key_problems(body, shape, prefix="execution_config." if wrapped else "")
    if not lenient:
        norm.problems.extend(unknown)
    if shape == "nested":
        _normalise_nested(body, norm)
    else:
        _normalise_flat(body, norm)
    try:
        cfg = PipelineConfig.model_validate(norm.out)
    except ValidationError as exc:
        problems = [_problem_from_error(e, norm) for e in exc.errors(include_url=False)]
        raise ConfigError([*norm.problems, *problems], source=source) from None
    if norm.problems:
        raise ConfigError(norm.problems, source=source)
    if unknown:
        where = f"{source}: " if source else ""
        for ignored in unknown:
            _log.warning("%signored %s", where, ignored)
        cfg._ignored_keys = tuple(unknown)
    return cfg
