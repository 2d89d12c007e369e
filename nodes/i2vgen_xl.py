"""T2VI2VGenXLConditioning: an image and a prompt's conditioning -> I2VGen-XL's conditioning and an empty video latent."""

from __future__ import annotations

import torch

from ..errors import NodeInputError
from ..models.families.i2vgen_xl import I2VGEN_XL, IMAGE_EMBEDS, IMAGE_LATENTS, TARGET_FPS, centre_crop_wide, \
    from_pil, to_pil
from ..models.vae_ops import encode_frames
from ..samplers.text2video import randn, seeded_generator
from .common import MAX_FRAMES, MAX_RESOLUTION, MAX_SEED
from .vae import check_images

NODE = "T2VI2VGenXLConditioning"


class T2VI2VGenXLConditioning:
    DESCRIPTION = ("I2VGen-XL: adds an image (e.g. from core LoadImage) to the prompt's conditioning, as diffusers' "
                   "I2VGenXLPipeline prepares it (its CLIP image embedding and its VAE latents with frame-position "
                   "masks, the target fps), and returns an empty video latent of width x height x frames. Sample it "
                   "with T2VSampler and decode with T2VVAEDecode. With the sampler's seed here too, the video equals "
                   "the pipeline's for that seed.")
    CATEGORY = "Text2Video/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The prompt (T2VTextEncode on the I2VGen-XL clip)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (often empty)."}),
                "clip": ("T2V_CLIP", {"tooltip": "The I2VGen-XL model's clip: its CLIP image encoder embeds the "
                                                 "image."}),
                "vae": ("T2V_VAE", {"tooltip": "The I2VGen-XL model's VAE: encodes the image."}),
                "image": ("IMAGE", {"tooltip": "The image to animate (one RGB image); centre-cropped to the "
                                               "video's aspect ratio as diffusers does."}),
                "width": ("INT", {"default": 1280, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Video width in pixels, a multiple of 8 (I2VGen-XL: 1280)."}),
                "height": ("INT", {"default": 704, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "Video height in pixels, a multiple of 8 (I2VGen-XL: 704)."}),
                "frames": ("INT", {"default": 16, "min": 1, "max": MAX_FRAMES,
                                   "tooltip": "Number of frames (I2VGen-XL was trained on 16)."}),
                "target_fps": ("INT", {"default": 16, "min": 1, "max": 1000,
                                       "tooltip": "The frame rate the model makes the motion for (a condition of "
                                                  "the UNet); save the video at this fps."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the image's VAE posterior sample. Give it T2VSampler's seed for "
                                            "diffusers' video of that seed (diffusers draws this sample from torch's "
                                            "global generator)."}),
            },
        }

    def encode(self, positive, negative, clip, vae, image, width, height, frames, target_fps, seed):
        if clip.family is not I2VGEN_XL:
            raise NodeInputError(NODE, "clip", f"'{clip.name}' is a {clip.family.description} model's clip, which "
                                 "has no image encoder for I2VGen-XL; connect the clip output of an I2VGen-XL model")
        check_images(NODE, "image", image)
        if image.shape[0] != 1:
            raise NodeInputError(NODE, "image", f"got a batch of {image.shape[0]} images; I2VGen-XL animates one "
                                 "image: pick one first (e.g. core ImageFromBatch)")
        scale = vae.spatial_scale
        for name, value in (("width", width), ("height", height)):
            if value % scale:
                raise NodeInputError(NODE, name, f"{value} is not a multiple of {scale}; use "
                                                 f"{max(scale, round(value / scale) * scale)}")
        for name, conditioning in (("positive", positive), ("negative", negative)):
            if not conditioning:
                raise NodeInputError(NODE, name, "the conditioning is empty; connect a T2VTextEncode output")
        embeds = clip.family.encode_image(clip, image, width)
        pixels = from_pil(centre_crop_wide(to_pil(image), width, height))
        noise = randn((1, vae.vae.config.latent_channels, height // scale, width // scale), seeded_generator(seed),
                      vae.device)
        latents = encode_frames(vae, pixels, 1, noise) * vae.vae.config.scaling_factor
        extra = {IMAGE_LATENTS: latents, TARGET_FPS: int(target_fps)}
        positive = [[text, {**meta, **extra, IMAGE_EMBEDS: embeds}] for text, meta in positive]
        negative = [[text, {**meta, **extra, IMAGE_EMBEDS: torch.zeros_like(embeds)}] for text, meta in negative]
        empty = torch.zeros(1, latents.shape[1], frames, *latents.shape[2:], device=latents.device)
        return positive, negative, {"samples": empty}


NODE_CLASS_MAPPINGS = {NODE: T2VI2VGenXLConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {NODE: "I2VGen-XL Conditioning (Text2Video)"}
