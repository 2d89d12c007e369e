"""Stable Diffusion 1.x/2.x: an image UNet with 4 input channels and one CLIP text encoder (Text2Video-Zero)."""

from __future__ import annotations

from .base import ModelFamily


class StableDiffusion(ModelFamily):
    """The base family's behaviour: last hidden states of one CLIP encoder, no extra UNet inputs."""

    def matches(self, index: dict, unet_config: dict) -> bool:
        return super().matches(index, unet_config) and unet_config.get("in_channels", 4) == 4


STABLE_DIFFUSION = StableDiffusion()
