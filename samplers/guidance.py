"""Classifier-free guidance over core-format conditioning, batched into one UNet call per step."""

from __future__ import annotations

import math

import torch

from ..models.handles import UNET_3D


def conditioning_embeds(conditioning) -> list[torch.Tensor]:
    """The cross-attention embeddings `[1, L, D]` of each entry of a core `CONDITIONING`."""
    return [entry[0] for entry in conditioning]


def repeat_to_common_length(embeds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat token sequences to their least common length (exact: attention over repeated keys is unchanged)."""
    common = math.lcm(*(e.shape[1] for e in embeds))
    return [e.repeat(1, common // e.shape[1], 1) if e.shape[1] != common else e for e in embeds]


class GuidedNoisePredictor:
    """`(x, t) -> noise` for 5-D latents `[B, C, F, h, w]`, with classifier-free guidance.

    Negative and positive entries go through the UNet in one batch `[negatives..., positives...]`
    (the reference's `[negative, positive]` order); the predictions of several entries of one
    side are averaged. With `cfg <= 1` the negative side is skipped, as in the reference.
    A 2-D UNet sees the frames as its batch, frame-major per video.
    """

    def __init__(self, unet: torch.nn.Module, kind: str, positive, negative, cfg: float,
                 dtype: torch.dtype):
        self.unet = unet
        self.kind = kind
        self.cfg = float(cfg)
        self.dtype = dtype
        sides = [conditioning_embeds(positive)]
        if self.uses_negative:
            sides.insert(0, conditioning_embeds(negative))
        self.side_sizes = [len(side) for side in sides]
        self.embeds = torch.cat(repeat_to_common_length([e for side in sides for e in side])).to(dtype)

    @property
    def uses_negative(self) -> bool:
        return self.cfg > 1.0

    @property
    def batch_multiplier(self) -> int:
        """How many copies of the latents one UNet call sees (the guidance groups)."""
        return sum(self.side_sizes)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        copies = self.batch_multiplier
        if self.kind == UNET_3D:
            unet_input = x.repeat(copies, 1, 1, 1, 1)
            per_copy = batch
        else:
            unet_input = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
            unet_input = unet_input.repeat(copies, 1, 1, 1)
            per_copy = batch * frames
        context = self.embeds.repeat_interleave(per_copy, dim=0)
        out = self.unet(unet_input.to(self.dtype), t, encoder_hidden_states=context, return_dict=False)[0]
        out = out.float()
        if self.kind != UNET_3D:
            out = out.reshape(copies * batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)
        chunks = out.split(batch)
        side_means, start = [], 0
        for size in self.side_sizes:
            side = chunks[start:start + size]
            side_means.append(side[0] if size == 1 else torch.stack(side).mean(0))
            start += size
        if not self.uses_negative:
            return side_means[0]
        uncond, cond = side_means
        return uncond + self.cfg * (cond - uncond)
