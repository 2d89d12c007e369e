"""T2VEmptyLatentVideo: the shape of the video to generate."""

from __future__ import annotations

import torch

from .. import bridge
from ..errors import NodeInputError
from .common import MAX_FRAMES, MAX_RESOLUTION

LATENT_CHANNELS = 4
SPATIAL_SCALE = 8


def check_frame_size(node: str, width: int, height: int) -> None:
    """Refuse a frame size the VAE cannot take, suggesting the nearest one it can."""
    for name, value in (("width", width), ("height", height)):
        if value % SPATIAL_SCALE:
            nearest = max(SPATIAL_SCALE, round(value / SPATIAL_SCALE) * SPATIAL_SCALE)
            raise NodeInputError(node, name, f"{value} is not a multiple of {SPATIAL_SCALE}; use {nearest}")


class T2VEmptyLatentVideo:
    DESCRIPTION = "An empty video latent [batch, 4, frames, height/8, width/8] to start text-to-video sampling from."
    CATEGORY = "Text2Video/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 256, "min": 8, "max": MAX_RESOLUTION, "step": 8,
                              "tooltip": "Frame width in pixels, a multiple of 8 (zeroscope_v2_576w: 576)."}),
            "height": ("INT", {"default": 256, "min": 8, "max": MAX_RESOLUTION, "step": 8,
                               "tooltip": "Frame height in pixels, a multiple of 8 (zeroscope_v2_576w: 320)."}),
            "frames": ("INT", {"default": 16, "min": 1, "max": MAX_FRAMES,
                               "tooltip": "Number of frames (ModelScope and zeroscope were trained on 16-24)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Number of videos generated together."}),
        }}

    def create(self, width, height, frames, batch_size):
        check_frame_size("T2VEmptyLatentVideo", width, height)
        shape = (batch_size, LATENT_CHANNELS, frames, height // SPATIAL_SCALE, width // SPATIAL_SCALE)
        return ({"samples": torch.zeros(shape, device=bridge.compute_device())},)


NODE_CLASS_MAPPINGS = {"T2VEmptyLatentVideo": T2VEmptyLatentVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VEmptyLatentVideo": "Empty Latent Video (Text2Video)"}
