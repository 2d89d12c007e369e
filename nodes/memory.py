"""Memory options: feed-forward chunking for the model, tiled VAE decoding and encoding for large frames."""

from __future__ import annotations

from ..attention.feed_forward import FeedForwardChunking
from ..errors import NodeInputError
from ..models.handles import VaeTiling
from .common import MAX_RESOLUTION

FEED_FORWARD = "T2VFeedForwardChunking"
VAE_TILING = "T2VVAETiling"


class T2VFeedForwardChunking:
    DESCRIPTION = ("Less memory while sampling: the feed-forward layers of the model's transformer blocks run on "
                   "chunk_size tokens at a time (diffusers' enable_forward_chunking). Same result (to about 1e-6), "
                   "a little slower. Returns a patched copy of the model.")
    CATEGORY = "Text2Video/memory"
    RETURN_TYPES = ("T2V_MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("T2V_MODEL", {"tooltip": "The model to patch."}),
            "chunk_size": ("INT", {"default": 256, "min": 1, "max": 1 << 20,
                                   "tooltip": "Tokens per feed-forward chunk (a 576x320 frame has 2880 tokens in "
                                              "the first blocks): smaller uses less memory and is slower."}),
        }}

    def patch(self, model, chunk_size):
        if chunk_size < 1:
            raise NodeInputError(FEED_FORWARD, "chunk_size", f"{chunk_size} is below 1")
        return (model.with_patch(FeedForwardChunking(int(chunk_size))),)


class T2VVAETiling:
    DESCRIPTION = ("Less memory for large frames: the VAE decodes and encodes each frame in overlapping tiles whose "
                   "seams are blended (diffusers' VAE tiling). Close to the untiled result but not equal (see the "
                   "README); combine with frames_per_batch for long videos. Returns a patched copy of the VAE.")
    CATEGORY = "Text2Video/memory"
    RETURN_TYPES = ("T2V_VAE",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("T2V_VAE", {"tooltip": "The VAE to patch."}),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Tile width and height in pixels; frames no larger than this are not "
                                             "tiled."}),
            "tile_overlap": ("INT", {"default": 128, "min": 8, "max": MAX_RESOLUTION // 2, "step": 8,
                                     "tooltip": "Pixels that neighbouring tiles share and blend over (at most half "
                                                "the tile size)."}),
        }}

    def patch(self, vae, tile_size, tile_overlap):
        if vae.temporal:
            raise NodeInputError(VAE_TILING, "vae", f"'{vae.name}' has a temporal decoder, which does not work in "
                                 "tiles; lower T2VVAEDecode's frames_per_batch to save memory instead")
        if tile_size % vae.spatial_scale:
            raise NodeInputError(VAE_TILING, "tile_size", f"{tile_size} is not a multiple of the VAE's scale "
                                                          f"{vae.spatial_scale}")
        if not vae.spatial_scale <= tile_overlap <= tile_size // 2:
            raise NodeInputError(VAE_TILING, "tile_overlap", f"{tile_overlap} must be between {vae.spatial_scale} "
                                                             f"and half the tile size ({tile_size // 2})")
        return (vae.with_tiling(VaeTiling(int(tile_size), int(tile_overlap))),)


NODE_CLASS_MAPPINGS = {FEED_FORWARD: T2VFeedForwardChunking, VAE_TILING: T2VVAETiling}
NODE_DISPLAY_NAME_MAPPINGS = {FEED_FORWARD: "Text2Video Feed-Forward Chunking (less memory)",
                              VAE_TILING: "Text2Video VAE Tiling (large frames)"}
