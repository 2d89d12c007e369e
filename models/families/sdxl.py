"""Stable Diffusion XL: two CLIP text encoders, pooled text embedding and size time ids as extra UNet inputs."""

from __future__ import annotations

import torch

from ...samplers.guidance import Condition
from ..text_encoding import run_text_encoder
from .base import ModelFamily, TextEncoderSlot


class StableDiffusionXL(ModelFamily):
    """As diffusers' SDXL pipelines: prompt embeds are both encoders' penultimate hidden states side by side,
    the pooled embedding is the second encoder's projection, and `time_ids = (h, w, crop_top, crop_left,
    target_h, target_w)` in pixels (the latent's size unless the conditioning names others, as core
    `CLIPTextEncodeSDXL` does)."""

    name = "sdxl"
    description = "Stable Diffusion XL"
    text_encoders = (TextEncoderSlot("tokenizer", "text_encoder"),
                     TextEncoderSlot("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection"))

    def matches(self, index: dict, unet_config: dict) -> bool:
        return super().matches(index, unet_config) and unet_config.get("addition_embed_type") == "text_time"

    def encode_text(self, clip, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tokenizer, encoder in clip.encoders:
            output = run_text_encoder(clip, tokenizer, encoder, text, hidden_states=True)
            hidden.append(output.hidden_states[-2])
            if output[0].ndim == 2:  # a projection model: its first output is the pooled embedding
                pooled = output[0]
        return torch.cat(hidden, dim=-1), pooled

    def conditioning_problem(self, meta: dict) -> str | None:
        if meta.get("pooled_output") is None:
            return "SDXL conditioning needs a pooled_output; encode the text with T2VTextEncode on the SDXL T2V_CLIP"
        return None

    def condition(self, embeds: torch.Tensor, meta: dict, latent_shape: tuple, spatial_scale: int) -> Condition:
        pooled = meta["pooled_output"]
        height, width = latent_shape[-2] * spatial_scale, latent_shape[-1] * spatial_scale
        time_ids = [meta.get("height", height), meta.get("width", width), meta.get("crop_h", 0),
                    meta.get("crop_w", 0), meta.get("target_height", height), meta.get("target_width", width)]
        added = {"text_embeds": pooled.reshape(1, -1).to(embeds.device),
                 "time_ids": torch.tensor([time_ids], dtype=torch.float32, device=embeds.device)}
        return Condition(embeds, added)


SDXL = StableDiffusionXL()
