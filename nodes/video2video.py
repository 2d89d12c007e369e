"""T2VVideoToVideo: re-noise a video to a strength and denoise it with a prompt (e.g. zeroscope 576w -> XL)."""

from __future__ import annotations

import functools
import logging

from ..models.vae_ops import encode_frames
from ..samplers.text2video import SamplingPlan, seeded_generator
from ..samplers.video2video import nearest_multiple, resize_frames, video_to_video
from .common import (MAX_RESOLUTION, StepProgress, check_frame_limit, check_free_init, check_widget_values,
                     explain_out_of_memory, guidance_conditioning, sampling_memory_options, vae_memory_options,
                     validation_verdict)
from .sampling import check_sampler_choice, sampler_inputs
from .vae import FRAMES_PER_BATCH, IMAGES_OR_VIDEO, input_frames

log = logging.getLogger(__name__)
NODE = "T2VVideoToVideo"


def target_size(images, width: int, height: int, scale: int) -> tuple[int, int]:
    """The frame size to encode at: the requested one (0 = keep), moved to multiples of the VAE scale."""
    source_height, source_width = images.shape[1:3]
    if width and not height:
        height = round(source_height * width / source_width)
    if height and not width:
        width = round(source_width * height / source_height)
    width, height = width or source_width, height or source_height
    fitted = nearest_multiple(width, scale), nearest_multiple(height, scale)
    if fitted != (width, height):
        log.warning("%s: %dx%d is not a multiple of %d; resizing the frames to %dx%d", NODE, width, height, scale,
                    *fitted)
    return fitted


class T2VVideoToVideo:
    DESCRIPTION = ("Video-to-video: encodes the frames, re-noises them to `strength` and denoises them with the "
                   "prompt, as diffusers' VideoToVideoSDPipeline. Resize the output of a 576x320 zeroscope_v2_576w "
                   "run to 1024x576 and refine it with zeroscope_v2_XL at strength 0.6 or so.")
    CATEGORY = "Text2Video/sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("T2V_MODEL", {"tooltip": "The denoiser (a 3D UNet text-to-video model)."}),
                "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from (unused when cfg <= 1)."}),
                "vae": ("T2V_VAE", {"tooltip": "The VAE that encodes the frames (usually the model's own)."}),
                "images": (IMAGES_OR_VIDEO, {"tooltip": "The input video: IMAGE frames (from T2VLoadVideo, "
                                                        "T2VVAEDecode or any image node) or a core VIDEO (LoadVideo)."}),
                **sampler_inputs(),
                "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "How much to change: the share of the steps that run. 0 returns "
                                                  "the encoded input, 1 ignores it."}),
            },
            "optional": {
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Resize the frames to this width first (0 = keep)."}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "Resize the frames to this height first (0 = keep)."}),
                "frames_per_batch": FRAMES_PER_BATCH,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, strength=None):
        return validation_verdict(lambda: check_widget_values(cls, cfg=cfg, strength=strength))

    def refine(self, model, positive, negative, vae, images, seed, steps, cfg, sampler_name, scheduler, strength,
               width=0, height=0, frames_per_batch=8):
        check_widget_values(T2VVideoToVideo, cfg=cfg, strength=strength)
        plan = SamplingPlan(sampler_name, scheduler, steps, denoise=strength, noise_input_at_start=True)
        check_sampler_choice(NODE, sampler_name, scheduler, partial=plan.first_step > 0,
                             scheduler_config=model.scheduler_config)
        images, _fps = input_frames(NODE, "images", images)
        check_frame_limit(NODE, "images", images.shape[0], model)
        check_free_init(NODE, model, plan)
        positive, negative = guidance_conditioning(NODE, positive, negative, cfg, model)
        size = target_size(images, width, height, vae.spatial_scale)
        frames = resize_frames(images.to(vae.device, dtype=images.dtype), *size)
        memory = explain_out_of_memory(NODE, f"encoding and sampling {frames.shape[0]} frames",
                                       sampling_memory_options(model, frames.shape[0])
                                       + vae_memory_options(vae, frames_per_batch))
        with memory, StepProgress(NODE) as progress:
            count, frame_height, frame_width, _ = frames.shape
            scale = vae.spatial_scale
            latent_shape = (count, vae.vae.config.latent_channels, frame_height // scale, frame_width // scale)
            encode = functools.partial(encode_frames, vae, frames, frames_per_batch)
            latents = video_to_video(model, positive, negative, cfg, encode, latent_shape, plan,
                                     seeded_generator(seed), progress)
        return ({"samples": latents},)


NODE_CLASS_MAPPINGS = {"T2VVideoToVideo": T2VVideoToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VVideoToVideo": "Text2Video Video to Video"}
