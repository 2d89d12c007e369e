"""Prompt -> text encoder outputs, as diffusers' `encode_prompt` tokenizes and runs them."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

PROMPT_CHARS_PER_TOKEN = 8
"""Characters per token to try first when cutting a long prompt (CLIP averages about four)."""
MAX_PROMPT_CHARACTERS = 100_000
"""Read no further than this into a prompt, whatever its tokens (megabytes of spaces would take minutes)."""
CUT_EXCERPT = 200
"""Characters of the cut text shown in the warning."""


def run_text_encoder(clip, tokenizer, encoder: torch.nn.Module, text: str, hidden_states: bool = False):
    """The encoder's output for one prompt padded to the tokenizer's limit; tokens past it are cut with a warning."""
    clip.load_for_use()
    limit = tokenizer.model_max_length
    text = within_limit(tokenizer, text, limit)
    tokens = tokenizer(text, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(clip.device)
    with torch.no_grad():
        return encoder(tokens.input_ids.to(clip.device), attention_mask=mask, output_hidden_states=hidden_states)


def encode_text(clip, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(embeds [1, L, D], pooled [1, P])` for one prompt, the way the model's family encodes text."""
    return clip.family.encode_text(clip, text)


def within_limit(tokenizer, text: str, limit: int) -> str:
    """`text`, or if it has more than `limit` tokens, a prefix that still has more, with a warning showing the cut.

    Tokenizing a prompt of megabytes takes minutes. A prefix that ends before a space tokenizes to the first
    tokens of the whole text (words are tokenized one by one), so a prefix grown until it passes the limit
    gives the same tokens at a cost bounded by the limit.
    """
    size = PROMPT_CHARS_PER_TOKEN * limit
    while True:
        size = min(size, MAX_PROMPT_CHARACTERS)
        whole = size >= len(text)
        prefix = text if whole else text[:_word_end(text, size)]
        ids = tokenizer(prefix, verbose=False).input_ids
        if len(ids) > limit:
            cut = tokenizer.decode(ids[limit - 1:-1])
            if len(cut) > CUT_EXCERPT:
                cut = cut[:CUT_EXCERPT] + "..."
            log.warning("T2VTextEncode: the prompt is longer than %d tokens; this part was cut: %r (of %d characters "
                        "in all)", limit, cut, len(text))
            return prefix
        if whole:
            return text
        if size == MAX_PROMPT_CHARACTERS:  # that many characters and still few tokens: spaces or control characters
            log.warning("T2VTextEncode: only the first %d of the prompt's %d characters are read",
                        len(prefix), len(text))
            return prefix
        size *= 4


def _word_end(text: str, size: int) -> int:
    """Where to cut `text` near `size`: at the last space in its second half, else at `size` (one long word)."""
    for index in range(size, size // 2, -1):
        if text[index].isspace():
            return index
    return size


def to_conditioning(embeds: torch.Tensor, pooled: torch.Tensor) -> list:
    """Core ComfyUI `CONDITIONING`: `[[embeds, {"pooled_output": pooled}]]`."""
    return [[embeds, {"pooled_output": pooled}]]
