"""Classifier-free guidance over the UNet's conditioning entries, batched into one UNet call per step."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import torch

from .loop import frames_view, video_view


@dataclasses.dataclass(frozen=True, eq=False)
class Control:
    """A ControlNet with its control frames `[F or 1, 3, H, W]` (0..1, at the frame size), as diffusers'
    ControlNet pipelines apply it: residuals times `strength`, only in the steps inside `start`..`end`
    (fractions of the schedule). Compared by identity: entries that share one apply it in one call."""

    model: torch.nn.Module
    images: torch.Tensor
    strength: float
    start: float = 0.0
    end: float = 1.0

    def active(self, position: int, total: int) -> bool:
        return not (position / total < self.start or (position + 1) / total > self.end)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One conditioning entry as the UNet takes it: plain tensors with a batch dimension of 1.

    `added` are extra per-sample UNet inputs passed as `added_cond_kwargs` (SDXL's pooled text
    embedding and time ids); `concat` are latents joined to the UNet input on the channel axis,
    video-shaped `[1, C', F, h, w]` (InstructPix2Pix's image latents); `controls` are ControlNets whose
    residuals are added to the UNet's (image UNets only).
    """

    embeds: torch.Tensor
    added: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    concat: torch.Tensor | None = None
    controls: tuple[Control, ...] = ()

    def without_concat(self) -> "Condition":
        """The same entry with blank (zero) concatenated latents: the unconditional image branch."""
        return dataclasses.replace(self, concat=torch.zeros_like(self.concat))


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Which conditioning groups one UNet call batches, and how their predictions combine.

    Classifier-free guidance: groups `[negative, positive]` (the reference's order), `u + cfg (c - u)`,
    the negative skipped with `cfg <= 1`. With `image_cfg` (InstructPix2Pix) three groups
    `[positive, negative, negative without image]`, `u + cfg (text - image) + image_cfg (image - u)`,
    on when `cfg > 1` and `image_cfg >= 1`, as the reference. With `min_cfg` (Stable Video Diffusion)
    the scale ramps linearly over the frames, from `min_cfg` on the first to `cfg` on the last. Several
    entries of one group have their predictions averaged.
    """

    positive: list[Condition]
    negative: list[Condition]
    cfg: float
    image_cfg: float | None = None
    min_cfg: float | None = None

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

    def scale(self, frames: int, device: torch.device) -> float | torch.Tensor:
        """The text guidance scale: one number, or with `min_cfg` one per frame shaped `[1, 1, F, 1, 1]`."""
        if self.min_cfg is None:
            return self.cfg
        return torch.linspace(self.min_cfg, self.cfg, frames).to(device).view(1, 1, frames, 1, 1)

    def combine(self, predictions: list[torch.Tensor]) -> torch.Tensor:
        if not self.guided:
            return predictions[0]
        if self.image_cfg is None:
            uncond, cond = predictions
            return uncond + self.scale(cond.shape[2], cond.device) * (cond - uncond)
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
    With `context_per_frame` a video UNet takes the text embedding once per frame (AnimateDiff's motion UNet).
    """

    def __init__(self, unet: torch.nn.Module, video_unet: bool, guidance: Guidance, dtype: torch.dtype,
                 context_per_frame: bool = False):
        self.unet = unet
        self.video_unet = video_unet
        self.context_per_frame = context_per_frame
        self.guidance = guidance
        self.dtype = dtype
        groups = guidance.groups()
        self.group_sizes = [len(group) for group in groups]
        self.entries = [entry for group in groups for entry in group]
        self.embeds = torch.cat(repeat_to_common_length([e.embeds for e in self.entries])).to(dtype)
        self.added = {key: torch.cat([e.added[key] for e in self.entries]).to(dtype)
                      for key in self.entries[0].added}
        self.controls = list({id(c): c for e in self.entries for c in e.controls}.values())
        self.step: tuple[int, int] | None = None

    def at_step(self, position: int, total: int) -> None:
        """Called by the loop before each model call: where in the schedule it is (for ControlNet start/end)."""
        self.step = (position, total)

    def _control_residuals(self, unet_input: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                           added: dict, batch: int, frames: int) -> dict:
        """The summed ControlNet residuals for an image UNet's input, as UNet keyword arguments."""
        down, mid = None, None
        for control in self.controls:
            if self.step is not None and not control.active(*self.step):
                continue
            carriers = [i for i, entry in enumerate(self.entries) if control in entry.controls]
            rows = torch.arange(unet_input.shape[0]).view(len(self.entries), -1)[carriers].flatten()
            images = control.images.expand(frames, -1, -1, -1).repeat(batch * len(carriers), 1, 1, 1)
            dtype = control.model.dtype
            extra = {"added_cond_kwargs": {k: v[rows].to(dtype) for k, v in added.items()}} if added else {}
            control_down, control_mid = control.model(
                unet_input[rows].to(dtype), t, encoder_hidden_states=context[rows].to(dtype),
                controlnet_cond=images.to(unet_input.device, dtype), conditioning_scale=control.strength,
                return_dict=False, **extra)
            if len(carriers) < len(self.entries):  # the other entries get no residual from this ControlNet
                control_down = [_scatter(r, rows, unet_input.shape[0]) for r in control_down]
                control_mid = _scatter(control_mid, rows, unet_input.shape[0])
            down = control_down if down is None else [a + b for a, b in zip(down, control_down)]
            mid = control_mid if mid is None else mid + control_mid
        if down is None:
            return {}
        return {"down_block_additional_residuals": [r.to(self.dtype) for r in down],
                "mid_block_additional_residual": mid.to(self.dtype)}

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
        context = self.embeds.repeat_interleave(batch * frames if self.context_per_frame else per_copy, dim=0)
        if self.controls:
            kwargs.update(self._control_residuals(unet_input, t, context, kwargs.get("added_cond_kwargs", {}),
                                                  batch, frames))
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


def _scatter(rows_value: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    """A batch of `total` rows, zero except `rows`, which hold `rows_value`."""
    full = rows_value.new_zeros((total, *rows_value.shape[1:]))
    full[rows] = rows_value
    return full
