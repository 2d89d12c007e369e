"""Prompt -> CLIP embeddings, as diffusers' `encode_prompt` does for these models."""

from __future__ import annotations

import logging

import torch

from .handles import ClipHandle

log = logging.getLogger(__name__)


def encode_text(clip: ClipHandle, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(embeds [1, L, D], pooled [1, D])` for one prompt; tokens past the limit are cut with a warning."""
    clip.load_for_use()
    tokenizer, encoder = clip.tokenizer, clip.text_encoder
    limit = tokenizer.model_max_length
    tokens = tokenizer(text, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
    full = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > limit:
        cut = tokenizer.batch_decode(full[:, limit - 1:-1])[0]
        log.warning("T2VTextEncode: the prompt is longer than %d tokens; this part was cut: %r", limit, cut)
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(clip.device)
    with torch.no_grad():
        output = encoder(tokens.input_ids.to(clip.device), attention_mask=mask)
    return output[0], output[1]


def to_conditioning(embeds: torch.Tensor, pooled: torch.Tensor) -> list:
    """Core ComfyUI `CONDITIONING`: `[[embeds, {"pooled_output": pooled}]]`."""
    return [[embeds, {"pooled_output": pooled}]]
