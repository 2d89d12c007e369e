"""T2VInstructPix2PixConditioning: the frames to edit, encoded into both conditionings (Video InstructPix2Pix)."""

from __future__ import annotations

import torch

from ..errors import NodeInputError
from ..models.families.instruct_pix2pix import IMAGE_CFG, IMAGE_LATENTS
from ..models.vae_ops import encode_frames
from .common import StepProgress, check_widget_values, validation_verdict
from .vae import FRAMES_PER_BATCH, check_frame_size, check_images

NODE = "T2VInstructPix2PixConditioning"


class T2VInstructPix2PixConditioning:
    DESCRIPTION = ("Video InstructPix2Pix: encodes the frames to edit (the VAE posterior's mode, as diffusers) into "
                   "both conditionings with image_cfg, and returns an empty latent of their size and count. Sample "
                   "it with an InstructPix2Pix model through T2VCrossFrameAttention and T2VSampler (frame_noise "
                   "per_frame): the text says what to change, cfg how strongly to follow it, image_cfg how closely "
                   "to keep the input.")
    CATEGORY = "Text2Video/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The edit instruction, e.g. 'make it winter'."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from (usually empty)."}),
                "vae": ("T2V_VAE", {"tooltip": "The InstructPix2Pix model's VAE."}),
                "images": ("IMAGE", {"tooltip": "The frames to edit (e.g. from T2VLoadVideo), sizes multiples of 8."}),
                "image_cfg": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 100.0, "step": 0.01,
                                        "tooltip": "Image guidance (diffusers' image_guidance_scale): higher keeps "
                                                   "closer to the input frames. Below 1 (or cfg <= 1) guidance is "
                                                   "off, as in the reference."}),
            },
            "optional": {"frames_per_batch": FRAMES_PER_BATCH},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, image_cfg=None):
        return validation_verdict(lambda: check_widget_values(cls, image_cfg=image_cfg))

    def encode(self, positive, negative, vae, images, image_cfg, frames_per_batch=8):
        check_widget_values(T2VInstructPix2PixConditioning, image_cfg=image_cfg)
        check_images(NODE, "images", images)
        check_frame_size(NODE, "images", images, vae.spatial_scale)
        if not positive:
            raise NodeInputError(NODE, "positive", "the conditioning is empty; connect a T2VTextEncode output")
        with StepProgress(NODE) as progress:
            latents = encode_frames(vae, images, frames_per_batch, on_chunk=progress)  # posterior mode, unscaled
        extra = {IMAGE_LATENTS: latents, IMAGE_CFG: float(image_cfg)}
        positive, negative = ([[embeds, {**meta, **extra}] for embeds, meta in conditioning]
                              for conditioning in (positive, negative))
        empty = torch.zeros(1, latents.shape[1], latents.shape[0], *latents.shape[2:], device=latents.device)
        return positive, negative, {"samples": empty}


NODE_CLASS_MAPPINGS = {NODE: T2VInstructPix2PixConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {NODE: "InstructPix2Pix Conditioning (Text2Video)"}
