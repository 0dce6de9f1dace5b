"""Sampler names that carry a scheduler ("DPM++ 2M Karras"), split the way A1111 does.

A1111 v1.9 moved schedulers out of sampler names, and still accepts the joined spelling by splitting
off a trailing scheduler label; StableNew configs (and ADetailer's default ``ad_sampler``) use it.
Deciding this in the pure layer means the plan already carries the sampler and scheduler A1111
will really use, and preflight checks those.
"""

from __future__ import annotations

from pydantic import BaseModel

UNSET_NAMES = frozenset({"", "none", "automatic", "null"})


# A1111 v1.10's schedulers (modules/sd_schedulers.py): name -> its label, then its aliases.
A1111_SCHEDULERS: dict[str, tuple[str, ...]] = {
    "automatic": ("Automatic",),
    "uniform": ("Uniform",),
    "karras": ("Karras",),
    "exponential": ("Exponential",),
    "polyexponential": ("Polyexponential",),
    "sgm_uniform": ("SGM Uniform", "SGMUniform"),
    "kl_optimal": ("KL Optimal",),
    "align_your_steps": ("Align Your Steps",),
    "simple": ("Simple",),
    "normal": ("Normal",),
    "ddim": ("DDIM",),
    "beta": ("Beta",),
}
_SCHEDULER_OF = {
    spelling.lower(): name for name, spellings in A1111_SCHEDULERS.items() for spelling in (name, *spellings)
}
# Longest first, so "DPM++ 2M SGM Uniform" loses " SGM Uniform", not " Uniform".
_SCHEDULER_SUFFIXES = sorted(_SCHEDULER_OF, key=len, reverse=True)
SAME_SCHEDULER = frozenset({"use same scheduler", "inherit"})


class SamplerSchedulerConflict(ValueError):
    """A sampler name ends with a scheduler that disagrees with the scheduler given beside it."""


def split_sampler_name(sampler: str) -> tuple[str, str | None]:
    """``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", "Karras")``; a name without a trailing scheduler -> ``(name, None)``.

    Since v1.9 A1111 lists samplers and schedulers apart ("DPM++ 2M" + "Karras") and only accepts the old joined
    names by splitting off a trailing scheduler label, name or alias (``sd_samplers.get_sampler_and_scheduler``).
    This split is the same, except that it ignores case and tries the longest suffix first.
    """
    lowered = sampler.lower()
    for suffix in _SCHEDULER_SUFFIXES:
        if lowered.endswith(" " + suffix):
            base = sampler[: -len(suffix) - 1].rstrip()
            if base:
                return base, A1111_SCHEDULERS[_SCHEDULER_OF[suffix]][0]
    return sampler, None


def scheduler_key(scheduler: str) -> str:
    """The A1111 scheduler name a label, name or alias means (``"SGM Uniform"`` -> ``"sgm_uniform"``)."""
    text = scheduler.strip().lower()
    return _SCHEDULER_OF.get(text, text)


def resolve_sampler(sampler: str | None, scheduler: str | None) -> tuple[str | None, str | None]:
    """Split a scheduler off ``sampler`` into ``scheduler``: ``("DPM++ 2M Karras", None)`` -> ``("DPM++ 2M", "Karras")``.

    A scheduler given beside it (not unset, "Automatic", "Use same scheduler" or "inherit") is kept; it must
    name the same scheduler. A name without a trailing scheduler is returned unchanged.

    Raises:
        SamplerSchedulerConflict: the name's scheduler and the given one differ.
    """
    if not sampler:
        return sampler, scheduler
    base, named = split_sampler_name(sampler)
    if named is None:
        return sampler, scheduler
    if scheduler is None or scheduler.strip().lower() in UNSET_NAMES | SAME_SCHEDULER:
        return base, None if scheduler_key(named) == "automatic" else named
    if scheduler_key(scheduler) != scheduler_key(named):
        raise SamplerSchedulerConflict(
            f"disagrees with the scheduler {named!r} that the sampler name {sampler!r} ends with"
        )
    return base, scheduler


def split_sampler_of(model: BaseModel, sampler_field: str, scheduler_field: str) -> None:
    """Store a sampler name's trailing scheduler in the scheduler field (the section's one derived value)."""
    given = getattr(model, scheduler_field)
    try:
        sampler, scheduler = resolve_sampler(getattr(model, sampler_field), given)
    except SamplerSchedulerConflict as exc:
        raise ValueError(f"{scheduler_field}: {exc} (got {given!r})") from None
    # The sections are frozen; this is set once, during validation.
    object.__setattr__(model, sampler_field, sampler)
    object.__setattr__(model, scheduler_field, scheduler)
