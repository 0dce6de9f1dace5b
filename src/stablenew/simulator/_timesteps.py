"""At which sampling step the AUTOMATIC1111 WebUI (v1.10.1) hands a txt2img job over to the refiner.

A1111 decides the switch in `modules/sd_samplers_common.py::apply_refiner`, which the CFG denoiser
(`modules/sd_samplers_cfg_denoiser.py::CFGDenoiser.forward`) calls before every model evaluation:

- With the option `refiner_switch_by_sample_steps` off (its default, `modules/shared_options.py`), the sigma of
  the current call is turned into a model timestep: the index of the nearest entry (by absolute difference) in
  the model's 1000-entry sigma table. The completed ratio is then `(999 - timestep) / 1000`.
- With the option on, the completed ratio is `denoiser_calls_so_far / expected_calls`, i.e. `step / steps` for
  a first-order sampler.
- The refiner is loaded at the first call whose ratio is not below `refiner_switch_at`; that call and every
  later one run on the refiner. With no `refiner_switch_at` at all the switch happens at once.

The sigma of step `i` is entry `i` of the schedule that `modules/sd_samplers_kdiffusion.py::
KDiffusionSampler.get_sigmas` builds: the scheduler named in the request (`modules/sd_schedulers.py`), or for
"Automatic" the sampler's own default (the `scheduler` option of its row in `samplers_k_diffusion`), or, when
the sampler has none, the model's uniform schedule (`DiscreteSchedule.get_sigmas` of k-diffusion). The schedule
runs between the model's smallest and largest sigma. Samplers flagged `discard_next_to_last_sigma` build one
step more and drop the second-to-last sigma.

The model's sigma table is the SD 1.5 / SDXL one: the scaled-linear beta schedule (beta from 0.00085 to 0.012,
linear in sqrt(beta), 1000 steps), sigma_t = sqrt((1 - alphabar_t) / alphabar_t), so sigma_min ~0.0292 and
sigma_max ~14.6146. Timestep <-> sigma conversions interpolate linearly in log sigma, as k-diffusion's
`DiscreteSchedule.sigma_to_t` / `t_to_sigma` do.

Approximations (a step earlier or later is possible only where a ratio lands within float noise of the
threshold):

- The table is computed in float64; A1111 holds it in float32 (and in fp16 with `use_downcasted_alpha_bar`).
- Second-order samplers (Heun, DPM2, DPM++ SDE, DPM++ 2S a, Restart) also evaluate the model at intermediate
  sigmas, and with `refiner_switch_by_sample_steps` they count two calls per step; this module treats every
  sampler as first-order, one call per step at the step's own sigma.
- txt2img only: img2img and the hires second pass start part-way into a longer schedule.
- Options left at their defaults: no custom sigma_min / sigma_max / rho, `always_discard_next_to_last_sigma`
  off, `use_old_karras_scheduler_sigmas` off.
- Schedulers that need the loaded model's type or scipy (Align Your Steps, Beta) are not modelled.
"""

from __future__ import annotations

import math

_TIMESTEPS = 1000
_BETA_START = 0.00085
_BETA_END = 0.012


def _model_sigmas() -> list[float]:
    """The model's sigma for each timestep 0..999, ascending (SD 1.5 and SDXL share it)."""
    root_start, root_end = math.sqrt(_BETA_START), math.sqrt(_BETA_END)
    sigmas: list[float] = []
    alphabar = 1.0
    for t in range(_TIMESTEPS):
        root = root_start + (root_end - root_start) * t / (_TIMESTEPS - 1)
        alphabar *= 1.0 - root * root
        sigmas.append(math.sqrt((1.0 - alphabar) / alphabar))
    return sigmas


_SIGMAS = _model_sigmas()
_LOG_SIGMAS = [math.log(s) for s in _SIGMAS]
SIGMA_MIN = _SIGMAS[0]
SIGMA_MAX = _SIGMAS[-1]


def _linspace(start: float, end: float, count: int) -> list[float]:
    if count == 1:
        return [start]
    return [start + (end - start) * i / (count - 1) for i in range(count)]


def _t_to_sigma(t: float) -> float:
    low = math.floor(t)
    high = math.ceil(t)
    frac = t - low
    return math.exp((1.0 - frac) * _LOG_SIGMAS[low] + frac * _LOG_SIGMAS[high])


def _sigma_to_t(sigma: float) -> float:
    log_sigma = math.log(sigma)
    low = 0
    for index, value in enumerate(_LOG_SIGMAS):
        if log_sigma - value >= 0:
            low = index
    low = min(low, _TIMESTEPS - 2)
    high = low + 1
    weight = (_LOG_SIGMAS[low] - log_sigma) / (_LOG_SIGMAS[low] - _LOG_SIGMAS[high])
    weight = min(max(weight, 0.0), 1.0)
    return (1.0 - weight) * low + weight * high


def _uniform(n: int) -> list[float]:
    return [_t_to_sigma(t) for t in _linspace(_TIMESTEPS - 1, 0.0, n)]


def _karras(n: int, rho: float = 7.0) -> list[float]:
    max_inv, min_inv = SIGMA_MAX ** (1 / rho), SIGMA_MIN ** (1 / rho)
    return [(max_inv + ramp * (min_inv - max_inv)) ** rho for ramp in _linspace(0.0, 1.0, n)]


