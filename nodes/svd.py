"""T2VSVDConditioning: one image -> Stable Video Diffusion's conditioning and an empty video latent."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import NodeInputError
from ..models.families.instruct_pix2pix import IMAGE_LATENTS
from ..models.families.svd import AUGMENTATION, FPS, MIN_CFG, MOTION_BUCKET
from ..models.vae_ops import encode_frames
from ..samplers.text2video import randn, seeded_generator
from .common import MAX_FRAMES, MAX_RESOLUTION, MAX_SEED, check_widget_values, validation_verdict
from .vae import check_images

NODE = "T2VSVDConditioning"


def resized_like_the_reference(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE `[1, H, W, 3]` at `width` x `height`: unchanged if it has that size, else resized as diffusers resizes a
    PIL image (8 bits per channel, Lanczos, no crop), so that a core LoadImage image gives the reference's pixels."""
    if tuple(image.shape[1:3]) == (height, width):
        return image
    from PIL import Image

    pixels = (image[0].float().cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
    resized = Image.fromarray(pixels).resize((width, height), resample=Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).unsqueeze(0).to(image.device)


class T2VSVDConditioning:
    DESCRIPTION = ("Stable Video Diffusion: turns one image (e.g. from core LoadImage) into the conditioning that "
                   "animates it (its CLIP image embedding and VAE latents, with fps, motion and noise augmentation) "
                   "and an empty video latent of width x height x frames. Sample it with T2VSampler (sampler euler, "
                   "scheduler karras: the checkpoint's schedule) and decode with T2VVAEDecode. With the sampler's seed "
                   "here too, the video equals diffusers' StableVideoDiffusionPipeline for that seed.")
    CATEGORY = "Text2Video/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("T2V_CLIP", {"tooltip": "The SVD model's CLIP image encoder (T2VModelLoader's clip)."}),
                "vae": ("T2V_VAE", {"tooltip": "The SVD model's VAE: encodes the image."}),
                "image": ("IMAGE", {"tooltip": "The first frame to animate: one RGB image. Another size than "
                                               "width x height is resized (Lanczos, no crop, as diffusers)."}),
                "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Video width in pixels (a multiple of 8)."}),
                "height": ("INT", {"default": 576, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "Video height in pixels (a multiple of 8)."}),
                "frames": ("INT", {"default": 14, "min": 1, "max": MAX_FRAMES,
                                   "tooltip": "Number of frames (SVD was trained on 14, SVD-XT on 25)."}),
                "fps": ("INT", {"default": 7, "min": 1, "max": 1000,
                                "tooltip": "Frame rate the motion is made for (the UNet is conditioned on fps - 1)."}),
                "motion_bucket_id": ("INT", {"default": 127, "min": 0, "max": 1023,
                                             "tooltip": "How much motion: higher moves more."}),
                "noise_aug_strength": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 10.0, "step": 0.01,
                                                 "tooltip": "Noise added to the image before encoding: more lets "
                                                            "the video stray further from it."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the augmentation noise. Give it T2VSampler's seed to get "
                                            "diffusers' video for that seed (the sampler draws after this noise, "
                                            "as diffusers does)."}),
                "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                      "tooltip": "Guidance scale of the first frame: it ramps linearly to the "
                                                 "sampler's cfg on the last frame (diffusers' min_guidance_scale)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, noise_aug_strength=None, min_cfg=None):
        return validation_verdict(lambda: check_widget_values(cls, noise_aug_strength=noise_aug_strength,
                                                              min_cfg=min_cfg))

    def encode(self, clip, vae, image, width, height, frames, fps, motion_bucket_id, noise_aug_strength, seed,
               min_cfg):
        check_widget_values(T2VSVDConditioning, noise_aug_strength=noise_aug_strength, min_cfg=min_cfg)
        if clip.family.encodes_text:
            raise NodeInputError(NODE, "clip", f"'{clip.name}' is a {clip.family.description} text encoder; connect "
                                 "the clip output of a Stable Video Diffusion model (its CLIP image encoder)")
        check_images(NODE, "image", image)
        if image.shape[0] != 1:
            raise NodeInputError(NODE, "image", f"got a batch of {image.shape[0]} images; SVD animates one image: "
                                 "pick one first (e.g. core ImageFromBatch)")
        scale = vae.spatial_scale
        for name, value in (("width", width), ("height", height)):
            if value % scale:
                raise NodeInputError(NODE, name, f"{value} is not a multiple of {scale}; use "
                                                 f"{max(scale, round(value / scale) * scale)}")
        embeds = clip.family.encode_image(clip, image)
        pixels = resized_like_the_reference(image, width, height)
        noise = randn((1, 3, height, width), seeded_generator(seed), pixels.device).permute(0, 2, 3, 1)
        latents = encode_frames(vae, pixels + noise_aug_strength / 2 * noise, 1)  # noise added in -1..1
        extra = {FPS: int(fps), MOTION_BUCKET: int(motion_bucket_id), AUGMENTATION: float(noise_aug_strength),
                 MIN_CFG: float(min_cfg)}
        positive = [[embeds, {**extra, IMAGE_LATENTS: latents}]]
        negative = [[torch.zeros_like(embeds), {**extra, IMAGE_LATENTS: torch.zeros_like(latents)}]]
        empty = torch.zeros(1, latents.shape[1], frames, *latents.shape[2:], device=latents.device)
        return positive, negative, {"samples": empty}


NODE_CLASS_MAPPINGS = {NODE: T2VSVDConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {NODE: "Stable Video Diffusion Conditioning (Text2Video)"}
