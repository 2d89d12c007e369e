"""Attention processors and the patches that install them for one sampling call."""

from .cross_frame import CrossFrameAttention, CrossFrameAttentionProcessor, CrossFrameAttn1Patch

__all__ = ["CrossFrameAttention", "CrossFrameAttentionProcessor", "CrossFrameAttn1Patch"]
