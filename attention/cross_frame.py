"""Text2Video-Zero cross-frame attention: in self-attention every frame attends to the first frame of its group.

The UNet's batch is a run of consecutive groups of `frames_per_group` frames (one group per video and per
guidance branch: `[uncond frames..., cond frames...]`). Frame `i` of a group keeps its own queries but takes
its keys and values from the group's first frame (the anchor), which holds the appearance of the video
steady. Cross-attention to the text is left as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers.models import TransformerTemporalModel
from diffusers.models.attention_processor import Attention

SELF_ATTENTION_SUFFIX = ".attn1.processor"


class CrossFrameAttentionProcessor:
    """A diffusers attention processor for cross-frame attention.

    Equals diffusers' `CrossFrameAttnProcessor2_0(batch_size=groups)` in self-attention and
    `AttnProcessor2_0` in cross-attention, and keeps every branch of `AttnProcessor2_0` (spatial norm,
    group norm, 4-D input, norm_cross, q/k norms, residual connection, output rescale). Keys and values
    are projected for the anchor frames only, and the attention takes all frames of a group as one query
    sequence against its anchor's keys, so the anchor's keys and values are never copied per frame.
    Scores are scaled by `attn.scale` (the default `head_dim ** -0.5` wherever `AttnProcessor2_0` is used).

    A self-attention call with an `attention_mask` (Stable Diffusion pipelines never pass one) takes a
    slower per-frame path: each frame's queries attend to its anchor's keys under that frame's own
    mask, as the reference does.
    """

    def __init__(self, frames_per_group: int):
        if frames_per_group < 1:
            raise ValueError(f"frames_per_group must be at least 1, got {frames_per_group}")
        self.frames_per_group = frames_per_group

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if image_shape is not None:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if encoder_hidden_states is not None:
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
            hidden_states = _attention(attn, hidden_states, encoder_hidden_states, attention_mask)
        elif attention_mask is not None:
            anchors = anchor_of_each_frame(hidden_states, self.frames_per_group)
            hidden_states = _attention(attn, hidden_states, anchors, attention_mask)
        else:
            hidden_states = self._cross_frame_attention(attn, hidden_states)

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if image_shape is not None:
            hidden_states = hidden_states.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        if attn.rescale_output_factor != 1.0:  # dividing by 1 is exact: skip a pass over the output
            hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states

    def _cross_frame_attention(self, attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
        """Self-attention of all frames of a group as one query sequence against the anchor's keys."""
        batch, tokens, _ = hidden_states.shape
        anchors = anchor_frames(hidden_states, self.frames_per_group)
        group_queries = attn.to_q(hidden_states).reshape(anchors.shape[0], self.frames_per_group * tokens, -1)
        query = _split_heads(group_queries, attn.heads)
        key = _split_heads(attn.to_k(anchors), attn.heads)
        value = _split_heads(attn.to_v(anchors), attn.heads)
        query, key = _normalize_query_and_key(attn, query, key)
        attended = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        return _merge_heads(attended).reshape(batch, tokens, -1)


def _group_count(batch: int, frames_per_group: int) -> int:
    if batch % frames_per_group:
        raise ValueError(f"cross-frame attention needs whole groups of {frames_per_group} frames, "
                         f"but the batch has {batch} frames")
    return batch // frames_per_group


def anchor_frames(frames: torch.Tensor, frames_per_group: int) -> torch.Tensor:
    """`[groups * frames_per_group, ...]` -> the first frame of each group, `[groups, ...]` (a view)."""
    groups = _group_count(frames.shape[0], frames_per_group)
    return frames.unflatten(0, (groups, frames_per_group))[:, 0]


def anchor_of_each_frame(frames: torch.Tensor, frames_per_group: int) -> torch.Tensor:
    """Every frame replaced by the first frame of its group: the same shape (an expanded view).

    This is cross-frame attention's whole change: a self-attention whose keys and values are computed
    from these instead of from the frames themselves lets each frame attend to its group's anchor.
    """
    anchors = anchor_frames(frames, frames_per_group)
    return anchors.unsqueeze(1).expand(-1, frames_per_group, *anchors.shape[1:]).flatten(0, 1)


