"""Filling in a config's txt2img prompt from the command line, in the shape the config uses.

StableNew's presets carry no prompt by design (its GUI fills one in at run time); ``--prompt`` and
``--negative-prompt`` do the same for ``plan``, ``run`` and ``submit``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ._normalise import detect_shape


def fill_prompt(
    raw: Mapping[str, Any], *, prompt: str | None = None, negative_prompt: str | None = None
) -> dict[str, Any]:
    """A copy of ``raw`` whose txt2img prompt (and negative prompt) are the ones given; None keeps the file's.

    The txt2img section is ``txt2img_config`` in the flat shape, ``txt2img`` in the nested preset, and
    ``execution_config.txt2img`` in the v2.6 wrapper; it is created when missing. A section that is not an
    object is left alone, for validation to report.
    """
    out = copy.deepcopy(dict(raw))
    given = {k: v for k, v in (("prompt", prompt), ("negative_prompt", negative_prompt)) if v is not None}
    if not given:
        return out
    body = out
    if "schema" in out or "execution_config" in out:
        inner = out.get("execution_config")
        if not isinstance(inner, dict):
            return out
        body = inner
    key = "txt2img" if detect_shape(body) == "nested" else "txt2img_config"
    section = body.setdefault(key, {})
    if isinstance(section, dict):
        section.update(given)
    return out
