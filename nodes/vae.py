"""T2VVAEEncode / T2VVAEDecode: frames <-> video latents, a few frames at a time."""

from __future__ import annotations

import torch

from .. import bridge
from ..errors import NodeInputError
from ..models.vae_ops import decode_frames, encode_frames
from .common import StepProgress, explain_out_of_memory, vae_memory_options, video_latents

FRAMES_PER_BATCH = ("INT", {"default": 8, "min": 0, "max": 4096,
                            "tooltip": "Frames through the VAE at once: fewer use less memory (0 = all at once). "
                                       "The result does not depend on it, except with Stable Video Diffusion's "
                                       "temporal decoder, which decodes each batch of frames together (diffusers' "
                                       "decode_chunk_size)."})


def check_images(node: str, input_name: str, images) -> None:
    """Refuse anything but a non-empty `[N, H, W, 3]` IMAGE batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise NodeInputError(node, input_name, f"expected IMAGE frames [N, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise NodeInputError(node, input_name, "the video has no frames")


IMAGES_OR_VIDEO = "IMAGE,VIDEO"
"""Frame inputs take the pack's (and core's) IMAGE frames or a core VIDEO (LoadVideo's), without converting."""


def input_frames(node: str, input_name: str, images) -> tuple[torch.Tensor, float | None]:
    """The frames of an IMAGE or core VIDEO input, and the VIDEO's frame rate (None for IMAGE frames)."""
    video = bridge.video_components(images)
    frames, fps = video if video is not None else (images, None)
    check_images(node, input_name, frames)
    return frames, fps


def check_frame_size(node: str, input_name: str, images: torch.Tensor, scale: int) -> None:
    height, width = images.shape[1:3]
    if height % scale or width % scale:
        raise NodeInputError(node, input_name, f"frames are {width}x{height}; the VAE needs multiples of "
                                               f"{scale}: resize them first (e.g. T2VLoadVideo width/height)")


class T2VVAEDecode:
    DESCRIPTION = "Decodes a video latent into frames (IMAGE, frames along the batch), a few frames at a time."
    CATEGORY = "Text2Video/latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("T2V_VAE", {"tooltip": "The VAE from T2VModelLoader."}),
                             "latent": ("LATENT", {"tooltip": "The video latent to decode."})},
                "optional": {"frames_per_batch": FRAMES_PER_BATCH}}

    def decode(self, vae, latent, frames_per_batch=8):
        samples = video_latents("T2VVAEDecode", "latent", latent, vae.device)
        batch, channels, frames, height, width = samples.shape
        flat = samples.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        memory = explain_out_of_memory("T2VVAEDecode", f"decoding {batch * frames} frames",
                                       vae_memory_options(vae, frames_per_batch))
        with memory, StepProgress("T2VVAEDecode") as progress:
            images = decode_frames(vae, flat, frames_per_batch, on_chunk=progress,
                                   output_device=bridge.intermediate_device())
        return (images,)


class T2VVAEEncode:
    DESCRIPTION = "Encodes frames into a video latent (the posterior mean), a few frames at a time."
    CATEGORY = "Text2Video/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("T2V_VAE", {"tooltip": "The VAE from T2VModelLoader."}),
                             "images": (IMAGES_OR_VIDEO, {"tooltip": "Frames to encode, as one video (IMAGE "
                                                                     "frames or a core VIDEO)."})},
                "optional": {"frames_per_batch": FRAMES_PER_BATCH}}

    def encode(self, vae, images, frames_per_batch=8):
        images, _fps = input_frames("T2VVAEEncode", "images", images)
        check_frame_size("T2VVAEEncode", "images", images, vae.spatial_scale)
        memory = explain_out_of_memory("T2VVAEEncode", f"encoding {images.shape[0]} frames",
                                       vae_memory_options(vae, frames_per_batch))
        with memory, StepProgress("T2VVAEEncode") as progress:
            latents = encode_frames(vae, images, frames_per_batch, on_chunk=progress)
        return ({"samples": latents.permute(1, 0, 2, 3).unsqueeze(0)},)


NODE_CLASS_MAPPINGS = {"T2VVAEDecode": T2VVAEDecode, "T2VVAEEncode": T2VVAEEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VVAEDecode": "Text2Video VAE Decode", "T2VVAEEncode": "Text2Video VAE Encode"}