class CrossFrameAttn1Patch:
    """Cross-frame attention as a ComfyUI `attn1_patch` (`ModelPatcher.set_model_attn1_patch`).

    ComfyUI calls it in every transformer block as `patch(n, context, value, extra_options)` before the
    block's self-attention projects keys from `context` and values from `value`; it returns them taken
    from each frame's anchor. The batch is `len(extra_options["cond_or_uncond"])` guidance branches
    (cond, uncond, more for DualCFG or combined conditionings) of the same frames each: every branch is
    one group. The attention itself stays ComfyUI's (its kernel, precision and other patches).
    """

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        branches = len(extra_options.get("cond_or_uncond") or [None])
        if n.shape[0] % branches:
            raise ValueError(f"cross-frame attention: a batch of {n.shape[0]} does not split into {branches} "
                             "guidance branches of equal length")
        frames_per_group = n.shape[0] // branches
        anchored_context = anchor_of_each_frame(context, frames_per_group)
        anchored_value = anchored_context if value is context else anchor_of_each_frame(value, frames_per_group)
        return n, anchored_context, anchored_value


def anchored_self_attention_hook(frames_per_group: int):
    """Cross-frame attention as a forward pre-hook (`register_forward_pre_hook(..., with_kwargs=True)`) on a
    ComfyUI self-attention called as `attn(x, context=None, value=None, ...)`, for modules no patch reaches
    (a core ControlNet's): keys and values come from each frame's anchor, groups of `frames_per_group`."""

    def hook(_module, args, kwargs):
        if kwargs.get("context") is not None:  # keys from another source: not a self-attention
            return None
        anchored = {"context": anchor_of_each_frame(args[0], frames_per_group)}
        if kwargs.get("value") is not None:
            anchored["value"] = anchor_of_each_frame(kwargs["value"], frames_per_group)
        return args, {**kwargs, **anchored}

    return hook


def _attention(
    attn: Attention, query_source: torch.Tensor, key_value_source: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Row-by-row attention of `query_source` to `key_value_source`, as diffusers' `AttnProcessor2_0`."""
    batch, key_length, _ = key_value_source.shape
    query = _split_heads(attn.to_q(query_source), attn.heads)
    key = _split_heads(attn.to_k(key_value_source), attn.heads)
    value = _split_heads(attn.to_v(key_value_source), attn.heads)
    query, key = _normalize_query_and_key(attn, query, key)
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=attn.scale)
    return _merge_heads(attended)


def _split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """`[N, tokens, heads * head_dim]` -> `[N, heads, tokens, head_dim]`."""
    return tensor.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(tensor: torch.Tensor) -> torch.Tensor:
    """`[N, heads, tokens, head_dim]` -> `[N, tokens, heads * head_dim]`."""
    return tensor.transpose(1, 2).flatten(2)


def _normalize_query_and_key(attn: Attention, query: torch.Tensor, key: torch.Tensor):
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key


def spatial_self_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Processor names of the UNet's self-attention layers over the tokens of a frame.

    These are the `attn1` layers, except those inside temporal transformers (3-D UNets), which attend
    across frames already.
    """
    temporal_prefixes = tuple(
        f"{name}." for name, module in unet.named_modules() if isinstance(module, TransformerTemporalModel)
    )
    return [
        name
        for name in unet.attn_processors
        if name.endswith(SELF_ATTENTION_SUFFIX) and not name.startswith(temporal_prefixes)
    ]


@dataclasses.dataclass(frozen=True)
class CrossFrameAttention:
    """`ModelPatch`: cross-frame attention in the UNet's spatial self-attention layers for one sampling call.

    Stateless: one instance can serve any number of model handles, and installations may nest (each
    restores what it found). Processors are swapped on the shared UNet module, so two threads must not
    sample with the same UNet at once. ControlNets running beside the UNet are patched too (the seed's
    ControlNet recipe sets the processor on both).
    """

    patches_controlnets = True

    @contextlib.contextmanager
    def installed(self, unet: torch.nn.Module, frames_per_group: int) -> Iterator[None]:
        """Install on `unet`; on exit (also on errors and interrupts) restore the very processors found."""
        processor = CrossFrameAttentionProcessor(frames_per_group)
        layers = set(spatial_self_attention_layers(unet))
        if not layers:
            raise ValueError(f"{type(unet).__name__} has no self-attention layers for cross-frame attention")
        originals = unet.attn_processors
        try:
            unet.set_attn_processor(
                {name: processor if name in layers else original for name, original in originals.items()}
            )
            yield
        finally:
            unet.set_attn_processor(originals)
