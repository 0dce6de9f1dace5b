"""Small pipeline configs shared by the tests, so the suite stays fast: ``Configs`` (256x256, 4 steps,
seed 7) for the unit tests, ``TinyConfigs`` (64x64, 2 steps, no seed) for the suites whose workers are
real processes."""

from __future__ import annotations

from typing import Any


class Configs:
    """Small configs (256x256, few steps) so the suite stays fast."""

    SIZE = 256
    STEPS = 4
    SEED: int | None = 7

    @classmethod
    def txt2img(cls, prompt: str = "a red bicycle", **overrides: Any) -> dict[str, Any]:
        seed = {} if cls.SEED is None else {"seed": cls.SEED}
        section = {"prompt": prompt, "width": cls.SIZE, "height": cls.SIZE, "steps": cls.STEPS, **seed}
        return {"txt2img_enabled": True, "txt2img_config": {**section, **overrides}}

    @classmethod
    def two_stage(cls, prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **cls.txt2img(prompt),
            "img2img_enabled": True,
            "img2img_config": {"denoising_strength": 0.4, "steps": cls.STEPS},
        }

    @classmethod
    def three_stage(cls, prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **cls.two_stage(prompt),
            "upscale_enabled": True,
            "upscale_config": {"upscaler": "R-ESRGAN 4x+", "upscaling_resize": 1.5},
        }

    @classmethod
    def four_stage(cls, prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **cls.three_stage(prompt),
            "adetailer_enabled": True,
            "adetailer_config": {"adetailer_model": "face_yolov8n.pt", "adetailer_steps": cls.STEPS},
        }


class TinyConfigs(Configs):
    """Tinier still (64x64, 2 steps) and with no seed: plans the simulator answers in milliseconds."""

    SIZE = 64
    STEPS = 2
    SEED = None
