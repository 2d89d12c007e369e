"""Video-to-video: encode frames, re-noise them to a strength and denoise (VideoToVideoSDPipeline)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .text2video import SamplingPlan, randn, sample_model


def resize_frames(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """`[N, H, W, 3]` frames resized (bicubic, antialiased) to `width` x `height`, clamped to 0..1."""
    if images.shape[1:3] == (height, width):
        return images
    resized = F.interpolate(images.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", antialias=True,
                            align_corners=False)
    return resized.clamp(0, 1).permute(0, 2, 3, 1)


def nearest_multiple(value: int, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def video_to_video(model, positive, negative, cfg: float, encode: Callable[[torch.Tensor], torch.Tensor],
                   latent_shape: tuple[int, int, int, int], plan: SamplingPlan, generator: torch.Generator,
                   callback=None) -> torch.Tensor:
    """Raw latents `[1, C, N, h, w]` of a video after `plan`; `encode(posterior_noise)` gives the video's
    latents `[N, C, h, w]` (`latent_shape`) as the VAE's posterior sample with that noise.

    As the reference: one posterior sample for the whole video, its noise drawn first as
    `[N, C, h, w]` (so encoding in chunks changes nothing), then the img2img noise, then the
    scheduler's own draws. With no step to run, the encoded posterior sample comes back.
    """
    latents = encode(randn(latent_shape, generator, model.device))
    video = latents.permute(1, 0, 2, 3).unsqueeze(0).to(model.device)
    out, _state = sample_model(model, positive, negative, cfg, video, plan, generator, callback=callback)
    return out
