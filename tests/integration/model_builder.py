"""A diffusers text-to-video folder the pack has never seen, big enough that its memory shows in the server's RSS."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

UNSEEN_MODEL = "test-models/unseen-t2v"
"""Its `model_name` in `models/diffusers` (nested on purpose)."""
UNET_CHANNELS = (192, 384)
"""About 61 M parameters: 233 MiB of float32 UNet weights, well above the server's RSS noise."""


def build_test_model(folder: Path) -> Path:
    """Write a text-to-video model into `folder`: the tiny built-in's CLIP and VAE with a wider 3D UNet."""
    from diffusers import UNet3DConditionModel

    from comfyui_text2video.models.builtin import TEXT_WIDTH, ensure_builtin

    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(ensure_builtin("tiny-text2video", Path(scratch)), folder)
    shutil.rmtree(folder / "unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        unet = UNet3DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=UNET_CHANNELS,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=32)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def unet_weight_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in (folder / "unet").glob("*.safetensors"))
