"""Model families, one module each: how a diffusers folder is recognised, loaded, conditioned and called.

Adding a family is adding its module and listing it in `FAMILIES` (ComfyUI's `supported_models.py` is the model).
"""

from __future__ import annotations

from ...errors import ModelLoadError
from .animatediff import ANIMATEDIFF
from .base import ModelFamily, TextEncoderSlot
from .i2vgen_xl import I2VGEN_XL
from .instruct_pix2pix import INSTRUCT_PIX2PIX
from .sd import STABLE_DIFFUSION
from .sdxl import SDXL
from .svd import SVD
from .text2video_3d import TEXT2VIDEO_3D

FAMILIES: tuple[ModelFamily, ...] = (TEXT2VIDEO_3D, SDXL, INSTRUCT_PIX2PIX, STABLE_DIFFUSION, SVD, ANIMATEDIFF,
                                     I2VGEN_XL)
"""Every supported family, the more specific first: a folder belongs to the first that matches."""

__all__ = ["FAMILIES", "ModelFamily", "TextEncoderSlot", "family_of"]


def family_of(model_name: str, index: dict, unet_config: dict) -> ModelFamily:
    """The family of a diffusers folder from its `model_index.json` and UNet config; a clear error if none fits."""
    for family in FAMILIES:
        if family.matches(index, unet_config):
            return family
    supported = "; ".join(family.description for family in FAMILIES)
    unet = unet_config.get("_class_name")
    if any(family.unet_class == unet for family in FAMILIES):
        unet = f"{unet} with {unet_config.get('in_channels')} input channels"
    raise ModelLoadError(f"{model_name}: its UNet is a {unet}; supported are {supported}")
