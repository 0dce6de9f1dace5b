"""Small pipeline configs (256x256, few steps) shared by the unit tests, so the suite stays fast."""

from __future__ import annotations

from typing import Any


class Configs:
    """Small configs (256x256, few steps) so the suite stays fast."""

    @staticmethod
    def txt2img(prompt: str = "a red bicycle", **overrides: Any) -> dict[str, Any]:
        section = {"prompt": prompt, "width": 256, "height": 256, "steps": 4, "seed": 7, **overrides}
        return {"txt2img_enabled": True, "txt2img_config": section}

    @staticmethod
    def two_stage(prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **Configs.txt2img(prompt),
            "img2img_enabled": True,
            "img2img_config": {"denoising_strength": 0.4, "steps": 4},
        }

    @staticmethod
    def three_stage(prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **Configs.two_stage(prompt),
            "upscale_enabled": True,
            "upscale_config": {"upscaler": "R-ESRGAN 4x+", "upscaling_resize": 1.5},
        }

    @staticmethod
    def four_stage(prompt: str = "a red bicycle") -> dict[str, Any]:
        return {
            **Configs.three_stage(prompt),
            "adetailer_enabled": True,
            "adetailer_config": {"adetailer_model": "face_yolov8n.pt", "adetailer_steps": 4},
        }
