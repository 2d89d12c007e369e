"""The diffusers reference pipelines, built on the same modules as the pack's handles.

Their schedulers are built here from diffusers' classes and documented config keys (diffusers'
"scheduler features" table: DPM++ 2M = DPMSolverMultistepScheduler with algorithm_type "dpmsolver++",
its SDE variant "sde-dpmsolver++", Karras = `use_karras_sigmas=True`), never through the pack's
`build_scheduler`: a mistake in the pack's mapping must not be copied into the reference.
"""

from __future__ import annotations

import diffusers
import torch

REFERENCE_SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def reference_scheduler(sampler_name: str, scheduler: str, config: dict):
    """A fresh diffusers scheduler for `sampler_name` x `scheduler`, built without the pack's code."""
    class_name, keys = REFERENCE_SCHEDULERS[sampler_name]
    if scheduler == "karras":
        keys = {**keys, "use_karras_sigmas": True}
    return getattr(diffusers, class_name).from_config(config, **keys)


def _pipeline(pipeline_class, model, clip, vae, sampler_name, scheduler, **extra):
    pipe = pipeline_class(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer, unet=model.unet,
                          scheduler=reference_scheduler(sampler_name, scheduler, model.scheduler_config), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text2video_pipeline(model, clip, vae, sampler_name="ddim", scheduler="normal"):
    from diffusers import TextToVideoSDPipeline

    return _pipeline(TextToVideoSDPipeline, model, clip, vae, sampler_name, scheduler)


def video2video_pipeline(model, clip, vae, sampler_name="ddim", scheduler="normal"):
    from diffusers import VideoToVideoSDPipeline

    return _pipeline(VideoToVideoSDPipeline, model, clip, vae, sampler_name, scheduler)


def zero_pipeline(model, clip, vae, sampler_name="ddim", scheduler="normal"):
    from diffusers import TextToVideoZeroPipeline

    return _pipeline(TextToVideoZeroPipeline, model, clip, vae, sampler_name, scheduler, safety_checker=None,
                     feature_extractor=None, requires_safety_checker=False)


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """Reference `output_type="pt"` frames `[B, F, 3, H, W]` -> IMAGE layout `[B*F, H, W, 3]`."""
    return video.flatten(0, 1).permute(0, 2, 3, 1)


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def sdxl_modules(model, clip, vae, sampler_name="ddim", scheduler="normal") -> dict:
    """The constructor arguments of diffusers' SDXL pipelines for the pack's SDXL handles (no watermark)."""
    (tokenizer, text_encoder), (tokenizer_2, text_encoder_2) = clip.encoders
    return dict(vae=vae.vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                tokenizer_2=tokenizer_2, unet=model.unet, add_watermarker=False,
                scheduler=reference_scheduler(sampler_name, scheduler, model.scheduler_config))
