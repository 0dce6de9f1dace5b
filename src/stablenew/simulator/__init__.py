"""A simulated AUTOMATIC1111 WebUI (v1.10.1 API, with ADetailer 25.3.0) for the demo, tests and benchmarks.

:class:`SimulatedWebUI` serves the routes StableNew uses with the same request and response shapes, error
shapes and silent behaviours as the real server (see ``docs/webui-api.md``), renders small real PNGs whose
colour tells the stage apart, and lets tests inject faults (:class:`Fault`), add latency, interrupt, and read
back every request it received (:class:`RecordedRequest`, or a ``recorder`` function). An :class:`Images`
strategy decides how images are decoded and encoded. :func:`serve` runs one in the foreground for
``stablenew simulator``.

This package is the only import path for all of it; its modules are private. It imports nothing of the rest
of StableNew, so that it stands in for the WebUI and nothing else.
"""

from __future__ import annotations

from ._api import (
    A1111_VERSION,
    ADETAILER_ARG_KEYS,
    ADETAILER_VERSION,
    DEFAULT_ADETAILER_MODELS,
    DEFAULT_MODELS,
    DEFAULT_SAMPLERS,
    DEFAULT_SCHEDULERS,
    DEFAULT_UPSCALERS,
    DEFAULT_VAES,
    GENERATION_ROUTES,
    LATENT_UPSCALE_MODES,
)
from ._faults import Fault, FaultKind
from ._images import Images, with_text_chunks
from ._timesteps import SIGMA_MAX, SIGMA_MIN, refiner_switch_step, step_sigmas, timestep_of
from ._webui import RecordedRequest, SimulatedWebUI, serve

__all__ = [
    "A1111_VERSION",
    "ADETAILER_ARG_KEYS",
    "ADETAILER_VERSION",
    "DEFAULT_ADETAILER_MODELS",
    "DEFAULT_MODELS",
    "DEFAULT_SAMPLERS",
    "DEFAULT_SCHEDULERS",
    "DEFAULT_UPSCALERS",
    "DEFAULT_VAES",
    "GENERATION_ROUTES",
    "LATENT_UPSCALE_MODES",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "Fault",
    "FaultKind",
    "Images",
    "RecordedRequest",
    "SimulatedWebUI",
    "refiner_switch_step",
    "serve",
    "step_sigmas",
    "timestep_of",
    "with_text_chunks",
]
