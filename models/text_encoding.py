"""Prompt -> text encoder outputs, as diffusers' `encode_prompt` tokenizes and runs them."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def run_text_encoder(clip, tokenizer, encoder: torch.nn.Module, text: str, hidden_states: bool = False):
    """The encoder's output for one prompt padded to the tokenizer's limit; tokens past it are cut with a warning."""
    clip.load_for_use()
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
        return encoder(tokens.input_ids.to(clip.device), attention_mask=mask, output_hidden_states=hidden_states)


def encode_text(clip, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(embeds [1, L, D], pooled [1, P])` for one prompt, the way the model's family encodes text."""
    return clip.family.encode_text(clip, text)


def to_conditioning(embeds: torch.Tensor, pooled: torch.Tensor) -> list:
    """Core ComfyUI `CONDITIONING`: `[[embeds, {"pooled_output": pooled}]]`."""
    return [[embeds, {"pooled_output": pooled}]]
