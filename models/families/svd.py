"""Stable Video Diffusion: a spatio-temporal UNet driven by one image (its CLIP image embedding and VAE latents)."""

from __future__ import annotations

import torch

from ...samplers.guidance import Condition, Guidance
from .base import ModelFamily, TextEncoderSlot
from .instruct_pix2pix import IMAGE_LATENTS

FPS = "fps"
MOTION_BUCKET = "motion_bucket_id"
AUGMENTATION = "augmentation_level"
"""Core ComfyUI's conditioning keys (`SVD_img2vid_Conditioning`): the frame rate (the UNet sees `fps - 1`), the
motion bucket and the noise augmentation strength, together the UNet's added time ids."""
MIN_CFG = "t2v_min_cfg"
"""The pack's conditioning key for the guidance scale of the first frame (the last frame gets the sampler's cfg)."""
DEFAULT_MIN_CFG = 1.0
"""Without `MIN_CFG` (e.g. core's conditioning) the scale ramps up from 1, as diffusers and core's
`VideoLinearCFGGuidance` do by default."""


def resize_antialiased(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`[N, C, H, W]` -> `[N, C, *size]` as SVD's reference shrinks the image for CLIP: a separable Gaussian blur
    (sigma `(factor - 1) / 2` per axis, at least 0.001; an odd kernel of about four sigmas, at least 3;
    reflected edges), then bicubic resampling with aligned corners."""
    for axis, target in ((3, size[1]), (2, size[0])):  # width first, as the reference blurs
        sigma = max((pixels.shape[axis] / target - 1.0) / 2.0, 0.001)
        taps = int(max(4.0 * sigma, 3))
        taps += 1 - taps % 2
        offsets = torch.arange(taps, dtype=torch.float32, device=pixels.device) - taps // 2
        kernel = torch.exp(-offsets**2 / (2 * torch.tensor(sigma, dtype=torch.float32) ** 2))
        kernel = (kernel / kernel.sum()).to(pixels.dtype)
        channels, half = pixels.shape[1], taps // 2
        if axis == 3:
            padded = torch.nn.functional.pad(pixels, (half, half, 0, 0), mode="reflect")
            weight = kernel.view(1, 1, 1, taps)
        else:
            padded = torch.nn.functional.pad(pixels, (0, 0, half, half), mode="reflect")
            weight = kernel.view(1, 1, taps, 1)
        pixels = torch.nn.functional.conv2d(padded, weight.expand(channels, 1, -1, -1), groups=channels)
    return torch.nn.functional.interpolate(pixels, size=size, mode="bicubic", align_corners=True)


class _FramesFirstUNet:
    """SVD's UNet behind the sampler's call: it takes latents `[N, F, C, h, w]` and the time ids as `added_time_ids`."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet

    def __call__(self, sample, timestep, encoder_hidden_states, added_cond_kwargs, return_dict=False):
        out = self.unet(sample.transpose(1, 2), timestep, encoder_hidden_states=encoder_hidden_states,
                        added_time_ids=added_cond_kwargs["time_ids"], return_dict=False)[0]
        return (out.transpose(1, 2),)


class StableVideoDiffusion(ModelFamily):
    """As diffusers' `StableVideoDiffusionPipeline`: the image's CLIP embedding (zeros for the negative) is the UNet's
    context, its VAE latents (the posterior's mode, unscaled; zeros for the negative) are joined to every frame's
    scaled input, `(fps - 1, motion_bucket_id, noise_aug_strength)` are the added time ids, and the guidance scale
    ramps linearly over the frames from `min_cfg` to `cfg`."""

    name = "svd"
    description = "Stable Video Diffusion (image-to-video)"
    unet_class = "UNetSpatioTemporalConditionModel"
    vae_class = "AutoencoderKLTemporalDecoder"
    text_encoders = (TextEncoderSlot("feature_extractor", "image_encoder", "CLIPVisionModelWithProjection",
                                     "CLIPImageProcessor"),)
    video_unet = True
    concat_channels = 4
    temporal_vae = True
    encodes_text = False
    video_noise = "per_frame"  # the reference draws `[B, F, C, h, w]`
    context_windows = False

    def encode_image(self, clip, image: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding `[1, 1, D]` of one IMAGE `[1, H, W, 3]`, preprocessed as the reference
        preprocesses a PIL image: shrunk with antialiasing in -1..1 to the encoder's size, then normalised."""
        clip.load_for_use()
        encoder, processor = clip.text_encoder, clip.tokenizer
        size = int(encoder.config.image_size)
        pixels = image.permute(0, 3, 1, 2).to(clip.device, torch.float32) * 2 - 1
        pixels = (resize_antialiased(pixels, (size, size)) + 1) / 2
        mean = torch.tensor(processor.image_mean, device=clip.device).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, device=clip.device).view(1, -1, 1, 1)
        with torch.no_grad():
            embeds = encoder(((pixels - mean) / std).to(encoder.dtype)).image_embeds
        return embeds.float().unsqueeze(1)

    def conditioning_problem(self, meta: dict) -> str | None:
        if meta.get(IMAGE_LATENTS) is None or any(meta.get(key) is None for key in (FPS, MOTION_BUCKET, AUGMENTATION)):
            return ("a Stable Video Diffusion model is driven by an image, not by text: make positive and negative "
                    "with T2VSVDConditioning")
        return None

    def denoiser(self, unet: torch.nn.Module):
        return _FramesFirstUNet(unet)

    def draws_before_noise(self, latent_shape: tuple, spatial_scale: int) -> tuple[tuple, ...]:
        return ((1, 3, latent_shape[-2] * spatial_scale, latent_shape[-1] * spatial_scale),)

    def condition(self, embeds: torch.Tensor, meta: dict, latent_shape: tuple, spatial_scale: int) -> Condition:
        image = meta[IMAGE_LATENTS].to(embeds.device, torch.float32)  # [1, C, h, w], core's layout
        if tuple(image.shape[-2:]) != tuple(latent_shape[-2:]):
            raise ValueError(f"the image latents are {tuple(image.shape[-2:])} (h, w) but the latent is "
                             f"{tuple(latent_shape[-2:])}; sample the LATENT that T2VSVDConditioning made")
        frames = latent_shape[2]
        concat = image[:1].unsqueeze(2).expand(-1, -1, frames, -1, -1)
        time_ids = torch.tensor([[float(meta[FPS]) - 1, float(meta[MOTION_BUCKET]), float(meta[AUGMENTATION])]],
                                dtype=torch.float32, device=embeds.device)
        return Condition(embeds, {"time_ids": time_ids}, concat=concat)

    def guidance(self, positive, negative, cfg: float, latent_shape: tuple, spatial_scale: int) -> Guidance:
        def entries(conditioning):
            return [self.condition(embeds, meta, latent_shape, spatial_scale) for embeds, meta in conditioning]

        min_cfg = float(positive[0][1].get(MIN_CFG, DEFAULT_MIN_CFG))
        guided = cfg > 1.0
        return Guidance(entries(positive), entries(negative) if guided else [], cfg, min_cfg=min_cfg)


SVD = StableVideoDiffusion()