def _exponential(n: int) -> list[float]:
    return [math.exp(x) for x in _linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), n)]


def _polyexponential(n: int, rho: float = 1.0) -> list[float]:
    span = math.log(SIGMA_MAX) - math.log(SIGMA_MIN)
    return [math.exp(ramp**rho * span + math.log(SIGMA_MIN)) for ramp in _linspace(1.0, 0.0, n)]


def _sgm_uniform(n: int) -> list[float]:
    start, end = _sigma_to_t(SIGMA_MAX), _sigma_to_t(SIGMA_MIN)
    return [_t_to_sigma(t) for t in _linspace(start, end, n + 1)[:-1]]


def _normal(n: int) -> list[float]:
    start, end = _sigma_to_t(SIGMA_MAX), _sigma_to_t(SIGMA_MIN)
    return [_t_to_sigma(t) for t in _linspace(start, end, n)]


def _simple(n: int) -> list[float]:
    stride = _TIMESTEPS / n
    return [_SIGMAS[-(1 + int(x * stride))] for x in range(n)]


def _kl_optimal(n: int) -> list[float]:
    a_min, a_max = math.atan(SIGMA_MIN), math.atan(SIGMA_MAX)
    return [math.tan(i / n * a_min + (1.0 - i / n) * a_max) for i in range(n)]


def _ddim(n: int) -> list[float]:
    stride = max(_TIMESTEPS // n, 1)
    return [_SIGMAS[x] for x in range(1, _TIMESTEPS, stride)][::-1]


# name and label of each scheduler in modules/sd_schedulers.py, mapped to its sigma schedule
# (without the closing 0.0, which is never a model call's sigma)
_SCHEDULES = {
    "uniform": _uniform,
    "karras": _karras,
    "exponential": _exponential,
    "polyexponential": _polyexponential,
    "sgm_uniform": _sgm_uniform,
    "kl_optimal": _kl_optimal,
    "simple": _simple,
    "normal": _normal,
    "ddim": _ddim,
}
_LABELS = {
    "Automatic": "automatic",
    "Uniform": "uniform",
    "Karras": "karras",
    "Exponential": "exponential",
    "Polyexponential": "polyexponential",
    "SGM Uniform": "sgm_uniform",
    "KL Optimal": "kl_optimal",
    "Simple": "simple",
    "Normal": "normal",
    "DDIM": "ddim",
}

# sampler label -> (default scheduler for "Automatic", discard_next_to_last_sigma), from samplers_k_diffusion
_SAMPLERS: dict[str, tuple[str | None, bool]] = {
    "DPM++ 2M": ("karras", False),
    "DPM++ SDE": ("karras", False),
    "DPM++ 2M SDE": ("exponential", False),
    "DPM++ 2M SDE Heun": ("exponential", False),
    "DPM++ 2S a": ("karras", False),
    "DPM++ 3M SDE": ("exponential", True),
    "Euler a": (None, False),
    "Euler": (None, False),
    "LMS": (None, False),
    "Heun": (None, False),
    "DPM2": ("karras", True),
    "DPM2 a": ("karras", True),
    "DPM fast": (None, False),
    "DPM adaptive": (None, False),
    "Restart": ("karras", False),
}


def step_sigmas(steps: int, scheduler: str, sampler: str = "Euler") -> list[float]:
    """The sigma at which the model runs on each of `steps` txt2img steps (first-order view).

    Raises:
        ValueError: for a scheduler or sampler this module does not know, or steps < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if sampler not in _SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}")
    name = _LABELS.get(scheduler, scheduler)
    default, discard = _SAMPLERS[sampler]
    if name == "automatic":
        name = default or "uniform"
    if name not in _SCHEDULES:
        raise ValueError(f"unknown or unmodelled scheduler {scheduler!r}")
    n = steps + 1 if discard else steps
    sigmas = _SCHEDULES[name](n)
    if discard:
        # the schedule also ends in 0.0: dropping the penultimate sigma of [..., s_{n-1}, 0] drops s_{n-1}
        sigmas = sigmas[:-1]
    return sigmas


def timestep_of(sigma: float) -> int:
    """The model timestep A1111 assigns to a sigma: the nearest entry of the model's sigma table."""
    return min(range(_TIMESTEPS), key=lambda t: abs(_SIGMAS[t] - sigma))


def refiner_switch_step(
    steps: int,
    scheduler: str,
    switch_at: float | None,
    by_sample_steps: bool,
    *,
    sampler: str = "Euler",
) -> int:
    """The 0-based txt2img step at which A1111 v1.10.1 first runs the refiner; the step count when it never does.

    `scheduler` is a name or label from `modules/sd_schedulers.py` ("Automatic" resolves through `sampler`).
    `by_sample_steps` is the WebUI option `refiner_switch_by_sample_steps`. A `switch_at` of None means the
    request named a refiner without a switch point: A1111 then switches at the first step.

    Raises:
        ValueError: for a scheduler or sampler this module does not know, or steps < 1.
    """
    sigmas = step_sigmas(steps, scheduler, sampler)
    if switch_at is None:
        return 0
    for step, sigma in enumerate(sigmas):
        completed = step / steps if by_sample_steps else (999 - timestep_of(sigma)) / 1000
        if completed >= switch_at:
            return step
    return len(sigmas)
