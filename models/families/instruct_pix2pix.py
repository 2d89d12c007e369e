"""InstructPix2Pix: a Stable Diffusion UNet with 8 input channels, the edited video's latents joined to its input."""

from __future__ import annotations

import torch

from ...samplers.guidance import Condition, Guidance
from .base import ModelFamily

IMAGE_LATENTS = "concat_latent_image"
"""Core ComfyUI's conditioning key for latents joined to the UNet input (`InstructPixToPixConditioning`)."""
IMAGE_CFG = "t2v_image_cfg"
"""The pack's conditioning key for the image guidance scale of three-way guidance."""


def video_image_latents(latents: torch.Tensor) -> torch.Tensor:
    """Image latents as core stores them (`[F, C, h, w]`, frames along the batch) or 5-D -> `[1, C, F, h, w]`."""
    return latents.permute(1, 0, 2, 3).unsqueeze(0) if latents.ndim == 4 else latents


class InstructPix2Pix(ModelFamily):
    """As diffusers' `StableDiffusionInstructPix2PixPipeline`: raw image latents (the VAE posterior's mode,
    unscaled) joined to the scaled model input; three-way guidance over `[text + image, image, nothing]`."""

    name = "instruct_pix2pix"
    description = "InstructPix2Pix (Stable Diffusion, 8-channel UNet)"
    concat_channels = 4

    def matches(self, index: dict, unet_config: dict) -> bool:
        return super().matches(index, unet_config) and unet_config.get("in_channels") == 8

    def conditioning_problem(self, meta: dict) -> str | None:
        if meta.get(IMAGE_LATENTS) is None or meta.get(IMAGE_CFG) is None:
            return ("an InstructPix2Pix model edits images: pass the conditioning through "
                    "T2VInstructPix2PixConditioning with the frames to edit")
        return None

    def condition(self, embeds: torch.Tensor, meta: dict, latent_shape: tuple, spatial_scale: int) -> Condition:
        image = video_image_latents(meta[IMAGE_LATENTS]).to(embeds.device, torch.float32)
        if tuple(image.shape[2:]) != tuple(latent_shape[2:]):
            raise ValueError(f"the image latents are {tuple(image.shape[2:])} (frames, h, w) but the latent is "
                             f"{tuple(latent_shape[2:])}; sample the LATENT that T2VInstructPix2PixConditioning made")
        return Condition(embeds, concat=image)

    def guidance(self, positive, negative, cfg: float, latent_shape: tuple, spatial_scale: int) -> Guidance:
        def entries(conditioning):
            return [self.condition(embeds, meta, latent_shape, spatial_scale) for embeds, meta in conditioning]

        image_cfg = float(positive[0][1][IMAGE_CFG])
        guided = Guidance([], [], cfg, image_cfg).guided
        return Guidance(entries(positive), entries(negative) if guided else [], cfg, image_cfg)


INSTRUCT_PIX2PIX = InstructPix2Pix()
