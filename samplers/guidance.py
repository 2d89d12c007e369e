"""Classifier-free guidance over the UNet's conditioning entries, batched into one UNet call per step."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import torch

from .loop import frames_view, video_view


@dataclasses.dataclass(frozen=True)
class Condition:
    """One conditioning entry as the UNet takes it: plain tensors with a batch dimension of 1.

    `added` are extra per-sample UNet inputs passed as `added_cond_kwargs` (SDXL's pooled text
    embedding and time ids); `concat` are latents joined to the UNet input on the channel axis,
    video-shaped `[1, C', F, h, w]` (InstructPix2Pix's image latents).
    """

    embeds: torch.Tensor
    added: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    concat: torch.Tensor | None = None

    def without_concat(self) -> "Condition":
        """The same entry with blank (zero) concatenated latents: the unconditional image branch."""
        return dataclasses.replace(self, concat=torch.zeros_like(self.concat))


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Which conditioning groups one UNet call batches, and how their predictions combine.

    Classifier-free guidance: groups `[negative, positive]` (the reference's order), `u + cfg (c - u)`,
    the negative skipped with `cfg <= 1`. With `image_cfg` (InstructPix2Pix) three groups
    `[positive, negative, negative without image]`, `u + cfg (text - image) + image_cfg (image - u)`,
    on when `cfg > 1` and `image_cfg >= 1`, as the reference. Several entries of one group have
    their predictions averaged.
    """

    positive: list[Condition]
    negative: list[Condition]
    cfg: float
    image_cfg: float | None = None

    @property
    def guided(self) -> bool:
        if self.image_cfg is None:
            return self.cfg > 1.0
        return self.cfg > 1.0 and self.image_cfg >= 1.0

    def groups(self) -> list[list[Condition]]:
        if not self.guided:
            return [self.positive]
        if self.image_cfg is None:
            return [self.negative, self.positive]
        return [self.positive, self.negative, [entry.without_concat() for entry in self.negative]]

    def combine(self, predictions: list[torch.Tensor]) -> torch.Tensor:
        if not self.guided:
            return predictions[0]
        if self.image_cfg is None:
            uncond, cond = predictions
            return uncond + self.cfg * (cond - uncond)
        text, image, uncond = predictions
        return uncond + self.cfg * (text - image) + self.image_cfg * (image - uncond)


def repeat_to_common_length(embeds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat token sequences to their least common length (exact: attention over repeated keys is unchanged)."""
    common = math.lcm(*(e.shape[1] for e in embeds))
    return [e.repeat(1, common // e.shape[1], 1) if e.shape[1] != common else e for e in embeds]


class GuidedNoisePredictor:
    """`(x, t) -> noise` for 5-D latents `[B, C, F, h, w]`, with guidance over conditioning groups.

    Every entry of every group is one copy of the latents in a single UNet call. A video UNet takes
    the 5-D latents; an image UNet (`video_unet=False`) sees the frames as its batch, frame-major per video.
    """

    def __init__(self, unet: torch.nn.Module, video_unet: bool, guidance: Guidance, dtype: torch.dtype):
        self.unet = unet
        self.video_unet = video_unet
        self.guidance = guidance
        self.dtype = dtype
        groups = guidance.groups()
        self.group_sizes = [len(group) for group in groups]
        self.entries = [entry for group in groups for entry in group]
        self.embeds = torch.cat(repeat_to_common_length([e.embeds for e in self.entries])).to(dtype)
        self.added = {key: torch.cat([e.added[key] for e in self.entries]).to(dtype)
                      for key in self.entries[0].added}

    def _unet_input(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        copies = [x if e.concat is None else torch.cat([x, e.concat.to(x).expand(batch, -1, -1, -1, -1)], dim=1)
                  for e in self.entries]
        return torch.cat(copies)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[0], x.shape[2]
        unet_input = self._unet_input(x)
        per_copy = batch if self.video_unet else batch * frames
        if not self.video_unet:
            unet_input = frames_view(unet_input)
        kwargs = {}
        if self.added:
            kwargs["added_cond_kwargs"] = {key: value.repeat_interleave(per_copy, dim=0)
                                           for key, value in self.added.items()}
        context = self.embeds.repeat_interleave(per_copy, dim=0)
        out = self.unet(unet_input.to(self.dtype), t, encoder_hidden_states=context, return_dict=False,
                        **kwargs)[0].float()
        if not self.video_unet:
            out = video_view(out, len(self.entries) * batch)
        chunks = out.split(batch)
        predictions, start = [], 0
        for size in self.group_sizes:
            group = chunks[start:start + size]
            predictions.append(group[0] if size == 1 else torch.stack(group).mean(0))
            start += size
        return self.guidance.combine(predictions)
