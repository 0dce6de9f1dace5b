"""Talking to an AUTOMATIC1111 WebUI: the HTTP client, the payload builders and the stage executor.

Every public name of the WebUI client side is imported from here; the modules behind it are private:

- ``_client``: :class:`WebUIClient`, the HTTP boundary (one method per route), and the
  :class:`GenerationResult` it returns;
- ``_transport``: the client's calls, each bounded in time and answer size (``_bounded``), with the
  streamed request body (``_request_body``) and the checks and error mapping of each answer (``_responses``);
- ``_payloads``: neutral stage payload -> A1111 request body, one builder per stage (:func:`txt2img_body`
  ...), from A1111's field lists and the sampler and scheduler a config asks for (``_fields``:
  :data:`TXT2IMG_FIELDS`, :func:`sampler_and_scheduler` ...), with ADetailer tabs checked as ADetailer
  would check them (``_adetailer_tab``, against :data:`ADETAILER_ARGS`);
- ``_executor``: :class:`WebUIExecutor`, the runner's stage executor, with its ``_preflight`` (a plan
  checked against the WebUI's :class:`Inventory`, read in ``_inventory``) and its ``_progress`` poller
  (progress reports, and the interrupt of a canceled stage);
- ``_images``: cheap facts about base64 images (:func:`image_size`, :func:`image_format`, :func:`decode`),
  and :class:`ImageBytes`, an input image held as its bytes and sent as base64 a slice at a time.

Names are loaded on first use (PEP 562), so that importing one of them (or the simulator) does not load
``requests`` and the pipeline's models with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ANSWER_FLOOR_BYTES": "stablenew.webui._bounded",
    "answer_limit": "stablenew.webui._bounded",
    "ADETAILER_ARGS": "stablenew.pipeline",  # one table; the config layer checks ad_* names with it
    "DEFAULT_CLIP_SKIP": "stablenew.webui._payloads",
    "DEFAULT_SAMPLER": "stablenew.webui._fields",
    "DEFAULT_VAE": "stablenew.webui._payloads",
    "EXTRAS_FIELDS": "stablenew.webui._fields",
    "IMG2IMG_FIELDS": "stablenew.webui._fields",
    "REFINER_WITH_HIRES": "stablenew.webui._payloads",
    "STAGE_ROUTES": "stablenew.webui._fields",
    "TXT2IMG_FIELDS": "stablenew.webui._fields",
    "USE_SAME_SCHEDULER": "stablenew.webui._fields",
    "CancelCheck": "stablenew.webui._executor",
    "GenerationResult": "stablenew.webui._client",
    "ImageBytes": "stablenew.webui._images",
    "Inventory": "stablenew.webui._inventory",
    "ProgressCallback": "stablenew.webui._executor",
    "WebUIClient": "stablenew.webui._client",
    "WebUIExecutor": "stablenew.webui._executor",
    "adetailer_body": "stablenew.webui._payloads",
    "adetailer_tab": "stablenew.webui._adetailer_tab",
    "check_fields": "stablenew.webui._fields",
    "decode": "stablenew.webui._images",
    "fetch_inventory": "stablenew.webui._inventory",
    "hires_sampler_and_scheduler": "stablenew.webui._fields",
    "image_format": "stablenew.webui._images",
    "image_size": "stablenew.webui._images",
    "img2img_body": "stablenew.webui._payloads",
    "sampler_and_scheduler": "stablenew.webui._fields",
    "strip_data_url": "stablenew.webui._images",
    "txt2img_body": "stablenew.webui._payloads",
    "upscale_body": "stablenew.webui._payloads",
    "validate_adetailer_tab": "stablenew.webui._adetailer_tab",
    "validate_stage_payload": "stablenew.webui._payloads",
}

__all__ = [
    "ADETAILER_ARGS",
    "ANSWER_FLOOR_BYTES",
    "DEFAULT_CLIP_SKIP",
    "DEFAULT_SAMPLER",
    "DEFAULT_VAE",
    "EXTRAS_FIELDS",
    "IMG2IMG_FIELDS",
    "REFINER_WITH_HIRES",
    "STAGE_ROUTES",
    "TXT2IMG_FIELDS",
    "USE_SAME_SCHEDULER",
    "CancelCheck",
    "GenerationResult",
    "ImageBytes",
    "Inventory",
    "ProgressCallback",
    "WebUIClient",
    "WebUIExecutor",
    "adetailer_body",
    "adetailer_tab",
    "answer_limit",
    "check_fields",
    "decode",
    "fetch_inventory",
    "hires_sampler_and_scheduler",
    "image_format",
    "image_size",
    "img2img_body",
    "sampler_and_scheduler",
    "strip_data_url",
    "txt2img_body",
    "upscale_body",
    "validate_adetailer_tab",
    "validate_stage_payload",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:
    from stablenew.pipeline import ADETAILER_ARGS

    from ._adetailer_tab import adetailer_tab, validate_adetailer_tab
    from ._bounded import ANSWER_FLOOR_BYTES, answer_limit
    from ._client import GenerationResult, WebUIClient
    from ._executor import CancelCheck, ProgressCallback, WebUIExecutor
    from ._fields import (
        DEFAULT_SAMPLER,
        EXTRAS_FIELDS,
        IMG2IMG_FIELDS,
        STAGE_ROUTES,
        TXT2IMG_FIELDS,
        USE_SAME_SCHEDULER,
        check_fields,
        hires_sampler_and_scheduler,
        sampler_and_scheduler,
    )
    from ._images import ImageBytes, decode, image_format, image_size, strip_data_url
    from ._inventory import Inventory, fetch_inventory
    from ._payloads import (
        DEFAULT_CLIP_SKIP,
        DEFAULT_VAE,
        REFINER_WITH_HIRES,
        adetailer_body,
        img2img_body,
        txt2img_body,
        upscale_body,
        validate_stage_payload,
    )
