"""The diffusers reference pipelines, built on the same modules as the pack's handles."""

from __future__ import annotations

import torch

from comfyui_text2video.samplers.schedulers import build_scheduler


def _pipeline(pipeline_class, model, clip, vae, sampler_name, scheduler):
    pipe = pipeline_class(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer, unet=model.unet,
                          scheduler=build_scheduler(sampler_name, scheduler, model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text2video_pipeline(model, clip, vae, sampler_name="ddim", scheduler="normal"):
    from diffusers import TextToVideoSDPipeline

    return _pipeline(TextToVideoSDPipeline, model, clip, vae, sampler_name, scheduler)


def video2video_pipeline(model, clip, vae, sampler_name="ddim", scheduler="normal"):
    from diffusers import VideoToVideoSDPipeline

    return _pipeline(VideoToVideoSDPipeline, model, clip, vae, sampler_name, scheduler)


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """Reference `output_type="pt"` frames `[B, F, 3, H, W]` -> IMAGE layout `[B*F, H, W, 3]`."""
    return video.flatten(0, 1).permute(0, 2, 3, 1)


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)
